"""The good images to train on, from what a user points at: a dataset root and a category, a
benchmark category folder, or a folder of good images.

Training (`ulsad.train`) takes images; this module finds them, and it never hands over a test
or mask file. A folder with a benchmark category's layout (`train/`, `test/`, `ground_truth/`)
given without a category trains on its good training images only, with a log line saying so:
the user meant that category, and the same images as with its root and category are used. A
folder with test or mask folders but no layout this module knows is refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ulsad.data.datasets import DATASETS, DatasetSpec, get_dataset, load_split
from ulsad.errors import ULSADError
from ulsad.images import find_images

__all__ = ["EVALUATION_FOLDERS", "category_layout", "training_images"]

log = logging.getLogger(__name__)
EVALUATION_FOLDERS = ("test", "ground_truth", "masks")
"""Folders that hold defect images or masks in the supported layouts: never trained on."""


def category_layout(folder: Path, dataset: str = "mvtec_ad") -> DatasetSpec | None:
    """The dataset layout of which `folder` is one category (`dataset`'s first, then the
    others'), or None. A folder dataset's category (`good/`) counts only with its test or mask
    folders: `good/` alone is also a plain folder of good images."""
    preferred = get_dataset(dataset)
    for spec in (preferred, *(s for s in DATASETS.values() if s is not preferred)):
        if not spec.is_category(folder):
            continue
        if spec.name == "folder" and not any((folder / n).is_dir() for n in EVALUATION_FOLDERS):
            continue
        return spec
    return None


def training_images(
    data: str | os.PathLike | Any, category: str | None = None, dataset: str = "mvtec_ad"
) -> tuple[Any, list[Any]]:
    """(train, held-out) good images: of `category` under the dataset root `data` (layout
    `dataset`; held-out: the dataset's validation split, [] if it has none); of the category
    folder `data` (its good training images only); or every image under the folder `data`.
    Anything else (a list, an array or a dataset of images) is returned as it is, with no
    held-out images."""
    if not isinstance(data, (str, os.PathLike)):
        return data, []
    root = Path(data).expanduser()
    if category is not None:
        return _good(dataset, root, category)
    if not root.is_dir():
        raise ULSADError(f"Training folder not found: {root}")
    spec = category_layout(root, dataset)
    if spec is not None:
        log.info(
            "%s has the layout of a %s category: training on its good training images only "
            "(no test or mask file is read).",
            root,
            spec.title,
        )
        return _good(spec.name, root, None)
    evaluation = [n + "/" for n in EVALUATION_FOLDERS if (root / n).is_dir()]
    if evaluation:
        raise ULSADError(
            f"{root} holds {', '.join(evaluation)} (defect images or masks) but no training "
            "folder of a known layout, so its good images cannot be told apart: pass its dataset "
            "root with {category} and {dataset}, or a folder of good images only.",
            category="category=",
            dataset="dataset=",
        )
    images = find_images(root)
    if not images:
        raise ULSADError(f"No images (.png/.jpg/.jpeg/.bmp/.tif) found under {root}.")
    return images, []


def _good(dataset: str, root: Path, category: str | None) -> tuple[list[Path], list[Path]]:
    """Paths of the good images of a category's train and validation splits."""
    train = [s.path for s in load_split(dataset, root, category, "train") if s.label == 0]
    heldout = [s.path for s in load_split(dataset, root, category, "validation") if s.label == 0]
    return train, heldout
