"""Scores without defect images: how well fused maps separate and localise synthetic defects.

Given the blurred, un-normalised local and global maps of the held-out good images and of
synthetic defective copies of them (`ulsad.selection.defects`), this module measures how well a
fusion of the two maps separates and localises the synthetic defects (`fusion_table`), picks the
fusion weight (`best_weight`) and places a threshold at the best F1 (`f1_threshold`). No test
image is ever involved: the inputs are training-folder images only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ulsad.metrics import PixelMetrics, image_auroc
from ulsad.selection.defects import DIAGNOSTIC_KINDS, LOGICAL_KINDS

__all__ = [
    "FUSION_WEIGHTS",
    "SelectionMaps",
    "best_weight",
    "defect_metrics",
    "f1_threshold",
    "family_of",
    "family_regret",
    "fusion_table",
    "map_quantiles",
]

FUSION_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Candidate weights of the local map (1: local only); coarse, so one small set cannot overfit it."""


@dataclass
class SelectionMaps:
    """Blurred, un-normalised maps (N, S, S) of held-out good images and synthetic defects."""

    good_local: Tensor
    good_global: Tensor | None
    defect_local: Tensor
    defect_global: Tensor | None
    masks: Tensor  # (M, S, S) bool: where each synthetic defect is
    kinds: list[str] | None = None  # each defect's kind (`selection.defects`); None: one kind


def map_quantiles(maps: Tensor, quantiles: tuple[float, float]) -> list[float]:
    """Low and high quantile of all values of `maps` (a fixed random subset above 2**24 values)."""
    values = maps.flatten()
    if values.numel() > 2**24:  # torch.quantile's limit
        generator = torch.Generator().manual_seed(0)
        values = values[torch.randperm(values.numel(), generator=generator)[: 2**24]]
    return torch.quantile(values.float(), torch.tensor(quantiles)).tolist()


def _normalise(maps: Tensor, q: list[float]) -> Tensor:
    return 0.1 * (maps - q[0]) / (q[1] - q[0])


def defect_metrics(
    good: Tensor, defect: Tensor, masks: Tensor, image_score: Callable[[Tensor], Tensor]
) -> dict[str, float]:
    """Image AUROC (defects vs good, scored by `image_score`), pixel AUROC and AUPRO of one set
    of fused maps (N, S, S), and `score`, their mean."""
    labels = np.r_[np.zeros(len(good)), np.ones(len(defect))]
    pixels = PixelMetrics()
    for amap, mask in zip(good.numpy(), np.zeros(good.shape, dtype=bool), strict=True):
        pixels.update(amap, mask)
    for amap, mask in zip(defect.numpy(), masks.numpy(), strict=True):
        pixels.update(amap, mask)
    px = pixels.compute()
    row = {
        "image_auroc": image_auroc(labels, image_score(torch.cat([good, defect])).numpy()),
        "pixel_auroc": px["pixel_auroc"],
        "aupro": px["aupro"],
    }
    return {**row, "score": float(np.mean(list(row.values())))}


def family_of(kind: str) -> str:
    """The family of a defect kind: "logical" (`LOGICAL_KINDS`, `DIAGNOSTIC_KINDS`), else
    "structural"."""
    return "logical" if kind in LOGICAL_KINDS + DIAGNOSTIC_KINDS else "structural"


