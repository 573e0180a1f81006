"""Training speed on idle and on shared cores, with and without ulsad's OpenMP default.

    python -m benchmarks.shared_cpu --out benchmarks/reports/shared_cpu.json

`import ulsad` sets OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep) unless the user set it.
This measures what that default buys. Each run is a fresh process that trains `lite` for a fixed
number of optimiser steps on a synthetic 50-image category, timed from the first to the last
epoch (`ULSAD.fit`'s callback), under these settings (`--settings` picks some):

- `ulsad default`: plain `import ulsad` (PASSIVE);
- `before`: torch imported before ulsad with no setting, i.e. OpenMP's own default, which is what
  every run got before this default existed (and what a user importing torch first still gets);
- `PASSIVE`: OMP_WAIT_POLICY=PASSIVE, idle threads sleep at once;
- `ACTIVE`: OMP_WAIT_POLICY=ACTIVE, threads always spin;
- `GOMP_SPINCOUNT=10000`: GNU OpenMP (PyTorch's Linux wheels) spins 10,000 times, 30x fewer than
  its default, before sleeping.

and two machine states: idle, and shared with one other job running 2-thread matrix products for
the whole measurement. Each (setting, state) pair is run in rounds, interleaved, and the median
is reported with its ratio to `ulsad default` in the same state.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import median, write_json

CHILD = r"""
import os, sys, time, json
if sys.argv[1] == "before":
    import torch  # OpenMP starts with its own default policy
import ulsad
from ulsad import ULSAD
times = []
model = ULSAD.from_preset("lite", epochs=None, steps=int(sys.argv[3]), synthetic_defects=0,
                          local_weight=0.5, validation_points=1)
model.fit(sys.argv[2], category="bench", progress=False,
          callback=lambda *a: times.append(time.perf_counter()))
print(json.dumps({"seconds": times[-1] - times[0], "epochs": len(times)}))
"""

COMPETITOR = r"""
import time, torch
torch.set_num_threads(2)
a = torch.randn(1024, 1024)
end = time.time() + float(__import__("sys").argv[1])
while time.time() < end:
    a @ a
"""

SETTINGS = {
    "ulsad default": {},
    "before": {},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
}
OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def run_once(setting: str, root: Path, steps: int, shared: bool) -> float:
    plain = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES}
    env = {**plain, **SETTINGS[setting]}
    competitor = None
    if shared:  # the other job is not ours: it runs with OpenMP's own defaults, whatever we set
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR, "600"], env=plain)
        time.sleep(2)
    try:
        mode = "plain" if setting == "ulsad default" else "before"  # others: no ulsad default
        out = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(root), str(steps)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"] / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"comma-separated, of: {', '.join(SETTINGS)}")  # fmt: skip
    parser.add_argument("--out", default="benchmarks/reports/shared_cpu.json")
    args = parser.parse_args()
    settings = args.settings.split(",")
    if set(settings) - set(SETTINGS) or "ulsad default" not in settings:
        parser.error(f"--settings: 'ulsad default' and others of {list(SETTINGS)}")
    from ulsad.data import make_synthetic_dataset

    results: dict[str, dict[str, list[float]]] = {}
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_dataset(tmp, "bench", n_train=50, n_test_good=1, n_test_defect=1, size=256)
        for _ in range(args.rounds):
            for shared in (False, True):
                state = "shared" if shared else "idle"
                for setting in settings:
                    seconds = run_once(setting, Path(tmp), args.steps, shared)
                    results.setdefault(state, {}).setdefault(setting, []).append(seconds)
                    print(f"{state:>6} {setting:>13}: {seconds:.3f} s/step", flush=True)
    rows = []
    for state, by_setting in results.items():
        base = median(by_setting["ulsad default"])
        for setting, values in by_setting.items():
            rows.append({"cores": state, "setting": setting, "s_per_step": median(values),
                         "ratio_to_default": median(values) / base, "runs": values})  # fmt: skip
    print(f"\n{'cores':>6} {'setting':>13} {'s/step':>8} {'x default':>9}")
    for row in rows:
        print(f"{row['cores']:>6} {row['setting']:>13} {row['s_per_step']:8.3f} "
              f"{row['ratio_to_default']:9.2f}")  # fmt: skip
    report = {"machine": {"cpus": os.cpu_count(), "load_average_start": load_start},
              "steps": args.steps, "rounds": args.rounds, "rows": rows}  # fmt: skip
    write_json(Path(args.out), report)


if __name__ == "__main__":
    main()
