"""What training chooses on synthetic defects: the epoch to keep, the fusion weight, when to stop
training the global branch, and the thresholds.

Training (`ulsad.train`) builds a `DefectSet` once, asks `EpochChoice.consider` at each of the
recipe's `selection_epochs`, stops the global branch after `pruned_after`, and ends with
`EpochChoice.apply` and `calibrate`. Every choice reads held-out good training images and
synthetic defects on them, never a test image.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from ulsad.feature_cache import FeatureCache, Inputs, build_cache, cache_maps
from ulsad.model import ULSADModel
from ulsad.recipe import TrainingRecipe
from ulsad.selection.defects import KINDS, part_scenes, synthetic_defects
from ulsad.selection.scoring import (
    FUSION_WEIGHTS,
    SelectionMaps,
    best_weight,
    f1_threshold,
    fusion_table,
    map_quantiles,
)

__all__ = [
    "PRUNE_TOLERANCE",
    "STOP_TOLERANCE",
    "DefectSet",
    "EpochChoice",
    "calibrate",
    "global_map_adds_nothing",
    "make_defect_set",
    "paste_into_wholes",
    "pruned_after",
    "selection_epochs",
    "selection_record",
    "trainable_state",
]

# An earlier epoch is kept only if it beats the later ones on synthetic defects by more than
# this: between epochs of one run the score moves by ~0.001 (7 runs on metal_plate, bottle and
# commutator), so smaller differences are noise, and the later, longer-trained model is kept.
STOP_TOLERANCE = 0.005
# The global branch stops training when its best fusion weight beats the local map alone by less
# than this. Both scores come from the same maps, so this is a tie, not epoch-to-epoch noise: on
# metal_plate, bottle and commutator (9 models) the global map's gain was at most 0.0002; on the
# synthetic layout set (`ulsad.data.make_layout_dataset`), where it matters, 0.0049-0.0075 at every
# selection point, and STOP_TOLERANCE cut it there.
PRUNE_TOLERANCE = 0.001


@dataclass
class DefectSet:
    """Synthetic defects on the held-out good images, with their masks (`selection.defects`)."""

    cache: FeatureCache
    masks: torch.Tensor
    kinds: list[str]
    part_scenes: int  # held-out inputs on which the logical kinds took whole parts

    def fusion_table(
        self, model: ULSADModel, good: FeatureCache, batch_size: int, choose: bool
    ) -> dict:
        """Synthetic-defect metrics per candidate fusion weight (`choose`), else of the model's."""
        good_local, good_global = cache_maps(model, good, batch_size)
        defect_local, defect_global = cache_maps(model, self.cache, batch_size)
        maps = SelectionMaps(
            good_local, good_global, defect_local, defect_global, self.masks, self.kinds
        )
        weights = FUSION_WEIGHTS if choose else (model.config.local_weight,)
        return fusion_table(maps, model.config.quantiles, weights, model.image_score)


def paste_into_wholes(defects: torch.Tensor, masks: torch.Tensor, heldout: Inputs) -> Inputs:
    """The whole images of synthetic defects made on held-out tiles (`synthetic_defects` cycles
    over them: defect i is on tile i mod N): each defect's tile resized into its region of its
    whole image, where its mask is (elsewhere the whole image is unchanged)."""
    assert heldout.wholes is not None and heldout.source is not None
    assert heldout.regions is not None
    size = defects.shape[-1]
    tiles = torch.arange(len(defects)) % len(heldout.tiles)
    wholes = heldout.wholes[heldout.source[tiles]].clone()
    for whole, defect, mask, tile in zip(wholes, defects, masks, tiles.tolist(), strict=True):
        x0, y0, x1, y1 = (round(float(v) * size) for v in heldout.regions[tile])
        box = (max(1, y1 - y0), max(1, x1 - x0))
        pasted = torch.nn.functional.interpolate(defect[None].float(), size=box, mode="bilinear",
                                                 antialias=True, align_corners=False)  # fmt: skip
        where = torch.nn.functional.interpolate(mask[None, None].float(), size=box, mode="nearest")
        region = whole[:, y0 : y0 + box[0], x0 : x0 + box[1]]
        region.copy_(torch.where(where[0] > 0, pasted[0].round().clamp(0, 255), region.float()))
    return Inputs(defects, wholes, torch.arange(len(defects)), heldout.regions[tiles])


def make_defect_set(
    model: ULSADModel,
    heldout: torch.Tensor | Inputs,
    recipe: TrainingRecipe,
    device: torch.device,
    progress: bool,
    kinds: tuple[str, ...] = KINDS,
) -> DefectSet | None:
    """The recipe's synthetic defects (cycling over `kinds`) on the held-out uint8 inputs, cached
    (with their whole images, `paste_into_wholes`, when the global branch reads whole images);
    None without any."""
    if not recipe.synthetic_defects:
        return None
    heldout = heldout if isinstance(heldout, Inputs) else Inputs(heldout)
    defects, masks, kinds = synthetic_defects(
        heldout.tiles, recipe.synthetic_defects, recipe.seed, kinds
    )
    inputs = (
        Inputs(defects) if heldout.wholes is None else paste_into_wholes(defects, masks, heldout)
    )
    cache = build_cache(model, defects, device, recipe.batch_size, progress, inputs=inputs)
    return DefectSet(cache, masks, kinds, part_scenes(heldout.tiles))


