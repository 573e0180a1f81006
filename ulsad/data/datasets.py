"""The dataset registry and the two entry points: ``list_categories`` and ``load_split``.

Each supported dataset is read in its official on-disk layout (see the modules ``mvtec``, ``loco``,
``visa`` and ``folder`` for the layouts, download pages and licences). Loaders only list files and
check the layout; images are read (and checked) by the image loader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ulsad.data import folder, loco, visa
from ulsad.data.mvtec import (
    BTAD,
    BTAD_CATEGORIES,
    MPDD,
    MPDD_CATEGORIES,
    MVTEC_AD,
    MVTEC_AD_CATEGORIES,
)
from ulsad.data.samples import SPLITS, Sample, subfolders
from ulsad.errors import ULSADError


@dataclass(frozen=True)
class DatasetSpec:
    """How to find the categories of one dataset and load its splits."""

    name: str
    title: str
    categories: tuple[str, ...]  # the official category names; () for free-form datasets
    splits: tuple[str, ...]  # the splits the dataset ships; others load as []
    layout: str  # one line shown in errors
    load: Callable[[Path, str, str], list[Sample]]  # (root, category, split) -> samples
    is_category: Callable[[Path], bool]  # is this folder one category of the dataset?
    find_categories: Callable[[Path], list[str]] | None = None  # when categories are not folders

    def categories_in(self, root: Path) -> list[str]:
        """Category names present under ``root``, sorted."""
        if self.find_categories is not None:
            return self.find_categories(root)
        return [p.name for p in subfolders(root) if self.is_category(p)]


DATASETS: dict[str, DatasetSpec] = {
    "mvtec_ad": DatasetSpec(
        "mvtec_ad",
        "MVTec AD",
        MVTEC_AD_CATEGORIES,
        ("train", "test"),
        "<root>/<category>/{train/good,test/<defect>,ground_truth/<defect>}",
        MVTEC_AD.load,
        MVTEC_AD.is_category,
    ),
    "mvtec_loco": DatasetSpec(
        "mvtec_loco",
        "MVTec LOCO AD",
        loco.MVTEC_LOCO_CATEGORIES,
        SPLITS,
        "<root>/<category>/{train/good,validation/good,test/<type>,ground_truth/<type>/<NNN>}",
        loco.load,
        loco.is_category,
    ),
    "visa": DatasetSpec(
        "visa",
        "VisA",
        visa.VISA_CATEGORIES,
        ("train", "test"),
        "<root>/split_csv/1cls.csv and <root>/<object>/Data/{Images,Masks}",
        visa.load,
        lambda path: False,
        visa.find_categories,
    ),
    "mpdd": DatasetSpec(
        "mpdd",
        "MPDD",
        MPDD_CATEGORIES,
        ("train", "test"),
        "<root>/<category>/{train/good,test/<defect>,ground_truth/<defect>}",
        MPDD.load,
        MPDD.is_category,
    ),
    "btad": DatasetSpec(
        "btad",
        "BTAD",
        BTAD_CATEGORIES,
        ("train", "test"),
        "<root>/<category>/{train/ok,test/ok,test/ko,ground_truth/ko}",
        BTAD.load,
        BTAD.is_category,
    ),
    "folder": DatasetSpec(
        "folder",
        "folder dataset",
        (),
        ("train", "test"),
        "<root>/<category>/{good,test/<defect>,masks/<defect>}",
        folder.load,
        folder.is_category,
    ),
}


def get_dataset(dataset: str) -> DatasetSpec:
    """The registry entry for ``dataset``, or a clear error listing the known names."""
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ULSADError(
            f"unknown dataset '{dataset}'; choose one of: {', '.join(DATASETS)}."
        ) from None


def _existing_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ULSADError(f"dataset root {path} does not exist; pass the folder that holds it.")
    return path


def list_categories(dataset: str, root: str | Path | None = None) -> list[str]:
    """Categories found under ``root``; with ``root=None``, the dataset's official list."""
    spec = get_dataset(dataset)
    if root is None:
        return list(spec.categories)
    return spec.categories_in(_existing_root(root))


def load_split(dataset: str, root: str | Path, category: str | None, split: str) -> list[Sample]:
    """Samples of one split ("train", "validation" or "test") of one category, sorted by path.

    ``category=None`` accepts a ``root`` that is itself a category folder (e.g.
    ``.../mvtec_ad/bottle``, or a folder dataset's root) or that holds exactly one category.
    Splits the dataset does not ship (e.g. "validation" for MVTec AD) give [].
    """
    spec = get_dataset(dataset)
    if split not in SPLITS:
        raise ULSADError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}.")
    path = _existing_root(root)
    if category is None and spec.is_category(path):
        path, category = path.parent, path.name
    elif category is None or not _has_category(spec, path, category):
        found = spec.categories_in(path)
        if category is None and len(found) == 1:
            category = found[0]
        else:
            raise _no_category(spec, path, category, found)
    if split not in spec.splits:
        return []
    return spec.load(path, category, split)


def _no_category(
    spec: DatasetSpec, path: Path, category: str | None, found: list[str]
) -> ULSADError:
    """The error for a category that is not there: what was looked for, what is there instead,
    and, when `path` is itself a category folder, the two commands that were probably meant."""
    what = "pass a category" if category is None else f"unknown category '{category}'"
    looked = f"{path / category}" if category is not None else f"a category folder in {path}"
    if found:
        there = f"found: {', '.join(found)}"
    else:
        folders = [p.name + "/" for p in subfolders(path)]
        shown = ", ".join(folders[:8]) + (", ..." if len(folders) > 8 else "")
        there = f"found: none, only the folders {shown}" if folders else "found: none (empty)"
    message = f"{spec.title} at {path}: {what}; looked for {looked} (layout {spec.layout}); {there}"
    if spec.is_category(path):  # the user passed the category folder and the category
        message += (
            f". {path} is itself a category folder: did you mean {{root}} {path.parent} "
            f"{{category}} {path.name}, or {{root}} {path} with no {{category}}?"
        )
        return ULSADError(message, root="root=", category="category=")
    return ULSADError(message + ".")


def _has_category(spec: DatasetSpec, root: Path, category: str) -> bool:
    if spec.find_categories is not None:
        return category in spec.find_categories(root)
    return spec.is_category(root / category)
