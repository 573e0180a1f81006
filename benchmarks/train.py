"""Training speed: seconds per epoch over a category of 200 images, with and without the feature cache.

    python -m benchmarks.train --out benchmarks/results/train_cpu.json

Per preset it times the training loop of `ulsad.train` (Adam steps on batches of 8, in the
preset's `training_precision`, its attention loss over `attention_queries`): with the cache
(backbone features and the self-attention target computed once, as `ulsad.train` does) and
without it (backbone and attention target on every batch). The baseline,
timed in the same run, is the reference implementation's training step (`tests/reference.py`,
paper configuration, eager fp32, no cache). By default the lite preset runs full epochs and the
slower ones a few batches, extrapolated to an epoch (`--batches`, `--full`); the one-off cost of
building the cache is reported separately.
"""

from __future__ import annotations

import os

# Before torch starts OpenMP: idle threads sleep instead of spinning (see benchmarks/inference.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import math
import sys
import time
import warnings
from typing import Any

import torch

from benchmarks.common import machine, median, peak_rss_mb, synchronize, table, write_json
from tests.reference import reference_from_ulsad
from ulsad import ULSAD
from ulsad.devices import resolve_device
from ulsad.feature_cache import build_cache, channel_statistics
from ulsad.train import make_optimizer, query_index, train_step

REFERENCE = "reference paper (eager fp32)"


def timed_steps(step: Any, batches: list[torch.Tensor], device: torch.device, warmup: int) -> list:
    """Seconds of each `step(index)` after `warmup` untimed ones."""
    times = []
    for i, index in enumerate(batches):
        synchronize(device)
        start = time.perf_counter()
        step(index)
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def reference_optimizer(
    module: torch.nn.Module, lr: float, weight_decay: float
) -> torch.optim.Adam:
    """Adam over the reference's trainable parameters (its backbone is frozen)."""
    params = [p for n, p in module.named_parameters()
              if p.requires_grad and not n.startswith("backbone.")]  # fmt: skip
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def run_preset(preset: str, device: torch.device, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows for our loop with and without cache (and the reference, for the paper preset), on
    `args.images` random images at the preset's input size."""
    torch.manual_seed(0)
    model = ULSAD.from_preset(preset, pretrained_backbone=preset == "lite").to(device)
    size = model.config.image_size
    images = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    recipe, batch_size = model.recipe, args.batch_size
    n_batches = math.ceil(args.images / batch_size)
    full = args.full or (preset == "lite" and args.batches is None)
    timed = n_batches if full else min(args.batches or 2, n_batches)
    used = min(len(images), timed * batch_size)  # the cache covers the images that are used
    batches = [b for b in torch.arange(used).split(batch_size) if len(b) > 1]  # as ulsad.train
    batches = batches[: args.warmup] + batches  # warm-up steps repeat the first batches

    # Feature statistics (as training computes them first), then the cache of the images used.
    with torch.no_grad():
        sample = images[:32].to(device).float().div_(255)
        mean, std = channel_statistics(model.extractor(model.extractor.normalize(sample)))
        model.feature_mean.copy_(mean)
        model.feature_std.copy_(std)
    synchronize(device)
    start = time.perf_counter()
    cache = build_cache(model, images[:used], device, batch_size, progress=False)
    synchronize(device)
    cache_s = (time.perf_counter() - start) * args.images / used

    optimizer, _ = make_optimizer(model, recipe, epochs=1)
    positions = cache.features[0, 0].numel()

    def queries(index: torch.Tensor) -> torch.Tensor | None:  # as ulsad.train draws them
        return query_index(recipe, 0, int(index[0]) // batch_size, positions, device)

    def cached_step(index: torch.Tensor) -> None:
        batch = cache.batch(model, index, device)
        train_step(model, optimizer, *batch, False, queries(index), recipe.training_precision)

    def uncached_step(index: torch.Tensor) -> None:
        normalized = model.extractor.normalize(images[index].to(device).float().div_(255.0))
        features = model.features(normalized)
        train_step(model, optimizer, features, normalized, None, False, queries(index),
                   recipe.training_precision)  # fmt: skip

    steps = {f"{preset} (cached features)": cached_step, f"{preset} (no cache)": uncached_step}
    if preset == "paper" or args.reference_for_all:
        reference = reference_from_ulsad(model).train()
        ref_optimizer = reference_optimizer(reference, recipe.lr, recipe.weight_decay)

        def reference_step(index: torch.Tensor) -> None:
            loss = reference.loss(images[index].to(device).float().div_(255.0))
            ref_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            ref_optimizer.step()

        name = REFERENCE if preset == "paper" else f"reference {preset} (eager fp32)"
        steps = {name: reference_step, **steps}

    model.train()
    rows = []
    for name, step in steps.items():
        print(f"[{device}] {name}: {len(batches)} batches of {batch_size}")
        times = timed_steps(step, batches, device, args.warmup)
        rows.append({
            "name": name, "preset": preset, "device": str(device),
            "cached": "cached" in name, "batches_timed": len(times),
            "step_s": median(times), "step_samples_s": times,
            "epoch_s": sum(times) / len(times) * n_batches,
            "extrapolated": len(times) < n_batches,
            "cache_build_s": cache_s if "cached" in name else None,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["lite", "paper"])
    parser.add_argument("--device", help="cpu, cuda, ... (default: best available)")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--images", type=int, default=200, help="images per epoch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int,
                        help="timed batches per run, extrapolated to an epoch (default: a full "
                             "epoch for lite, 2 for the others)")  # fmt: skip
    parser.add_argument("--full", action="store_true", help="time full epochs for every preset")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    parser.add_argument("--reference-for-all", action="store_true",
                        help="also time a reference implementation with each preset's widths")  # fmt: skip
    parser.add_argument("--out", help="JSON report path")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    report: dict[str, Any] = {"benchmark": "train", "machine": machine(device),
                              "settings": vars(args)}  # fmt: skip
    rows = []
    for preset in args.presets:
        rows += run_preset(preset, device, args)
    reference = next((r for r in rows if r["name"] == REFERENCE), None)
    for row in rows:
        row["epoch_over_reference"] = reference and row["epoch_s"] / reference["epoch_s"]
    report["rows"] = rows
    report["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        report["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    write_json(args.out, report)
    columns = [
        ("device", "device", "s"), ("name", "run", "s"), ("step_s", "s/batch", ".3f"),
        ("epoch_s", f"s/epoch ({args.images} img)", ".1f"),
        ("epoch_over_reference", "time/ref", ".3f"), ("cache_build_s", "cache build s", ".1f"),
        ("batches_timed", "batches timed", "d"),
    ]  # fmt: skip
    print(table(rows, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