def selection_epochs(recipe: TrainingRecipe, epochs: int) -> set[int]:
    """The `selection_points` evenly spaced epochs at which synthetic defects compare the model
    so far (the last epoch included)."""
    points = min(recipe.selection_points, epochs)
    return {math.ceil(epochs * (i + 1) / points) for i in range(points)}


def trainable_state(model: ULSADModel) -> dict[str, torch.Tensor]:
    """The trained part of the state (the frozen backbone is rebuilt from its weights)."""
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if not k.startswith("extractor.")
    }


class EpochChoice:
    """The epoch to keep, by synthetic-defect score: the latest within `STOP_TOLERANCE` of the
    best so far (a resume state carries it as `state`)."""

    def __init__(self, state: dict | None = None) -> None:
        self.state = state

    def consider(
        self, model: ULSADModel, epoch: int, table: dict[float, dict], most_local: float = 1.0
    ) -> dict:
        """Record `epoch`'s fusion table; keep its weights if it is (near) the best. The fusion
        weight is `best_weight`'s, at most `most_local` (`TrainingRecipe.max_local_weight`)."""
        weight = best_weight(table, most_local=most_local)
        score = table[weight]["score"]
        top = max(score, self.state["top"]) if self.state is not None else score
        if score >= top - STOP_TOLERANCE:  # later epochs win near-ties
            self.state = {"score": score, "top": top, "epoch": epoch, "local_weight": weight,
                          "table": json.dumps(table), "model": trainable_state(model)}  # fmt: skip
        else:
            self.state["top"] = top
        local_only = {"local_only_score": table[1.0]["score"]} if 1.0 in table else {}
        if 1.0 in table and "logical" in table[1.0].get("families", {}):
            logical = [row["families"]["logical"]["score"] for row in table.values()]
            local_only["logical_gain"] = max(logical) - table[1.0]["families"]["logical"]["score"]
        return {"local_weight": weight, **table[weight], **local_only}

    def apply(self, model: ULSADModel) -> None:
        """Load the kept epoch's weights and its fusion weight (the model's own unless chosen)
        into `model`."""
        model.load_state_dict(self.state["model"], strict=False)
        model.config = model.config.replace(local_weight=self.state["local_weight"])


def global_map_adds_nothing(point: dict) -> bool:
    """Whether a selection point's fusion (`EpochChoice.consider`'s record) gave the global map
    no weight, or a best score within `PRUNE_TOLERANCE` (a tie) of the local map alone's, and
    the global map adds no more than that on the logical family either (`logical_gain`: its
    best score over the local map alone's), the defects it exists for."""
    if point.get("logical_gain", 0.0) >= PRUNE_TOLERANCE:
        return False
    if point["local_weight"] == 1.0:
        return True
    return point["score"] - point.get("local_only_score", -math.inf) < PRUNE_TOLERANCE


def pruned_after(recipe: TrainingRecipe, model: ULSADModel, history: list[dict]) -> int | None:
    """The epoch after which the global branch stops training (`prune_global`): the first
    selection point where the global map adds nothing (`global_map_adds_nothing`); None while
    it trains. Read from the history, so a resumed run prunes where the interrupted one did."""
    if not (recipe.prune_global and model.config.global_branch):
        return None
    points = (h for h in history if "synthetic" in h)
    return next((h["epoch"] for h in points if global_map_adds_nothing(h["synthetic"])), None)


def selection_record(
    recipe: TrainingRecipe,
    model: ULSADModel,
    defects: DefectSet,
    heldout_inputs: int,
    compared: set[int],
    choice: EpochChoice,
    history: list[dict],
) -> dict:
    """What selection chose and why, for `training.json` (its `synthetic_validation` entry)."""
    table = json.loads(choice.state["table"])
    families = sorted(next(iter(table.values())).get("families", {}))
    return {
        "defects": recipe.synthetic_defects,
        "kinds": sorted(set(defects.kinds)),
        "heldout_inputs": heldout_inputs,
        "part_scenes": defects.part_scenes,
        "epochs_compared": sorted(compared),
        "chosen_epoch": choice.state["epoch"],
        "local_weight": choice.state["local_weight"],
        "global_pruned_after": pruned_after(recipe, model, history),
        "fusion_table": table,
        "rule": ("minimax family regret" if families else "best score")
        + (
            f", local weight at most {recipe.max_local_weight}"
            if recipe.max_local_weight < 1
            else ""
        ),
        # per family (structural, logical), the score of each candidate weight
        "family_scores": {
            f: {str(w): row["families"][f]["score"] for w, row in table.items()} for f in families
        },
    }


@torch.no_grad()
def calibrate(
    model: ULSADModel, cache: FeatureCache, batch_size: int = 8, defects: FeatureCache | None = None
) -> list[float]:
    """Set the map quantiles and default threshold (the highest score) from held-out good images,
    and with synthetic `defects` the best-F1 threshold too; returns the good images' scores."""
    local_maps, global_maps = cache_maps(model, cache, batch_size)
    rows = [map_quantiles(local_maps, model.config.quantiles), [math.nan, math.nan]]
    if global_maps is not None:
        rows[1] = map_quantiles(global_maps, model.config.quantiles)
    model.map_quantiles.copy_(torch.tensor(rows))
    scores = model.combine(local_maps, global_maps).score.tolist()
    model.threshold.fill_(max(scores))
    if defects is not None:
        defect_scores = model.combine(*cache_maps(model, defects, batch_size)).score.numpy()
        model.threshold_f1.fill_(f1_threshold(np.array(scores), defect_scores))
    return scores
