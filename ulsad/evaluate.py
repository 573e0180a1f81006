"""Evaluate a model on test samples: image metrics, pixel metrics and MVTec LOCO's sPRO.

The model predicts `batch_size` images at a time and each anomaly map is folded into the
bounded-memory accumulators of `ulsad.metrics`, then dropped, so a test set of any size fits in
memory. Metrics per defect type and per group (MVTec LOCO: "logical" / "structural") are computed
against all good images, as the official MVTec evaluations do: one accumulator per
(group, defect) plus one for the good images, merged exactly as needed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from ulsad.data.samples import read_mask
from ulsad.errors import ULSADError
from ulsad.metrics import PixelMetrics, SPROMetric, f1_max, image_auroc, saturation_area

__all__ = ["Key", "MaskLoader", "Predictor", "Sample", "SaturationFn", "evaluate"]

MaskLoader = Callable[[Any, tuple[int, int]], np.ndarray]
"""(sample, (H, W)) -> bool mask: the union of the sample's masks at that shape."""
SaturationFn = Callable[[Any, Sequence[np.ndarray]], Sequence[float]]
"""(sample, its masks as loaded) -> saturation area in pixels of each mask (sPRO)."""


class Sample(Protocol):
    """What `evaluate` reads from a sample (`ulsad.data.Sample` has these fields)."""

    path: Path
    label: int
    defect: str
    mask_paths: tuple[Path, ...]
    group: str


class Predictor(Protocol):
    """A model: `predict` returns objects with `.score` and `.anomaly_map` (H, W) per path."""

    def predict(self, paths: list[Path], batch_size: int = ...) -> Sequence[Any]: ...


def _union_mask(sample: Any, shape: tuple[int, int]) -> np.ndarray:
    """Fallback loader: union of the sample's masks (all False without masks)."""
    mask = np.zeros(shape, dtype=bool)
    for path in sample.mask_paths:
        mask |= read_mask(path, shape)
    return mask


def _sample_saturation(sample: Any, masks: Sequence[np.ndarray]) -> list[int]:
    """Saturation areas from `sample.saturation_thresholds` (aligned with `mask_paths`).

    Values are pixels, or fractions of each mask's area where `sample.relative_saturation`
    (optional, aligned too) is true: the `defects_config.json` fields of MVTec LOCO.
    """
    thresholds = tuple(getattr(sample, "saturation_thresholds", ()))
    relative = tuple(getattr(sample, "relative_saturation", ())) or (False,) * len(thresholds)
    if not len(thresholds) == len(relative) == len(masks):
        raise ULSADError(
            f"{sample.path}: {len(masks)} masks but {len(thresholds)} saturation thresholds "
            f"and {len(relative)} relative_saturation flags"
        )
    return [
        saturation_area(int(m.sum()), t, bool(r))
        for m, t, r in zip(masks, thresholds, relative, strict=True)
    ]


Key = tuple[str, str]  # (group, defect) of anomalous samples


@dataclass
class _Accumulators:
    """Pixel accumulators: one for the good images, one per (group, defect) of anomalous ones."""

    with_spro: bool
    good_px: PixelMetrics = field(default_factory=PixelMetrics)
    good_sp: SPROMetric = field(default_factory=SPROMetric)
    pixel: dict[Key, PixelMetrics] = field(default_factory=lambda: defaultdict(PixelMetrics))
    spro: dict[Key, SPROMetric] = field(default_factory=lambda: defaultdict(SPROMetric))

    def add(self, sample: Any, amap: np.ndarray, load: MaskLoader | None, sat: SaturationFn):
        """Fold one image in; masks are read at the map's shape."""
        shape = amap.shape[:2]
        if sample.label == 0:
            self.good_px.update(amap, np.zeros(shape, dtype=bool))
            if self.with_spro:
                self.good_sp.update(amap, [], [])
            return
        key = (getattr(sample, "group", ""), sample.defect)
        masks: list[np.ndarray] = []
        if self.with_spro:
            masks = [read_mask(p, shape) for p in sample.mask_paths]
            self.spro[key].update(amap, masks, sat(sample, masks))
        if masks and load is None:
            union = np.logical_or.reduce(masks)
        else:
            union = np.asarray((load or _union_mask)(sample, shape), dtype=bool)
        self.pixel[key].update(amap, union)

    def summary(self, keep: Callable[[Key], bool] = lambda key: True) -> dict[str, float]:
        """Pixel metrics (and sPRO) of the good images plus the kept keys; {} where undefined."""
        out: dict[str, float] = {}
        keys = [k for k in self.pixel if keep(k)]
        px = reduce(PixelMetrics.merge, [self.pixel[k] for k in keys], self.good_px)
        if px.n_positive and px.n_negative:
            out.update(px.compute())
        if self.with_spro:
            sp = reduce(SPROMetric.merge, [self.spro[k] for k in keys], self.good_sp)
            if sp.n_masks and sp.n_negative:
                out.update(sp.compute())
        return out


