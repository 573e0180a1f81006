"""Peak memory of the app's worst allowed uploads (docs/app.md, "Demo app", limits).

    python -m benchmarks.upload_memory --out benchmarks/reports/upload_memory.json

Each case runs in a child process: load the checkpoint, warm up on a small image, then read the
upload the way the app does (`load_upload`: refused above the pixel limit before decoding, JPEGs
decoded reduced) and inspect it (`inspect_image`: score, overlay, both branch maps, plotly
figure), `--concurrent` at once (the app runs two inspections at a time). Reported: the child's
peak resident memory (VmHWM) before and after, and the difference. The upload files are made in
this (parent) process, so their creation does not count.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import REPOSITORY, peak_rss_mb, python_module, table, write_json


def make_uploads(folder: Path, max_pixels: int) -> dict[str, Path]:
    """The largest uploads the app accepts, by kind (smooth content: small files, same decode)."""
    from PIL import Image

    side = int(max_pixels**0.5)  # a square PNG at the decoded-pixel limit
    gradient = np.linspace(0, 255, side, dtype=np.float32)
    rgb = np.stack(np.broadcast_arrays(gradient[None, :], gradient[:, None], 128.0), -1)
    png = folder / f"png_{side}x{side}.png"
    Image.fromarray(rgb.astype(np.uint8)).save(png, compress_level=1)
    del rgb
    jpeg_side = 16_000  # 256 Mpx (ulsad's file limit), decoded at 1/2: 64 Mpx
    jpeg = folder / f"jpeg_{jpeg_side}x{jpeg_side}.jpg"
    Image.new("RGB", (jpeg_side, jpeg_side), (90, 120, 150)).save(jpeg, quality=90)
    refused = folder / "png_16000x16000_refused.png"
    Image.new("RGB", (16_000, 16_000), (90, 120, 150)).save(refused, compress_level=9)
    deep = folder / f"png16_{side}x{side}.png"  # 16-bit greyscale (issue 35: float64 copies)
    ramp = np.linspace(0, 65535, side, dtype=np.float32)[None, :] + np.zeros((side, 1), np.float32)
    Image.fromarray(ramp.astype(np.uint16)).save(deep, compress_level=1)
    del ramp
    return {"png_at_pixel_limit": png, "png16_at_pixel_limit": deep, "jpeg_256mpx": jpeg,
            "png_256mpx_refused": refused}  # fmt: skip


def probe(checkpoint: str, path: str, concurrent: int) -> None:
    """Child: peak RSS (MiB) before and after `concurrent` inspections of `path`, as JSON."""
    import torch

    from ulsad import ULSAD, ULSADError
    from ulsad.app import checkpoints, inputs, scoring

    torch.set_num_threads(1)
    model = ULSAD.from_pretrained(checkpoint)
    threshold = checkpoints.model_threshold(model)
    small = Path(tempfile.mkdtemp()) / "small.png"
    from PIL import Image

    Image.new("RGB", (256, 256), (100, 100, 100)).save(small)
    scoring.inspect_image(model, inputs.load_upload(small)[0], threshold)  # warm-up
    before = peak_rss_mb()
    outcomes: list[str] = []

    def one() -> None:
        try:
            image, _ = inputs.load_upload(path, Path(path).name)
            scoring.inspect_image(model, image, threshold)
            outcomes.append("inspected")
        except ULSADError as error:
            outcomes.append(f"refused: {error}")

    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(concurrent)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = {
        "peak_rss_before_mb": before,
        "peak_rss_after_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - started,
        "outcomes": sorted(set(outcomes)),
    }
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="bottle", help="embedded name or folder")
    parser.add_argument("--concurrent", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--cases", nargs="+", help="only these uploads (default: all)")
    parser.add_argument("--out", help="JSON report path")
    parser.add_argument(
        "--probe", nargs=3, metavar=("CHECKPOINT", "PATH", "N"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.probe:
        probe(args.probe[0], args.probe[1], int(args.probe[2]))
        return 0
    from ulsad.app import inputs

    # the probes run from the repository root: a checkpoint folder is passed as an absolute path
    local = Path(args.checkpoint)
    checkpoint = str(local.resolve()) if local.exists() else args.checkpoint
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        uploads = make_uploads(Path(tmp), inputs.MAX_UPLOAD_PIXELS)
        for case, path in uploads.items():
            if args.cases and case not in args.cases:
                continue
            for n in args.concurrent:
                command = [*python_module(__spec__.name), "--probe", checkpoint, str(path), str(n)]
                out = subprocess.run(command, capture_output=True, text=True, check=True,
                                     cwd=REPOSITORY).stdout  # fmt: skip
                result = json.loads(out.strip().splitlines()[-1])
                result |= {
                    "case": case,
                    "concurrent": n,
                    "file_mb": path.stat().st_size / 2**20,
                    "extra_mb": result["peak_rss_after_mb"] - result["peak_rss_before_mb"],
                }
                rows.append(result)
                print(case, n, f"{result['extra_mb']:.0f} MiB extra", result["outcomes"])
    print(table(rows, [("case", "upload", "s"), ("concurrent", "at once", "d"),
                       ("file_mb", "file MiB", ".1f"), ("peak_rss_before_mb", "RSS before", ".0f"),
                       ("peak_rss_after_mb", "peak RSS", ".0f"), ("extra_mb", "extra MiB", ".0f"),
                       ("seconds", "s", ".1f")]))  # fmt: skip
    report = {
        "limits": {"max_upload_pixels": inputs.MAX_UPLOAD_PIXELS, "max_side": inputs.MAX_SIDE},
        "checkpoint": args.checkpoint,
        "rows": rows,
        "machine": {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()},
    }
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
