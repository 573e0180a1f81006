"""What each checkpoint storage choice does to size, scores and maps.

    python -m benchmarks.storage weights/bottle [more checkpoint folders] [--images DIR ...]

For each folder: re-saves the model as (a) backbone by hash, fp32; (b) backbone copied, every
parameter fp16; (c) hash + every parameter fp16; (d) the compact default (hash, FeatAE fp16,
global AE fp32), loads each back and compares scores and combined maps with the folder's own
model on its `examples/` images (and `--images`). Prints one JSON object per variant.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from ulsad import ULSAD
from ulsad.images import find_images

VARIANTS = {
    "hash_fp32": {"dtype": torch.float32, "store_backbone": False},
    "copy_fp16_all": {"dtype": torch.float16, "store_backbone": True},
    "hash_fp16_all": {"dtype": torch.float16, "store_backbone": False},
    "compact_default": {},  # hash, FeatAE float16, global AE float32
}


def compare(reference: ULSAD, candidate: ULSAD, images: list[Path]) -> dict[str, float]:
    """Max abs / relative deviation of scores and maps of `candidate` against `reference`."""
    a, b = reference.predict(images), candidate.predict(images)
    score_abs = max(abs(x.score - y.score) for x, y in zip(a, b, strict=True))
    score_rel = max(abs(x.score - y.score) / abs(x.score) for x, y in zip(a, b, strict=True))
    map_abs = max(
        float(np.abs(x.anomaly_map - y.anomaly_map).max()) for x, y in zip(a, b, strict=True)
    )
    map_rel = max(
        float(np.abs(x.anomaly_map - y.anomaly_map).max() / np.abs(x.anomaly_map).max())
        for x, y in zip(a, b, strict=True)
    )
    return {
        "score_max_abs": score_abs,
        "score_max_rel": score_rel,
        "map_max_abs": map_abs,
        "map_max_rel_to_map_max": map_rel,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders")
    parser.add_argument("--images", nargs="*", default=[], help="more image folders or files")
    args = parser.parse_args(argv)
    extra = [p for item in args.images for p in find_images(Path(item))]
    for folder in map(Path, args.checkpoints):
        reference = ULSAD.from_pretrained(folder)
        images = sorted(find_images(folder / "examples")) + extra
        size = (folder / "model.safetensors").stat().st_size
        print(json.dumps({"checkpoint": str(folder), "variant": "as is", "bytes": size}))
        for name, storage in VARIANTS.items():
            with tempfile.TemporaryDirectory() as tmp:
                reference.save_pretrained(tmp, **storage)
                candidate = ULSAD.from_pretrained(tmp)
                row = {
                    "checkpoint": str(folder),
                    "variant": name,
                    "bytes": (Path(tmp) / "model.safetensors").stat().st_size,
                    "images": len(images),
                    **compare(reference, candidate, images),
                }
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
