"""What each branch of a trained model sees, kind by kind, on its own synthetic defects.

    python -m benchmarks.branch_kinds --checkpoint runs/juice_bottle \\
        --category folder:../shared/data/mvtec_loco/juice_bottle/train/good: \\
        --kinds transplant,swap,fill_level --out branch_kinds.jsonl

For each kind (`ulsad.selection.KINDS`, or `DIAGNOSTIC_KINDS` such as `transplant`), `--count`
defects of that kind alone are pasted onto the checkpoint's held-out good images (rebuilt from its
seed and the training folder, as training made them) and scored at every fusion weight: the
selection score (mean of image AUROC, pixel AUROC and AUPRO) and the image AUROC, where weight 0
is the global map alone and 1 the local map alone. A kind that the local map alone separates as
well as any fusion gives the selection no reason to weigh the global map. No test image is read.
One JSON line per kind is appended to `--out`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.score_rules import checkpoint_recipe
from ulsad import ULSAD
from ulsad.data import training_images
from ulsad.feature_cache import build_cache, load_inputs
from ulsad.selection import make_defect_set
from ulsad.train import training_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--category", required=True, help="DATASET:ROOT:CATEGORY (CATEGORY may "
                        "be empty: ROOT is then a folder of good images)")  # fmt: skip
    parser.add_argument("--kinds", required=True, help="comma-separated defect kinds")
    parser.add_argument("--count", type=int, default=16, help="defects of each kind")
    parser.add_argument("--out", default="branch_kinds.jsonl")
    args = parser.parse_args()
    dataset, root, category = args.category.split(":")
    model = ULSAD.from_pretrained(args.checkpoint).eval()
    recipe = checkpoint_recipe(args.checkpoint).replace(synthetic_defects=args.count)
    cfg, device = model.config, model.device
    _, val_items = training_data(*training_images(root, category or None, dataset), recipe)
    heldout = load_inputs(val_items, cfg.image_size, False, "held-out images", cfg.tile,
                          cfg.global_whole_image)  # fmt: skip
    good = build_cache(model, heldout.tiles, device, recipe.batch_size, False, inputs=heldout)
    for kind in args.kinds.split(","):
        defects = make_defect_set(model, heldout, recipe, device, False, (kind,))
        assert defects is not None
        with torch.no_grad():
            table = defects.fusion_table(model, good, recipe.batch_size, True)
        row = {"checkpoint": args.checkpoint, "kind": kind, "count": args.count,
               "score": {w: round(r["score"], 4) for w, r in table.items()},
               "image_auroc": {w: round(r["image_auroc"], 4) for w, r in table.items()}}  # fmt: skip
        print(json.dumps(row), flush=True)
        with Path(args.out).open("a") as file:
            file.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
