"""Peak memory of `ulsad predict --save-maps` on one large image (docs/cli.md, "Large images").

    python -m benchmarks.large_image_memory --megapixels 144 --out benchmarks/reports/large_image_memory.json

Writes a smooth square PNG of about `--megapixels` (in this process), then runs the CLI on it in
a child process and reports the child's peak resident memory (ru_maxrss) and time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[144.0])
    parser.add_argument("--checkpoint", default="bottle")
    parser.add_argument("--out", help="JSON report path")
    args = parser.parse_args(argv)
    from PIL import Image

    rows = []
    for megapixels in args.megapixels:
        side = int((megapixels * 1e6) ** 0.5)
        with tempfile.TemporaryDirectory() as tmp:
            image = Path(tmp) / f"large_{side}.png"
            ramp = np.linspace(0, 255, side, dtype=np.float32)
            rgb = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 128.0), -1)
            Image.fromarray(rgb.astype(np.uint8)).save(image, compress_level=1)
            del rgb, ramp
            command = [sys.executable, "-m", "ulsad.cli", "predict", "--checkpoint",
                       args.checkpoint, "--out", str(Path(tmp) / "out"), "--save-maps",
                       "--batch-size", "1", str(image)]  # fmt: skip
            started = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            done = subprocess.run(command, capture_output=True, text=True)
            peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            row = {
                "megapixels": side * side / 1e6,
                "side": side,
                "returncode": done.returncode,
                "stderr_tail": done.stderr[-300:],
                "peak_rss_mb": peak_kb / 2**10 if peak_kb > before else None,
                "seconds": time.perf_counter() - started,
            }
            rows.append(row)
            print(f"{row['megapixels']:.0f} Mpx: rc {done.returncode}, peak RSS "
                  f"{row['peak_rss_mb'] or float('nan'):.0f} MiB, {row['seconds']:.0f} s")  # fmt: skip
    write_json(args.out, {"checkpoint": args.checkpoint, "rows": rows,
                          "machine": {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()}})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
