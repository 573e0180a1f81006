"""Loader for MVTec LOCO AD (logical and structural anomalies), in its official layout.

Download: https://www.mvtec.com/research-teaching/datasets/mvtec-loco-ad (accept the licence there);
licence CC BY-NC-SA 4.0; cite Bergmann et al., "Beyond Dents and Scratches", IJCV 2022. Layout
(as read by anomalib's ``mvtec_loco`` module and MVTec's own evaluation code)::

    <root>/<category>/train/good/*.png
    <root>/<category>/validation/good/*.png
    <root>/<category>/test/{good,logical_anomalies,structural_anomalies}/<NNN>.png
    <root>/<category>/ground_truth/<type>/<NNN>/000.png, 001.png, ...   one mask per defect region
    <root>/<category>/defects_config.json

``defects_config.json`` is a list of ``{"defect_name", "pixel_value", "saturation_threshold",
"relative_saturation"}``; each mask's non-zero pixels carry one ``pixel_value``. As in MVTec's
evaluation code, a region's saturation area (used by sPRO) is ``int(threshold * area)`` when the
threshold is relative and ``min(threshold, area)`` otherwise, in pixels of the full-size mask.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np

from ulsad.data.samples import Sample, list_images, read_mask_array, subfolders
from ulsad.errors import ULSADError

log = logging.getLogger(__name__)

MVTEC_LOCO_CATEGORIES = (
    "breakfast_box",
    "juice_bottle",
    "pushpins",
    "screw_bag",
    "splicing_connectors",
)
CONFIG_NAME = "defects_config.json"


def is_category(path: Path) -> bool:
    """A LOCO category folder holds ``train/good``."""
    return (path / "train" / "good").is_dir()


def _group(folder_name: str) -> str:
    return next((g for g in ("logical", "structural") if folder_name.startswith(g)), "")


def read_defects_config(path: Path) -> dict[int, tuple[float, bool]]:
    """``pixel_value -> (saturation_threshold, relative_saturation)`` from a defects_config.json."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return {
            int(e["pixel_value"]): (
                float(e["saturation_threshold"]),
                bool(e["relative_saturation"]),
            )
            for e in entries
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ULSADError(
            f"cannot parse {path} ({exc!r}); restore it from the MVTec LOCO AD archive."
        ) from exc


def saturation_threshold(mask_path: Path, config: dict[int, tuple[float, bool]]) -> float:
    """The sPRO saturation area (pixels) of one region mask, from its pixel value and area."""
    values = read_mask_array(mask_path).ravel()
    counts = np.bincount(values.astype(np.int64)) if values.size else np.zeros(1, np.int64)
    area = int(counts[1:].sum())
    if area == 0:
        return 0.0
    pixel_value = int(np.argmax(counts[1:]) + 1)
    if pixel_value not in config:
        raise ULSADError(
            f"mask {mask_path} has pixel value {pixel_value}, which {CONFIG_NAME} does not list "
            f"(known: {sorted(config)}); restore the ground truth from the original archive."
        )
    threshold, relative = config[pixel_value]
    return float(int(threshold * area)) if relative else float(min(threshold, area))


def load(root: Path, category: str, split: str) -> list[Sample]:
    """Samples of ``split`` (train, validation or test) for ``root/category``."""
    cat_dir = root / category
    if split == "validation" and not (cat_dir / split / "good").is_dir():
        # A copy with its training images only: training holds out `val_fraction` of them
        # instead, as for datasets without a validation split.
        log.info("%s has no validation/good: no validation split", cat_dir)
        return []
    if split in ("train", "validation"):
        return [Sample(p, 0, "good") for p in list_images(cat_dir / split / "good")]
    test_dirs = subfolders(cat_dir / "test")
    if not test_dirs:
        raise ULSADError(
            f"{cat_dir / 'test'} has no image folders; MVTec LOCO AD needs test/good, "
            "test/logical_anomalies and test/structural_anomalies."
        )
    gt_root = cat_dir / "ground_truth"
    config_path = cat_dir / CONFIG_NAME
    config = read_defects_config(config_path) if config_path.is_file() else None
    samples: list[Sample] = []
    for folder in test_dirs:
        if folder.name == "good":
            samples += [Sample(p, 0, "good") for p in list_images(folder)]
            continue
        for image in list_images(folder):
            masks: tuple[Path, ...] = ()
            thresholds: tuple[float, ...] = ()
            if gt_root.is_dir():
                masks = tuple(list_images(gt_root / folder.name / image.stem, required=False))
                if not masks:
                    raise ULSADError(
                        f"defective image {image} has no mask: expected "
                        f"{gt_root / folder.name / image.stem / '000.png'}; restore the "
                        "ground truth or remove the image."
                    )
                if config is not None:
                    thresholds = tuple(saturation_threshold(m, config) for m in masks)
            samples.append(Sample(image, 1, folder.name, masks, _group(folder.name), thresholds))
    has_defects = any(s.label for s in samples)
    if has_defects and not gt_root.is_dir():
        warnings.warn(
            f"MVTec LOCO AD copy at {cat_dir} has no ground_truth folder: defective images have "
            "no masks, so only image-level metrics can be computed.",
            stacklevel=3,
        )
    elif has_defects and config is None:
        warnings.warn(
            f"{config_path} is missing: masks load, but without saturation thresholds sPRO "
            "cannot be computed.",
            stacklevel=3,
        )
    return sorted(samples, key=lambda s: s.path)