def fusion_table(
    maps: SelectionMaps,
    quantiles: tuple[float, float],
    weights=FUSION_WEIGHTS,
    image_score: Callable[[Tensor], Tensor] = lambda maps: maps.amax(dim=(1, 2)),
) -> dict[float, dict]:
    """Synthetic-defect metrics of each fusion weight (`defect_metrics`: image AUROC, pixel AUROC,
    AUPRO, `score`), per family (`families`: each the mean over its kinds of the held-out good
    images against that kind's defects) and overall (the mean of the families', so that the
    family with more kinds does not count more).

    Per kind, because AUPRO averages over connected defect regions: pooled, the Perlin kind's
    masks, which split into many small islands (146 of 209 regions in one 64-defect set), made
    most of it, and a change that sharpened the maps scored higher while four of six kinds
    scored lower. Per family, because the weight is chosen by a rule that needs both
    (`best_weight`)."""
    q_local = map_quantiles(maps.good_local, quantiles)
    local = [_normalise(maps.good_local, q_local), _normalise(maps.defect_local, q_local)]
    if maps.good_global is None or maps.defect_global is None:
        weights, glob = (1.0,), [torch.zeros_like(local[0]), torch.zeros_like(local[1])]
    else:
        q_global = map_quantiles(maps.good_global, quantiles)
        glob = [_normalise(maps.good_global, q_global), _normalise(maps.defect_global, q_global)]
    kinds = maps.kinds or [""] * len(maps.defect_local)
    groups = {
        kind: torch.tensor([i for i, k in enumerate(kinds) if k == kind])
        for kind in sorted(set(kinds))
    }  # a kind whose masks are all empty has no pixel metrics: left out
    groups = {k: index for k, index in groups.items() if maps.masks[index].any()} or groups
    table = {}
    for w in weights:
        good, defect = (w * lo + (1 - w) * gl for lo, gl in zip(local, glob, strict=True))
        rows = {k: defect_metrics(good, defect[i], maps.masks[i], image_score)
                for k, i in groups.items()}  # fmt: skip
        families: dict[str, dict[str, float]] = {}
        for family in sorted({family_of(k) for k in rows}):
            members = [row for k, row in rows.items() if family_of(k) == family]
            families[family] = {key: float(np.mean([r[key] for r in members]))
                                for key in members[0]}  # fmt: skip
        first = next(iter(families.values()))
        table[float(w)] = {key: float(np.mean([f[key] for f in families.values()]))
                           for key in first}  # fmt: skip
        if len(families) > 1:
            table[float(w)]["families"] = families
    return table


def family_regret(table: dict[float, dict], weight: float) -> float:
    """How far `weight` leaves its worse family below that family's own best weight: the
    largest, over families, of (the family's best score) - (its score at `weight`)."""
    families = table[weight].get("families", {})
    return max(
        (max(row["families"][f]["score"] for row in table.values()) - families[f]["score"]
         for f in families),
        default=0.0,
    )  # fmt: skip


def best_weight(table: dict[float, dict], prior: float = 0.5, most_local: float = 1.0) -> float:
    """The fusion weight that no family loses much by: with two families (`fusion_table`), the
    weight of the least `family_regret` (minimax regret), ties to the higher score; with one,
    the weight of the highest score. Ties then go to the one closest to `prior` (the paper's).
    Only weights up to `most_local` compete (all of them if none is that low).

    Why regret, not the mean or the minimum of the family scores: logical defects are harder,
    so the logical family's scores sit lower; the minimum would let it decide alone, the mean
    would let whichever family's scores spread more decide. Measured from each family's own
    best, the rule keeps the structural family's choice unless the logical family loses more
    by it than the structural one would lose by the alternative: neither wins alone."""
    candidates = [w for w in table if w <= most_local] or list(table)
    return max(candidates, key=lambda w: (-round(family_regret(table, w), 6),
                                          round(table[w]["score"], 6), -abs(w - prior)))  # fmt: skip


def f1_threshold(good_scores: np.ndarray, defect_scores: np.ndarray) -> float:
    """The image threshold (anomalous: score > threshold) of best F1 on good vs synthetic defects,
    the two classes weighted equally (there are more synthetic defects than held-out images)."""
    good, defect = np.asarray(good_scores, float), np.asarray(defect_scores, float)
    values = np.unique(np.r_[good, defect])
    candidates = np.r_[values[0] - 1e-6, (values[1:] + values[:-1]) / 2, values[-1]]
    weight = len(defect) / max(len(good), 1)  # each good image counts as `weight` images
    best, best_f1 = float(candidates[0]), -1.0
    for t in candidates:
        tp = float((defect > t).sum())
        fp = weight * float((good > t).sum())
        fn = float((defect <= t).sum())
        f1 = 2 * tp / max(2 * tp + fp + fn, 1e-12)
        if f1 > best_f1:
            best, best_f1 = float(t), f1
    return best