def evaluate(
    model: Predictor,
    samples: Sequence[Sample],
    *,
    batch_size: int = 16,
    progress: bool = True,
    load_mask: MaskLoader | None = None,
    saturation: SaturationFn | None = None,
) -> dict[str, Any]:
    """Image, pixel, per-defect and per-group metrics of `model` on `samples` (JSON-ready dict).

    Keys: n_images, n_good, n_anomalous, image_auroc, image_f1_max, has_masks (every anomalous
    sample has masks); with masks also pixel_auroc, aupro, pixel_f1_max, and sPRO (spro_0.05,
    spro_0.3) when saturation areas are known (`saturation`, or `saturation_thresholds` on every
    anomalous sample); per_defect {defect: {image_auroc, n, pixel metrics}} against all good
    images; per_group likewise when samples carry a group (MVTec LOCO); scores: one row
    {path, label, defect, score} per sample. Anomaly maps must be at the masks' resolution
    (masks are nearest-resized to the map otherwise). `load_mask(sample, shape)` replaces the
    built-in union-of-masks loader for the pixel metrics; sPRO always reads each mask itself.
    """
    samples = list(samples)
    if batch_size < 1:
        raise ULSADError(f"batch_size must be >= 1, got {batch_size}")
    labels = [int(s.label) for s in samples]
    n_good, n_anomalous = labels.count(0), labels.count(1)
    if n_good == 0 or n_anomalous == 0 or n_good + n_anomalous != len(samples):
        raise ULSADError(
            f"evaluation needs good (label 0) and anomalous (label 1) samples only; got "
            f"{n_good} good and {n_anomalous} anomalous of {len(samples)}"
        )
    anomalous = [s for s in samples if s.label == 1]
    has_masks = all(s.mask_paths for s in anomalous)
    with_spro = has_masks and (
        saturation is not None
        or all(len(getattr(s, "saturation_thresholds", ())) == len(s.mask_paths) for s in anomalous)
    )
    acc = _Accumulators(with_spro)
    scores: list[float] = []
    with tqdm(total=len(samples), disable=not progress, desc="evaluate", unit="img") as bar:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            preds = list(model.predict([s.path for s in chunk], batch_size=batch_size))
            if len(preds) != len(chunk):
                raise ULSADError(f"model returned {len(preds)} predictions for {len(chunk)} images")
            for sample, pred in zip(chunk, preds, strict=True):
                scores.append(float(pred.score))
                if has_masks:
                    amap = np.asarray(pred.anomaly_map)
                    acc.add(sample, amap, load_mask, saturation or _sample_saturation)
            bar.update(len(chunk))

    result: dict[str, Any] = {
        "n_images": len(samples),
        "n_good": n_good,
        "n_anomalous": n_anomalous,
        "image_auroc": image_auroc(labels, scores),
        "image_f1_max": f1_max(labels, scores),
        "has_masks": has_masks,
    }
    if has_masks:
        result.update(acc.summary())

    good = [i for i, y in enumerate(labels) if y == 0]

    def breakdown(select: Callable[[Any], bool], keep: Callable[[Key], bool]) -> dict[str, Any]:
        idx = good + [i for i, s in enumerate(samples) if s.label == 1 and select(s)]
        entry: dict[str, Any] = {
            "image_auroc": image_auroc([labels[i] for i in idx], [scores[i] for i in idx]),
            "n": len(idx) - len(good),
        }
        if has_masks:
            entry.update(acc.summary(keep))
        return entry

    defects = sorted({s.defect for s in anomalous})
    result["per_defect"] = {
        d: breakdown(lambda s, d=d: s.defect == d, lambda k, d=d: k[1] == d) for d in defects
    }
    groups = sorted({g for s in anomalous if (g := getattr(s, "group", ""))})
    if groups:
        result["per_group"] = {
            g: breakdown(lambda s, g=g: getattr(s, "group", "") == g, lambda k, g=g: k[0] == g)
            for g in groups
        }
    result["scores"] = [
        {"path": str(s.path), "label": int(s.label), "defect": s.defect, "score": sc}
        for s, sc in zip(samples, scores, strict=True)
    ]
    return result
