"""What skipping the unused global branch saves: an embedded checkpoint whose chosen fusion weight
is 1.0 (local map alone) against the same weights computing the global map too, as every model
did before `ULSADModel.uses_global_map`; optionally a larger input size for comparison.

    python -m benchmarks.local_only [--checkpoint metal_plate] [--image-size 320]

Milliseconds per image at batch 1 and 8 (medians of interleaved rounds), ratio to the baseline.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse

import torch

from benchmarks.common import interleaved, median
from ulsad import ULSAD

BASELINE = "global map computed (before)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="metal_plate")
    parser.add_argument("--image-size", type=int, default=None, help="also time lite at this size")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device("cpu")
    skipping = ULSAD.from_pretrained(args.checkpoint).eval()
    if skipping.uses_global_map:
        raise SystemExit(f"{args.checkpoint} gives its global map weight: nothing is skipped.")
    computing = ULSAD.from_pretrained(args.checkpoint).eval()
    computing.config = computing.config.replace(local_weight=0.5)  # runs both branches
    models = {BASELINE: computing, "global map skipped (now)": skipping}
    if args.image_size:
        larger = ULSAD.from_preset("lite", image_size=args.image_size, local_weight=1.0).eval()
        models[f"{args.image_size} px, global map skipped"] = larger
    for batch in (1, 8):
        inputs = {
            name: torch.rand(batch, 3, m.config.image_size, m.config.image_size)
            for name, m in models.items()
        }
        calls = {name: (lambda m=m, x=inputs[name]: m(x)) for name, m in models.items()}
        times = interleaved(calls, device, repeats=args.repeats, warmup=3)
        base = median(times[BASELINE])
        for name, seconds in times.items():
            ms = 1000 * median(seconds) / batch
            print(f"batch {batch}: {name}: {ms:.1f} ms/image, {median(seconds) / base:.2f}x")


if __name__ == "__main__":
    main()
