"""End-to-end `ulsad train` time against an earlier commit's, in the same run.

    python -m benchmarks.fit_time --baseline 6ab70a1 --images 50 --repeats 2 \\
        --out benchmarks/reports/fit_time.json

`benchmarks.train` times the training loop alone; a change to what training does around it
(the inputs it builds, the synthetic defects and the selection) shows only here. The baseline
commit is checked out into a temporary git worktree; both trees train the same folders of good
images with `ulsad train` and no flags (each in a fresh process, `PYTHONPATH` pointing at its
tree), the two alternating so that other load on the machine affects both alike. Reported per
folder: the median wall-clock seconds of each tree and their ratio (this tree / baseline: > 1
means slower now), with the chosen epochs and fusion weight from each `training.json`.

Folders, `--images` good images each, written by `ulsad.data` (no real data needed):
- `square`: `make_synthetic_dataset` (textured squares, 256 px);
- `elongated`: `make_layout_dataset(aspect=2, textured=True)` (256 x 512, tiled by `lite`).
`--folder NAME:PATH` adds folders of your own (the first `--images` files are linked).
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
from typing import Any

import torch

from benchmarks.common import REPOSITORY, machine, median, table, write_json
from ulsad.data import make_layout_dataset, make_synthetic_dataset
from ulsad.images import find_images

COLUMNS = [("folder", "folder", "s"), ("baseline_s", "baseline s", ".1f"),
           ("current_s", "this tree s", ".1f"), ("ratio", "this / baseline", ".2f"),
           ("baseline_choice", "baseline (epochs, weight)", "s"),
           ("current_choice", "this tree (epochs, weight)", "s")]  # fmt: skip


def folders(work: Path, images: int, extra: list[str]) -> dict[str, Path]:
    """Name -> a folder of `images` good images."""
    square = make_synthetic_dataset(
        work / "square", n_train=images, n_test_good=1, n_test_defect=2, size=256
    )
    layout = make_layout_dataset(
        work / "elongated", n_train=images, n_test_good=1, n_test_defect=2, aspect=2, textured=True
    )
    result = {"square": square / "train" / "good", "elongated": layout / "train" / "good"}
    for spec in extra:
        name, path = spec.split(":", 1)
        target = work / "extra" / name
        target.mkdir(parents=True)
        for item in sorted(find_images(path), key=str)[:images]:
            source = Path(getattr(item, "path", item))
            (target / source.name).symlink_to(source.resolve())
        result[name] = target
    return result


def fit(tree: Path, data: Path, out: Path) -> tuple[float, str]:
    """Seconds of one `ulsad train --data data --out out` run from `tree`, and its choice."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "ulsad.cli", "train", "--data", str(data), "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=tree, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    summary = json.loads((out / "training.json").read_text())
    weight = json.loads((out / "config.json").read_text()).get("local_weight")
    return seconds, f"{summary.get('epochs')}, {weight}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git commit to compare with")
    parser.add_argument("--images", type=int, default=50, help="good images per folder")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each tree per folder")
    parser.add_argument("--folder", action="append", default=[], metavar="NAME:PATH")
    parser.add_argument("--out", help="JSON report")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"benchmark": "fit_time", "machine": machine(torch.device("cpu")),
                              "settings": vars(args), "folders": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        baseline = work / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline],
                       cwd=REPOSITORY, check=True, capture_output=True)  # fmt: skip
        try:
            for name, data in folders(work, args.images, args.folder).items():
                times: dict[str, list[float]] = {"baseline": [], "current": []}
                choices: dict[str, str] = {}
                for repeat in range(args.repeats):
                    for label, tree in (("baseline", baseline), ("current", REPOSITORY)):
                        seconds, choices[label] = fit(tree, data, work / f"{name}-{label}-{repeat}")
                        times[label].append(seconds)
                        print(f"[{name}] {label} run {repeat + 1}: {seconds:.1f} s", flush=True)
                row = {"folder": name, "baseline_s": median(times["baseline"]),
                       "current_s": median(times["current"]), "times": times,
                       "baseline_choice": choices["baseline"],
                       "current_choice": choices["current"]}  # fmt: skip
                row["ratio"] = row["current_s"] / row["baseline_s"]
                report["folders"].append(row)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)],
                           cwd=REPOSITORY, check=False, capture_output=True)  # fmt: skip
    print(table(report["folders"], COLUMNS))
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
