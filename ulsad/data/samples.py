"""What dataset loaders return (``Sample``), how ground truth is read, and shared file helpers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ulsad.errors import ULSADError
from ulsad.images import IMAGE_EXTENSIONS, find_images

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Sample:
    """One image of a split with its label and (for defective images) its ground-truth masks."""

    path: Path
    label: int  # 0 good, 1 anomalous
    defect: str  # "good" or the defect type (folder name)
    mask_paths: tuple[Path, ...] = ()  # empty for good images or when the dataset ships no masks
    group: str = ""  # MVTec LOCO: "logical" | "structural"; "" otherwise
    saturation_thresholds: tuple[float, ...] = ()  # MVTec LOCO only, aligned with mask_paths


def list_images(folder: Path, *, required: bool = True) -> list[Path]:
    """Sorted image files directly in `folder`; if `required`, finding none is an error."""
    images = find_images(folder, recursive=False)
    if required and not images:
        what = "has no images" if folder.is_dir() else "does not exist"
        raise ULSADError(
            f"{folder} {what} (expected {', '.join(IMAGE_EXTENSIONS)} files); check the dataset "
            "root and its layout."
        )
    return images


def subfolders(folder: Path) -> list[Path]:
    """Sorted non-hidden sub-directories of ``folder`` (empty if it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def index_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` keyed by file stem, to match masks whatever their extension."""
    return {p.stem: p for p in list_images(folder, required=False)}


def read_mask_array(path: Path) -> np.ndarray:
    """A mask file as a 2-D array of its stored values (palette indices kept, alpha dropped)."""
    try:
        with Image.open(path) as img:
            if img.mode in ("LA", "PA"):
                img = img.getchannel(0)
            elif img.mode == "RGBA":
                img = img.convert("RGB")
            array = np.asarray(img)
    except (OSError, UnidentifiedImageError) as exc:
        raise ULSADError(
            f"cannot read mask {path} ({exc}); re-extract the dataset or remove it."
        ) from exc
    return array.max(axis=2) if array.ndim == 3 else array


def read_mask(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """One mask file as bool (any stored value > 0, alpha ignored), nearest-resized to `shape`."""
    mask = read_mask_array(path) > 0
    return mask if shape is None or mask.shape == tuple(shape) else _resize(mask, shape)


def load_mask(sample: Sample, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean union of the sample's masks (any value > 0), resized (nearest) to ``shape`` = (h, w).

    Good samples and samples without masks give an all-False array of ``shape`` (or of the image's
    size when ``shape`` is None).
    """
    union: np.ndarray | None = None
    for path in sample.mask_paths:
        mask = read_mask(path)
        if union is not None and mask.shape != union.shape:
            mask = _resize(mask, union.shape)
        union = mask if union is None else union | mask
    if union is None:
        if shape is None:
            with Image.open(sample.path) as img:
                shape = (img.height, img.width)
        return np.zeros(shape, dtype=bool)
    return union if shape is None or union.shape == tuple(shape) else _resize(union, shape)


def _resize(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.NEAREST)) > 0
