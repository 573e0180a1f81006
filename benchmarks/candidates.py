"""One candidate setting of `lite`, trained and scored on real data: how the defaults were chosen.

    python -m benchmarks.candidates --category mpdd:../shared/data/mpdd:metal_plate \
        --set feature_aggregation=3 --name agg3 --out benchmarks/reports/candidates.jsonl

Trains `ULSAD.from_preset("lite", **overrides)` with `ULSAD.fit` (held-out good images and
synthetic defects as in training; nothing else), then reports, for every candidate fusion weight
of the local map (0, 0.25, 0.5, 0.75, 1):

- `synthetic`: image AUROC, pixel AUROC and AUPRO on the synthetic defects pasted onto the
  held-out good images (what training itself can see, and what chooses the weight);
- `test`: the same metrics on the category's test split at 256 x 256 (masks nearest-resized),
  measured afterwards, for reporting only. Every test image is one square resize here, also for
  a model that tiles elongated images (`tile`): compare such models with `ulsad eval`, which
  scores as `predict` does.

One JSON line per run is appended to `--out`. Test images are never used to train, calibrate or
choose anything here: the weight the model keeps is the one the synthetic validation picked.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ulsad import ULSAD
from ulsad.data import load_mask, load_split
from ulsad.images import load_image, to_tensor
from ulsad.metrics import PixelMetrics, image_auroc
from ulsad.selection import FUSION_WEIGHTS


def _parse(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@torch.no_grad()
def test_metrics(model: ULSAD, dataset: str, root: str, category: str) -> dict:
    """Test metrics of each fusion weight, maps at the model's input size."""
    model.eval()
    size = model.config.image_size
    samples = load_split(dataset, root, category, "test")
    labels = np.array([s.label for s in samples])
    masks = None
    if all(s.mask_paths for s in samples if s.label):
        masks = [load_mask(s, (size, size)) if s.label else np.zeros((size, size), bool)
                 for s in samples]  # fmt: skip
    local, glob = [], []
    for start in range(0, len(samples), 16):
        batch = torch.stack(
            [to_tensor(load_image(s.path), size) for s in samples[start : start + 16]]
        )
        lo, gl = model.unnormalized_maps(batch.to(model.device))
        local.append(lo.cpu())
        glob.append(torch.zeros_like(lo.cpu()) if gl is None else gl.cpu())
    q = model.map_quantiles.cpu()
    local_n = 0.1 * (torch.cat(local) - q[0, 0]) / (q[0, 1] - q[0, 0])
    glob_n = 0.1 * (torch.cat(glob) - q[1, 0]) / (q[1, 1] - q[1, 0])
    weights = FUSION_WEIGHTS if model.global_ae is not None else (1.0,)
    table = {}
    for w in weights:
        fused = w * local_n + (1 - w) * glob_n if w < 1 else local_n
        row = {"image_auroc": image_auroc(labels, model.image_score(fused).numpy())}
        if masks is not None:
            pixels = PixelMetrics()
            for amap, mask in zip(fused.numpy(), masks, strict=True):
                pixels.update(amap, mask)
            px = pixels.compute()
            row.update(pixel_auroc=px["pixel_auroc"], aupro=px["aupro"])
        table[str(w)] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", required=True, help="DATASET:ROOT:CATEGORY")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--name", default="lite")
    parser.add_argument("--out", default="benchmarks/reports/candidates.jsonl")
    args = parser.parse_args()
    dataset, root, category = args.category.split(":")
    overrides = _parse(args.set)
    model = ULSAD.from_preset("lite", **overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        model.fit(root, category=category, dataset=dataset, progress=False, out_dir=out_dir)
        seconds = time.perf_counter() - started
        training = json.loads((Path(out_dir) / "training.json").read_text())
    report = {
        "name": args.name,
        "category": category,
        "overrides": overrides,
        "fit_s": round(seconds, 1),
        "local_weight": model.config.local_weight,
        "steps": training["steps"],
        "n_train": training["n_train"],
        "n_heldout": training["n_heldout"],
        "synthetic": training["synthetic_validation"],
        "test": test_metrics(model, dataset, root, category),
    }
    print(json.dumps(report))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
