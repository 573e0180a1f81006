"""How fast the command line answers: `ulsad --help`, `--version`, and a mistyped checkpoint.

    python -m benchmarks.cli_help --runs 7 --out benchmarks/reports/cli_help.json

Each command runs `--runs` times as a fresh process (`python -m ulsad.cli ...`, from the
repository root, this checkout first on the path), interleaved with two baselines measured in the
same run on the same machine: `python -c pass` (the interpreter's own start) and
`python -c "import torch"` (what `--help` cost when building the parser imported torch: 4.2 s on
an idle machine). Prints and writes the median seconds of each and its ratio to both baselines.
The typo row, `predict --checkpoint runs/missing`, runs with HF_HUB_OFFLINE=1 (no network
involved: the answer must come before torch loads). Not a test: numbers depend on the machine and
its load, which is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
PYTHON = [sys.executable]
COMMANDS = {
    "python -c pass": [*PYTHON, "-c", "pass"],
    "python -c 'import torch'": [*PYTHON, "-c", "import torch"],
    "ulsad --help": [*PYTHON, "-m", "ulsad.cli", "--help"],
    "ulsad --version": [*PYTHON, "-m", "ulsad.cli", "--version"],
    "ulsad predict --help": [*PYTHON, "-m", "ulsad.cli", "predict", "--help"],
    "ulsad predict --checkpoint runs/missing": [*PYTHON, "-m", "ulsad.cli", "predict",
                                                "--checkpoint", "runs/missing", "--out", "OUT",
                                                "x.png"],
}  # fmt: skip
EXPECTED_CODE = {"ulsad predict --checkpoint runs/missing": 2}


def run_once(command: list[str], env: dict[str, str], expected: int) -> float:
    """Seconds for one fresh process running `command` to exit (with the expected code)."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != expected:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each command (default: 7)")
    parser.add_argument("--out", type=Path, help="JSON report to write")
    args = parser.parse_args()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    }
    load_start = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):  # interleaved: a change of load hits every command alike
            for name, command in COMMANDS.items():
                command = [str(Path(tmp) / "out") if part == "OUT" else part for part in command]
                times[name].append(run_once(command, env, EXPECTED_CODE.get(name, 0)))
    medians = {name: statistics.median(values) for name, values in times.items()}
    base, torch_import = medians["python -c pass"], medians["python -c 'import torch'"]
    rows = {
        name: {
            "median_s": round(medians[name], 4),
            "runs_s": [round(t, 4) for t in times[name]],
            "ratio_to_python": round(medians[name] / base, 2),
            "ratio_to_import_torch": round(medians[name] / torch_import, 3),
        }
        for name in COMMANDS
    }
    print(f"{'command':42} {'median s':>9} {'x python':>9} {'x torch':>8}")
    for name, row in rows.items():
        print(
            f"{name:42} {row['median_s']:9.3f} {row['ratio_to_python']:9.2f} "
            f"{row['ratio_to_import_torch']:8.3f}"
        )
    report = {
        "runs": args.runs,
        "commands": rows,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
