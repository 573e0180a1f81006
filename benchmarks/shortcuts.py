"""What each inference shortcut saves, on one model, timed in one interleaved run:

- the global branch skipped when the chosen fusion gives it no weight (`uses_global_map`);
- only the local half of the FeatAE's last layer computed then (`FeatAE(features, C)`);
- the frozen backbone run with its BatchNorms folded into the convolutions (`fold_batchnorm`).

    python -m benchmarks.shortcuts [--checkpoint metal_plate] [--image-size 256]

The baseline is the same weights run the way every model ran before these shortcuts (both maps,
the whole FeatAE output, the backbone as loaded), restored by patching the two methods that take
them. Milliseconds per image at batch 1 and 8 (medians of interleaved rounds), ratios to the
baseline, and the largest difference of the (normalised) local map from it. `--image-size`: also an
untrained `lite` model at that input size, without and with every shortcut (`--image-size 256`
against the 320 px default: the previous default's path against today's).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse
import types

import torch

from benchmarks.common import interleaved, median
from ulsad import ULSAD
from ulsad.model import FeatAE

BASELINE = "no shortcut (before)"


def without_shortcuts(model: ULSAD, skip_global: bool = False, half: bool = False,
                      fold: bool = False) -> ULSAD:  # fmt: skip
    """`model` with the shortcuts not named turned off, by patching its instance methods."""
    if not skip_global:
        model.config = model.config.replace(local_weight=0.5)  # runs both branches
    if not half:
        model.featae.forward = types.MethodType(lambda self, f, _=None: FeatAE.forward(self, f),
                                                model.featae)  # fmt: skip
    if not fold:
        model.extractor.folded_body = lambda: model.extractor.body
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="metal_plate")
    parser.add_argument("--image-size", type=int, default=None,
                        help="also time lite at this size, without and with the shortcuts")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device("cpu")

    def load(**shortcuts: bool) -> ULSAD:
        return without_shortcuts(ULSAD.from_pretrained(args.checkpoint).eval(), **shortcuts)

    models = {
        BASELINE: load(),
        "global branch skipped": load(skip_global=True),
        "+ local half of the FeatAE": load(skip_global=True, half=True),
        "+ folded backbone (all shortcuts)": load(skip_global=True, half=True, fold=True),
    }
    same_weights = set(models)  # the checkpoint's: their local maps must agree
    if models["global branch skipped"].uses_global_map:
        raise SystemExit(f"{args.checkpoint} gives its global map weight: nothing is skipped.")
    if args.image_size:  # another input size, same architecture (untrained heads: same cost)
        size = args.image_size

        def other(**shortcuts: bool) -> ULSAD:
            model = ULSAD.from_preset("lite", image_size=size, local_weight=1.0).eval()
            return without_shortcuts(model, **shortcuts)

        models[f"lite at {size} px, no shortcut"] = other()
        models[f"lite at {size} px, all shortcuts"] = other(skip_global=True, half=True, fold=True)
    for batch in (1, 8):
        generator = torch.Generator().manual_seed(batch)
        inputs = {name: torch.rand(batch, 3, m.config.image_size, m.config.image_size,
                                   generator=generator) for name, m in models.items()}  # fmt: skip
        calls = {name: (lambda m=m, x=inputs[name]: m(x)) for name, m in models.items()}
        times = interleaved(calls, device, repeats=args.repeats, warmup=3)
        base = median(times[BASELINE])
        reference = models[BASELINE](inputs[BASELINE]).local_map
        for name, seconds in times.items():
            ms = 1000 * median(seconds) / batch
            shown = ""
            if name in same_weights:
                diff = (models[name](inputs[BASELINE]).local_map - reference).abs().max().item()
                shown = f", local map within {diff:.1e}"
            print(f"batch {batch}: {name}: {ms:.1f} ms/image, {median(seconds) / base:.2f}x{shown}")


if __name__ == "__main__":
    main()
