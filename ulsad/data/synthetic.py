"""A tiny synthetic dataset in the MVTec AD layout: tests, demos and smoke runs without real data.

Good images show a smooth periodic texture (random phase jitter, colour shift and pixel noise)
with a yellow disc at the centre. Defective test images add one anomaly with an exact 0/255 mask:

- ``scratch`` (structural): a thin bright line at a random position and angle;
- ``contamination`` (structural): a filled dark-green ellipse at a random position;
- ``missing_object`` (logical, with ``logical=True``): the centred disc is absent;
- ``misplaced_object`` (logical, with ``logical=True``): the disc is moved off-centre (mask: old and
  new place);
- ``duplicated_object`` (logical, only when named in ``defects``): a second disc beside the first
  (mask: the extra one).

Everything is drawn with numpy from ``seed`` (each image from its own ``(seed, split, index)``
stream), so the output is reproducible and independent of the other counts.

`make_layout_dataset` writes a second kind of category, with logical defects only: two discs of
one colour on a plain ground, where a defect leaves every patch looking normal (the right disc
in another colour, or missing). Only a model that relates distant parts of the image (ULSAD's
global branch) can see them; PatchCore, which compares each patch with normal patches, cannot.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image

from ulsad.errors import ULSADError

STRUCTURAL_DEFECTS = ("scratch", "contamination")
LOGICAL_DEFECTS = ("missing_object", "misplaced_object")
ALL_DEFECTS = (*STRUCTURAL_DEFECTS, *LOGICAL_DEFECTS, "duplicated_object")
LAYOUT_DEFECTS = ("mismatched", "missing")

_BACKGROUND = np.array([110.0, 125.0, 140.0])
_OBJECT = np.array([215.0, 175.0, 40.0])
_SCRATCH = np.array([255.0, 255.0, 250.0])
_CONTAMINATION = np.array([25.0, 85.0, 30.0])
_SPLITS = {"train": 0, "test_good": 1, "test_defect": 2}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return yy, xx


def _disc(size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = _grid(size)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def _background(rng: np.random.Generator, size: int, width: int | None = None) -> np.ndarray:
    """Periodic texture (period size/8) with jittered phase and a global colour shift, ``size``
    high and ``width`` (default: ``size``) wide."""
    yy, xx = np.mgrid[0:size, 0 : width or size].astype(np.float64)
    period = size / 8.0
    px, py = rng.uniform(-0.3, 0.3, size=2)
    tex = np.sin(2 * np.pi * (xx / period + px)) * np.sin(2 * np.pi * (yy / period + py))
    colour = _BACKGROUND + rng.normal(0.0, 4.0, size=3)
    return colour[None, None, :] + 22.0 * tex[..., None]


def _scratch_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A segment of length ~0.45*size and width ~size/32 (at least 2 px) inside the image."""
    yy, xx = _grid(size)
    length = 0.45 * size
    angle = rng.uniform(0, np.pi)
    dy, dx = np.sin(angle), np.cos(angle)
    margin = length / 2 + 2
    cy, cx = rng.uniform(margin, size - margin, size=2)
    # distance of each pixel to the segment centred at (cy, cx)
    t = np.clip((yy - cy) * dy + (xx - cx) * dx, -length / 2, length / 2)
    dist2 = (yy - cy - t * dy) ** 2 + (xx - cx - t * dx) ** 2
    half_width = max(1.0, size / 64.0)
    return dist2 <= half_width**2


def _contamination_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A rotated filled ellipse with semi-axes between size/14 and size/8."""
    yy, xx = _grid(size)
    ay, ax = rng.uniform(size / 14, size / 8, size=2)
    margin = max(ay, ax) + 1
    cy, cx = rng.uniform(margin, size - margin, size=2)
    angle = rng.uniform(0, np.pi)
    u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
    v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
    return (u / ay) ** 2 + (v / ax) ** 2 <= 1.0


def _render(
    rng: np.random.Generator, size: int, defect: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return an RGB uint8 image and the boolean defect mask (all False for a good image)."""
    image = _background(rng, size)
    radius = size / 7
    centre = size / 2 + rng.normal(0.0, size / 200, size=2)  # small jitter of the object
    home = _disc(size, centre[0], centre[1], radius)
    mask = np.zeros((size, size), dtype=bool)
    object_at = home
    if defect == "missing_object":
        object_at = np.zeros_like(home)
        mask = home
    elif defect in ("misplaced_object", "duplicated_object"):
        angle = rng.uniform(0, 2 * np.pi)
        shift = 0.28 * size
        moved = _disc(
            size, centre[0] + shift * np.sin(angle), centre[1] + shift * np.cos(angle), radius
        )
        if defect == "misplaced_object":
            object_at, mask = moved, home | moved
        else:
            object_at, mask = home | moved, moved
    image[object_at] = _OBJECT + rng.normal(0.0, 4.0, size=3)
    if defect == "scratch":
        mask = _scratch_mask(rng, size)
        image[mask] = _SCRATCH
    elif defect == "contamination":
        mask = _contamination_mask(rng, size)
        image[mask] = _CONTAMINATION
    image += rng.normal(0.0, 3.0, size=image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8), mask


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)


def _check_counts(caller: str, n_train: int, n_test_good: int, n_test_defect: int) -> None:
    if n_train < 1 or n_test_good < 0 or n_test_defect < 0:
        raise ULSADError(
            f"{caller}: need n_train >= 1 and non-negative test counts, got "
            f"n_train={n_train}, n_test_good={n_test_good}, n_test_defect={n_test_defect}."
        )


