"""Time and peak memory of long, thin images (1 x N pixels) in the CLI and the app's handler.

    python -m benchmarks.thin_images --out benchmarks/reports/thin_images.json

Issue 35: an 89-byte 1 x 1024 PNG was cut into 1,024 tiles (71.5 s, +5.2 GB in the app). Each
image is scored:
- by `ulsad predict --checkpoint bottle --out O IMAGE` in a child process: its peak RSS
  (wait4's ru_maxrss) against the same command on a 64 x 64 image, and its wall time against
  that command's (the difference is the image's own cost: start-up and loading excluded);
- by the app's `/inspect` handler in this process (`ulsad.app.handlers.inspect`, the embedded
  checkpoint warm): the peak RSS delta over the call (Linux clear_refs 5 resets the peak) and
  its time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPOSITORY, status_mb, write_json


def run_cli(image: Path, out: Path) -> dict[str, Any]:
    """`ulsad predict` on `image` in a child: return code, wall seconds, peak RSS (MB)."""
    command = [sys.executable, "-m", "ulsad.cli", "predict", "--checkpoint", "bottle",
               "--out", str(out), str(image)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "stderr_tail": stderr[-200:],
    }


def reset_peak() -> float:
    Path("/proc/self/clear_refs").write_text("5")
    return status_mb("VmRSS") or 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 1024, 4096])
    parser.add_argument("--out", help="JSON report path")
    args = parser.parse_args(argv)
    from PIL import Image

    from ulsad.app import handlers
    from ulsad.app.sessions import Session
    from ulsad.images import MAX_TILES

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.png"
        Image.new("RGB", (64, 64), (120, 80, 40)).save(base)
        baseline = run_cli(base, Path(tmp) / "o_base")
        session = Session(choices=[("bottle", "bottle")])
        handlers.inspect(str(base), "bottle", None, "", session)  # load and warm the model
        for length in args.lengths:
            image = Path(tmp) / f"thin_{length}.png"
            Image.new("RGB", (1, length), (120, 80, 40)).save(image)
            cli = run_cli(image, Path(tmp) / f"o_{length}")
            before = reset_peak()
            started = time.perf_counter()
            try:
                score = handlers.inspect(str(image), "bottle", None, "", session)[0]
                app_error = None
            except Exception as error:  # a refusal is a result too
                score, app_error = None, str(error)
            app_seconds = time.perf_counter() - started
            app_peak = (status_mb("VmHWM") or 0.0) - before
            rows.append({
                "image": f"1x{length} PNG ({image.stat().st_size} bytes)",
                "cli_returncode": cli["returncode"],
                "cli_seconds": cli["seconds"],
                "cli_seconds_over_64x64": cli["seconds"] - baseline["seconds"],
                "cli_peak_rss_mb": cli["peak_rss_mb"],
                "cli_peak_rss_over_64x64_mb": cli["peak_rss_mb"] - baseline["peak_rss_mb"],
                "app_seconds": app_seconds,
                "app_peak_rss_delta_mb": app_peak,
                "app_score": score,
                "app_error": app_error,
            })  # fmt: skip
            print(
                f"1x{length}: CLI {cli['seconds']:.2f} s (64x64: {baseline['seconds']:.2f} s), "
                f"peak {cli['peak_rss_mb']:.0f} MB (64x64: {baseline['peak_rss_mb']:.0f}); "
                f"app handler {app_seconds:.2f} s, peak +{app_peak:.0f} MB"
            )
        session.cleanup()
    write_json(args.out, {"max_tiles": MAX_TILES, "cli_64x64": baseline, "rows": rows,
                          "cpus": os.cpu_count(),
                          "load_average": os.getloadavg()})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
