"""Cost of candidate head widths for a CPU preset: FLOPs, latency, training step, checkpoint size.

    python -m benchmarks.presets --out benchmarks/reports/presets_cpu.json

For each candidate (the `lite` preset with config overrides) it measures, in one interleaved run:
inference GFLOP per image (at the candidate's input size), PyTorch batch-1 latency, the cached
training step (the loop of `ulsad.train`, batches of 8) extrapolated to an epoch of 200 images,
parameters and checkpoint size. `--train ROOT CATEGORY DATASET` also trains each candidate on that
category (`--epochs`, default the preset's) and adds its test metrics (image AUROC; pixel AUROC and
AUPRO with masks).
"""

from __future__ import annotations

import os

# Before torch starts OpenMP: idle threads sleep instead of spinning (see benchmarks/inference.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import interleaved, machine, median, table, write_json
from ulsad import ULSAD
from ulsad.feature_cache import build_cache

CANDIDATES = {
    "lite (current)": {},
    "C152 W608 G64": {"channels": 152, "featae_width": 608, "global_width": 64},
    "C96 W256": {"featae_width": 256},
    "C64 W256": {"channels": 64, "featae_width": 256},
    "C64 W256 G16": {"channels": 64, "featae_width": 256, "global_width": 16},
    "C48 W192": {"channels": 48, "featae_width": 192},
}


def training_step(model: ULSAD, images: torch.Tensor, batch_size: int) -> Any:
    """One cached training step of `ulsad.train` on the first `batch_size` images, as a callable."""
    device = torch.device("cpu")
    cache = build_cache(model, images, device, batch_size, progress=False)
    params = [p for n, p in model.named_parameters() if not n.startswith("extractor.")]
    optimizer = torch.optim.Adam(params, lr=model.recipe.lr)
    index = torch.arange(batch_size)

    def step() -> None:
        model.train()
        loss = model.losses(*cache.batch(model, index, device)).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def accuracy(overrides: dict, root: str, category: str, dataset: str, epochs: int | None) -> dict:
    """Test metrics of a candidate trained on one category (the model's own held-out calibration)."""
    from ulsad.data import load_mask, load_split
    from ulsad.evaluate import evaluate

    if epochs is not None:
        overrides = {**overrides, "epochs": epochs, "lr_milestones": (epochs,)}
    model = ULSAD.from_preset("lite", **overrides)
    model.fit(root, category=category, dataset=dataset, progress=False)
    test = load_split(dataset, root, category, "test")
    metrics = evaluate(model, test, batch_size=16, progress=False, load_mask=load_mask)
    return {k: metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro") if k in metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=json.loads, default=CANDIDATES,
                        help='JSON {name: {config overrides}} (default: a built-in sweep)')  # fmt: skip
    parser.add_argument("--threads", type=int)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--images", type=int, default=200, help="images per epoch")
    parser.add_argument("--train", nargs=3, metavar=("ROOT", "CATEGORY", "DATASET"),
                        help="also train each candidate there and report its test metrics")  # fmt: skip
    parser.add_argument("--epochs", type=int, help="training epochs with --train (default: 40)")
    parser.add_argument("--out", help="JSON report path")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, infer, train = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in args.candidates.items():
            model = ULSAD.from_preset("lite", **overrides).eval()
            size = model.config.image_size  # each candidate at its own input size
            x1 = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
            train_images = torch.randint(0, 256, (args.batch_size, 3, size, size),
                                         dtype=torch.uint8, generator=torch.Generator().manual_seed(2))  # fmt: skip
            with FlopCounterMode(display=False) as counter, torch.inference_mode():
                model(x1)
            folder = model.save_pretrained(Path(tmp) / str(len(rows)))
            rows.append({"name": name, "overrides": overrides,
                         "gflop_per_image": counter.get_total_flops() / 1e9,
                         "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                         "checkpoint_mb": (folder / "model.safetensors").stat().st_size / 2**20})  # fmt: skip

            def infer_once(model: ULSAD = model, x1: torch.Tensor = x1) -> None:
                with torch.inference_mode():
                    model.eval()(x1)

            infer[name] = infer_once
            train[name] = training_step(model, train_images, args.batch_size)
    cpu = torch.device("cpu")
    latency = interleaved(infer, cpu, args.repeats, warmup=2)
    steps = interleaved(train, cpu, args.repeats, warmup=1)
    n_batches = -(-args.images // args.batch_size)
    for row in rows:
        row["latency_ms"] = 1000 * median(latency[row["name"]])
        row["train_step_s"] = median(steps[row["name"]])
        row["epoch_s"] = row["train_step_s"] * n_batches
        if args.train:
            print(f"training {row['name']} on {args.train[1]}")
            row.update(accuracy(row["overrides"], *args.train, args.epochs))
    write_json(args.out, {"benchmark": "presets", "machine": machine(cpu),
                          "settings": vars(args), "rows": rows})  # fmt: skip
    columns = [
        ("name", "candidate", "s"), ("gflop_per_image", "GFLOP", ".2f"),
        ("latency_ms", "batch-1 ms", ".1f"), ("train_step_s", "s/step (8 img)", ".3f"),
        ("epoch_s", f"s/epoch ({args.images} img)", ".1f"), ("params_m", "params M", ".2f"),
        ("checkpoint_mb", "file MiB", ".1f"),
    ]  # fmt: skip
    if args.train:
        columns += [("image_auroc", "image AUROC", ".4f"), ("pixel_auroc", "pixel AUROC", ".4f"),
                    ("aupro", "AUPRO", ".4f")]  # fmt: skip
    print(table(rows, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
