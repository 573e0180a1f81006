"""Image-score rules compared on trained checkpoints: how `image_score_fraction` was chosen.

    python -m benchmarks.score_rules --category mpdd:../shared/data/mpdd:metal_plate \
        --checkpoint runs/metal_plate-40 --checkpoint runs/metal_plate-41 \
        --fractions 0,0.001,0.005,0.01,0.02,0.05,0.1,0.25 --out score_rules.jsonl

A model's image score is the mean of the highest `image_score_fraction` of its combined map's
pixels (0: the maximum). The rule changes no map, so it is compared on trained models without
retraining. For each checkpoint the script rebuilds what training saw (the same held-out good
images, the same synthetic defects, from the checkpoint's seed and the training folder), computes
the combined maps once, and reports the synthetic-defect image AUROC of each fraction: what a
choice may use. Test numbers come from `ulsad eval` of models trained with the chosen default.
One JSON line per checkpoint is appended to `--out`.

For a tiled category (images of aspect ratio 2 or more, `tile`), a defect lies in one tile of an
image. Two ways of making the image's score from its tiles are compared on whole images (each
defect put back among the other tiles of its image): `highest_tile` (the model's rule: each
tile's score, then the highest) and `stitched` (the top fraction of all the image's tile maps
together, as one map). The maps are the tiles' own (a global branch that reads whole images is
not run here): exact for a model that scores with its local map alone (`local_weight` 1.0, as
the defaults chose on every real category so far).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ulsad import ULSAD
from ulsad.config import split_legacy
from ulsad.data import training_images
from ulsad.feature_cache import build_cache, cache_maps, load_inputs
from ulsad.metrics import image_auroc
from ulsad.model import top_count, top_mean
from ulsad.recipe import TrainingRecipe
from ulsad.selection import synthetic_defects
from ulsad.train import training_data


def checkpoint_recipe(folder: str) -> TrainingRecipe:
    """The recipe a checkpoint was trained with: training.json's, else (checkpoints written
    before it had one) the training fields its config.json carried; a folder saved without
    training.json (`fit` with no `out_dir`) is taken to have its preset's recipe."""
    if not (Path(folder) / "training.json").is_file():
        return ULSAD.from_pretrained(folder).recipe
    training = json.loads((Path(folder) / "training.json").read_text())
    if "recipe" in training:
        return TrainingRecipe.from_dict(training["recipe"])
    _, fields = split_legacy(json.loads((Path(folder) / "config.json").read_text()))
    return TrainingRecipe.from_dict(fields)


@torch.no_grad()
def synthetic_maps(
    model: ULSAD, recipe: TrainingRecipe, root: str, dataset: str, category: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Combined maps (N, S, S) of the held-out good tiles and of their synthetic defects, and
    the held-out image each good tile belongs to (N,)."""
    cfg, device = model.config, model.device
    _, val_items = training_data(*training_images(root, category, dataset), recipe)
    inputs = load_inputs(val_items, cfg.image_size, False, "held-out images", cfg.tile, True)
    images = inputs.tiles
    source = inputs.source if inputs.source is not None else torch.arange(len(images))
    defects, _, _ = synthetic_defects(images, recipe.synthetic_defects or 64, recipe.seed)
    maps = []
    for batch in (images, defects):
        cache = build_cache(model, batch, device, recipe.batch_size, False)
        maps.append(model.combine(*cache_maps(model, cache, recipe.batch_size)).anomaly_map)
    return maps[0], maps[1], source


def scores(maps: torch.Tensor, fraction: float) -> np.ndarray:
    """Image scores of (N, H, W) maps: the mean of their highest `fraction` of pixels (0: max)."""
    return top_mean(maps, top_count(fraction, maps.shape[-1] * maps.shape[-2])).numpy()


def image_rules(
    good: torch.Tensor, defect: torch.Tensor, source: torch.Tensor, fractions: list[float]
) -> dict[str, dict[float, float]]:
    """Whole-image synthetic AUROC of `highest_tile` and `stitched` at each fraction: defect `d`
    (made on good tile `d % N`) replaces that tile among its image's tiles."""
    groups = [torch.nonzero(source == i).flatten() for i in range(int(source.max()) + 1)]
    images = [good[g] for g in groups]
    for d in range(len(defect)):
        tile = d % len(good)
        members = groups[int(source[tile])]
        tiles = good[members].clone()
        tiles[int(torch.nonzero(members == tile)[0, 0])] = defect[d]
        images.append(tiles)
    labels = np.r_[np.zeros(len(groups)), np.ones(len(defect))]
    result: dict[str, dict[float, float]] = {"highest_tile": {}, "stitched": {}}
    for f in fractions:
        highest = [float(scores(t, f).max()) for t in images]
        stitched = [float(scores(t.reshape(1, -1, t.shape[-1]), f)[0]) for t in images]
        result["highest_tile"][f] = image_auroc(labels, np.array(highest))
        result["stitched"][f] = image_auroc(labels, np.array(stitched))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", required=True, help="DATASET:ROOT:CATEGORY")
    parser.add_argument("--checkpoint", action="append", required=True)
    parser.add_argument("--fractions", default="0,0.001,0.005,0.01,0.02,0.05,0.1,0.25")
    parser.add_argument("--out", default="benchmarks/reports/score_rules.jsonl")
    args = parser.parse_args()
    dataset, root, category = args.category.split(":")
    category = category or None  # DATASET:ROOT: - a folder of images, as `ulsad train --data`
    fractions = [float(f) for f in args.fractions.split(",")]
    for folder in args.checkpoint:
        model, recipe = ULSAD.from_pretrained(folder).eval(), checkpoint_recipe(folder)
        good, defect, source = synthetic_maps(model, recipe, root, dataset, category)
        labels = np.r_[np.zeros(len(good)), np.ones(len(defect))]
        row = {"checkpoint": folder, "category": category, "seed": recipe.seed,
               "local_weight": model.config.local_weight,
               "synthetic_image_auroc": {f: image_auroc(labels, np.r_[scores(good, f),
                                                                        scores(defect, f)])
                                         for f in fractions}}  # fmt: skip
        if len(source) > int(source.max()) + 1:  # tiled: some image has several tiles
            row["whole_images"] = image_rules(good, defect, source, fractions)
        print(json.dumps(row), flush=True)
        with Path(args.out).open("a") as file:
            file.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