def make_synthetic_dataset(
    root: str | Path,
    category: str = "synthetic",
    *,
    n_train: int = 40,
    n_test_good: int = 10,
    n_test_defect: int = 10,
    size: int = 128,
    seed: int = 0,
    logical: bool = False,
    defects: tuple[str, ...] | None = None,
) -> Path:
    """Write a synthetic category under ``root`` (MVTec AD layout) and return ``root/category``.

    ``n_test_defect`` is the total number of defective test images, spread round-robin over the
    defect types (scratch, contamination, then the logical types when ``logical``). Existing files
    with the same names are overwritten. ``defects`` names the types instead (any of
    ``ALL_DEFECTS``).
    """
    _check_counts("make_synthetic_dataset", n_train, n_test_good, n_test_defect)
    if size < 32:
        raise ULSADError(f"make_synthetic_dataset: size must be at least 32 pixels, got {size}.")
    out = Path(root) / category
    if defects is None:
        defects = STRUCTURAL_DEFECTS + (LOGICAL_DEFECTS if logical else ())
    elif not defects or set(defects) - set(ALL_DEFECTS):
        raise ULSADError(f"make_synthetic_dataset: defects must be among {ALL_DEFECTS}.")

    for i in range(n_train):
        image, _ = _render(np.random.default_rng([seed, _SPLITS["train"], i]), size, None)
        _save(image, out / "train" / "good" / f"{i:03d}.png")
    for i in range(n_test_good):
        image, _ = _render(np.random.default_rng([seed, _SPLITS["test_good"], i]), size, None)
        _save(image, out / "test" / "good" / f"{i:03d}.png")
    for i in range(n_test_defect):
        defect = defects[i % len(defects)]
        rng = np.random.default_rng([seed, _SPLITS["test_defect"], i])
        image, mask = _render(rng, size, defect)
        name = f"{i // len(defects):03d}"
        _save(image, out / "test" / defect / f"{name}.png")
        _save(mask.astype(np.uint8) * 255, out / "ground_truth" / defect / f"{name}_mask.png")
    return out


def _render_layout(
    rng: np.random.Generator, defect: str | None, aspect: int = 1, textured: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """256 px high, ``256 * aspect`` wide: two discs of one colour (random per image), 160 px
    apart (half the width apart when elongated), on a noisy grey or a textured ground; the RGB
    uint8 image and the defect mask (the right disc's place)."""
    size, radius = 256, 22
    width = size * aspect
    gap = 160 if aspect == 1 else width // 2
    yy, xx = np.mgrid[0:size, 0:width].astype(np.float64)
    if textured:  # the periodic texture of `make_synthetic_dataset`
        image = _background(rng, size, width) + rng.normal(0, 6, size=(size, width, 3))
    else:
        image = np.full((size, width, 3), 120.0) + rng.normal(0, 6, size=(size, width, 3))
    mask = np.zeros((size, width), dtype=bool)
    hue = rng.random()
    colour = 255 * np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.9))
    other = 255 * np.array(colorsys.hsv_to_rgb((hue + 0.33 + 0.33 * rng.random()) % 1, 0.8, 0.9))
    for side in (-1, 1):
        x = width // 2 + side * gap // 2 + rng.integers(-3, 4)
        disc = (yy - 128) ** 2 + (xx - x) ** 2 <= radius**2
        if side == 1 and defect is not None:
            mask |= disc
            if defect == "missing":
                continue
        image[disc] = other if side == 1 and defect == "mismatched" else colour
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_layout_dataset(
    root: str | Path,
    category: str = "layout",
    *,
    n_train: int = 40,
    n_test_good: int = 9,
    n_test_defect: int = 18,
    aspect: int = 1,
    textured: bool = False,
) -> Path:
    """Write a category of logical defects only (MVTec AD layout) and return ``root/category``.

    Good images: two discs of one colour (random per image, so every colour is normal), 160 px
    apart, wider than the local branch relates. Defects, alternating: ``mismatched`` (the right
    disc in another colour) and ``missing`` (the right disc gone), masked at the right disc. Each
    image comes from its own ``(split, index)`` stream: reproducible, whatever the counts.
    ``aspect`` (an integer) makes images that many times wider than high, the discs half the
    width apart, so that tiling puts them in different tiles; ``textured`` sets them on the
    periodic texture of `make_synthetic_dataset` instead of a plain grey.
    """
    _check_counts("make_layout_dataset", n_train, n_test_good, n_test_defect)
    if not isinstance(aspect, int) or not 1 <= aspect <= 4:
        raise ULSADError(
            f"make_layout_dataset: aspect must be an integer from 1 to 4, got {aspect!r}"
        )
    out = Path(root) / category
    # (folder, defect, stream, index): each image from its own (stream, index) generator.
    jobs = [("train/good", None, 0, i) for i in range(n_train)]
    jobs += [("test/good", None, 1, i) for i in range(n_test_good)]
    jobs += [
        (f"test/{LAYOUT_DEFECTS[i % 2]}", LAYOUT_DEFECTS[i % 2], 2, i) for i in range(n_test_defect)
    ]
    for folder, defect, stream, i in jobs:
        image, mask = _render_layout(np.random.default_rng((stream, i)), defect, aspect, textured)
        _save(image, out / folder / f"{i:03d}.png")
        if defect is not None:
            _save(mask.astype(np.uint8) * 255, out / "ground_truth" / defect / f"{i:03d}_mask.png")
    return out
