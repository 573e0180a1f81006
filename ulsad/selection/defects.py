"""Synthetic defects pasted onto good images: selection data for a user who has no defect images.

A user's held-out good images are the only data besides the training set. Training uses copies of
them with pasted defects, each with its exact mask, to choose what would otherwise be chosen on
test images (the local/global fusion weight, when to stop, an F1 threshold; `ulsad.selection`).

Structural kinds:
- ``cutpaste``: a rectangle of the image, colour-jittered, pasted elsewhere (CutPaste, Li et al.
  2021);
- ``perlin``: a foreign texture blended in under a thresholded Perlin-noise mask (DRAEM, Zavrtanik
  et al. 2021; the texture is another good image, flipped and recoloured, as no texture set ships);
- ``scratch``: a thin bright or dark curved line.

Logical kinds (about the arrangement, not the texture):
- ``missing``: a region of the object replaced by the background colour;
- ``duplicate``: a part of the object copied to another place;
- ``moved``: a part of the object moved (its old place becomes background);
- ``swap``: two salient regions of the same size exchanged (a label on the wrong side);
- ``recolour``: a coherent area (connected, of one colour) given another colour, its texture
  kept (wrong contents, a label of the wrong colour);
- ``erase``: a salient region replaced by the neighbouring band of the image, so it vanishes
  into its surrounding texture instead of leaving a hole (a missing label or part);
- ``fill_level``: the strongest horizontal boundary (a fill level, a lid's edge) moved up or
  down, the band between its old and new place filled from the side that grows.

The first three cut regions on photos; the last four keep every edge plausible (the local
branch sees little), so on a product photo they are what only the global branch can find.

One more logical kind is made on request only:
- ``transplant`` (`DIAGNOSTIC_KINDS`): a region of another good image, registered to this one
  (shifted to lie over it), blended in with feathered edges: every patch is one a good image has
  at that place, only the combination is new (a label of the wrong fruit, a juice of the wrong
  colour). Not in the selection's cycle: on juice_bottle the lite global map alone ranks it
  near chance (image AUROC 0.59) and the local map at 0.94, so it cannot move the fusion weight
  there, while on products that are not aligned it is a nearly normal region that adds noise
  (benchmarks/reports/lite_defaults.md, fifteenth round). `benchmarks.branch_kinds` uses it.

In a scene of separate parts on a plain ground (`parts`), the logical kinds take whole parts:
a part vanishes into the ground, or is copied or (one of two or more) moved onto free ground.
Cutting a region out of a part would leave a new edge that the local branch sees, so the
selection would never learn that some defects only the global branch sees. Elsewhere
(textures, an object that fills the frame) they cut regions as above.

Everything is drawn from `numpy.random.default_rng((seed, index))`: the same seed gives the same
images and masks, and each image is independent of how many others are made. Pixels outside the
mask are never changed.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

__all__ = [
    "DIAGNOSTIC_KINDS",
    "GROUND_DISTANCE",
    "KINDS",
    "LOGICAL_KINDS",
    "STRUCTURAL_KINDS",
    "part_scenes",
    "parts",
    "perlin_noise",
    "synthetic_defects",
]

STRUCTURAL_KINDS = ("cutpaste", "perlin", "scratch")
LOGICAL_KINDS = ("missing", "duplicate", "moved", "swap", "recolour", "erase", "fill_level")
KINDS = STRUCTURAL_KINDS + LOGICAL_KINDS
DIAGNOSTIC_KINDS = ("transplant",)
"""Logical kinds made on request only (`synthetic_defects(kinds=...)`), not in the selection's
cycle: see `transplant` in the module docstring."""
GROUND_DISTANCE = 30.0
"""Summed RGB difference from the background colour beyond which a pixel is not ground."""


def perlin_noise(size: int, cells: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(size, size) 2-D gradient (Perlin) noise with `cells` (rows, cols) lattice cells; ~[-1, 1]."""
    rows, cols = cells
    angles = rng.uniform(0, 2 * np.pi, size=(rows + 1, cols + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y = np.linspace(0, rows, size, endpoint=False)
    x = np.linspace(0, cols, size, endpoint=False)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = yy - y0, xx - x0

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[y0 + dy, x0 + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    wy, wx = fade(fy), fade(fx)
    top = corner(0, 0) * (1 - wx) + corner(0, 1) * wx
    bottom = corner(1, 0) * (1 - wx) + corner(1, 1) * wx
    return np.sqrt(2) * (top * (1 - wy) + bottom * wy)


def _border(image: np.ndarray) -> np.ndarray:
    """(4S, 3) colours of the image's outermost pixels."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def _background_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of the image border: what the scene looks like where there is no object."""
    return np.median(_border(image), axis=0)


def _background_distance(image: np.ndarray) -> np.ndarray:
    """(S, S) L1 distance of each pixel's colour from the background colour."""
    return np.abs(image - _background_colour(image)).sum(axis=-1)


def _foreground_point(image: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A random pixel unlike the background (a random pixel if the image is all texture)."""
    distance = _background_distance(image)
    candidates = np.argwhere(distance > max(GROUND_DISTANCE, np.quantile(distance, 0.5)))
    size = image.shape[0]
    if len(candidates) == 0:
        return int(rng.integers(size)), int(rng.integers(size))
    y, x = candidates[rng.integers(len(candidates))]
    return int(y), int(x)


def _box(
    size: int, rng: np.random.Generator, area: tuple[float, float], centre=None
) -> tuple[int, int, int, int]:
    """A rectangle (top, left, height, width) of the given area fraction range, inside the image."""
    fraction = rng.uniform(*area)
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
    h = int(np.clip(np.sqrt(fraction * aspect) * size, 4, size // 2))
    w = int(np.clip(np.sqrt(fraction / aspect) * size, 4, size // 2))
    if centre is None:
        top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
    else:
        top = int(np.clip(centre[0] - h // 2, 0, size - h))
        left = int(np.clip(centre[1] - w // 2, 0, size - w))
    return top, left, h, w


def _ellipse_mask(size: int, box: tuple[int, int, int, int]) -> np.ndarray:
    top, left, h, w = box
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).ellipse([left, top, left + w - 1, top + h - 1], fill=255)
    return np.asarray(canvas) > 0


def _paste(image: np.ndarray, patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bool mask where `patch` was written into `image` (in place) at a random place."""
    size, (h, w) = image.shape[0], patch.shape[:2]
    top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
    image[top : top + h, left : left + w] = patch
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + h, left : left + w] = True
    return mask


def _cutpaste(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    top, left, h, w = _box(image.shape[0], rng, (0.02, 0.08))
    patch = image[top : top + h, left : left + w].copy()
    patch = np.clip(patch * rng.uniform(0.6, 1.4) + rng.uniform(-40, 40, size=3), 0, 255)
    return _paste(image, patch, rng)


def _perlin(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    for _ in range(10):  # a mask of at least 0.5% of the image
        cells = (2 ** int(rng.integers(1, 5)), 2 ** int(rng.integers(1, 5)))
        mask = perlin_noise(size, cells, rng) > rng.uniform(0.4, 0.6)
        if mask.mean() > 0.005:
            break
    texture = other[::-1, ::-1] if rng.random() < 0.5 else other[:, ::-1]
    texture = np.clip(
        255 - texture if rng.random() < 0.5 else texture * rng.uniform(0.3, 1.7), 0, 255
    )
    opacity = rng.uniform(0.5, 1.0)
    image[mask] = (1 - opacity) * image[mask] + opacity * texture[mask]
    return mask


def _scratch(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    length = rng.uniform(0.15, 0.4) * size
    start = rng.uniform(0.1, 0.9, size=2) * size
    angle = rng.uniform(0, 2 * np.pi)
    bend = rng.uniform(-0.5, 0.5)
    t = np.linspace(0, 1, 24)
    points = [
        (
            start[1] + length * s * np.cos(angle + bend * s),
            start[0] + length * s * np.sin(angle + bend * s),
        )
        for s in t
    ]
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).line(points, fill=255, width=int(rng.integers(2, 5)))
    mask = np.asarray(canvas) > 0
    colour = rng.uniform(200, 255, size=3) if rng.random() < 0.5 else rng.uniform(0, 50, size=3)
    image[mask] = colour
    return mask


def parts(image: np.ndarray) -> list[np.ndarray]:
    """Bool masks (S, S) of the whole parts of a scene of separate parts on a plain ground.

    A part is a connected region of pixels beyond `GROUND_DISTANCE`, 0.5-10% of the image,
    clear of its border, grown by 2 pixels to take its blended rim. There are none unless at
    least 3/4 of the image is ground: on a texture or an object that fills the frame, a
    connected region is an arbitrary blob, not a part."""
    foreground = _background_distance(image) > GROUND_DISTANCE
    if foreground.mean() > 0.25:
        return []
    labels, _ = ndimage.label(foreground, structure=np.ones((3, 3)))
    size, found = image.shape[0], []
    for index, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        inside = rows.start > 0 and cols.start > 0 and rows.stop < size and cols.stop < size
        part = labels == index
        if inside and 0.005 <= part.mean() <= 0.1:
            found.append(ndimage.binary_dilation(part, iterations=2))
    return found


def part_scenes(images: torch.Tensor) -> int:
    """How many of the uint8 `images` (N, 3, S, S) are scenes of separate parts (`parts`): the
    images on which the logical kinds take whole parts."""
    arrays = images.permute(0, 2, 3, 1).numpy().astype(np.float32)
    return sum(1 for image in arrays if parts(image))


def _pick_part(image: np.ndarray, rng: np.random.Generator, least: int = 1) -> np.ndarray | None:
    """One of the image's `parts` at random; None (drawing nothing) if it has fewer than `least`."""
    found = parts(image)
    return found[int(rng.integers(len(found)))] if len(found) >= least else None


def _fill_ground(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Paint `mask` with the ground: its colour and its pixel noise (robust spread of the border)."""
    border = _border(image)
    ground = np.median(border, axis=0)  # `_background_colour`
    spread = 1.4826 * np.median(np.abs(border - ground), axis=0)
    noise = rng.normal(0, 1, size=(int(mask.sum()), 3)) * spread
    image[mask] = np.clip(ground + noise, 0, 255)


def _place_part(
    image: np.ndarray, part: np.ndarray, rng: np.random.Generator, tries: int = 32
) -> np.ndarray | None:
    """Copy the pixels of `part` (a mask) onto free ground, clear of every other part; the mask
    of the copy, or None when no free place was found."""
    rows, cols = np.nonzero(part)
    top, left = rows.min(), cols.min()
    shape = part[top : rows.max() + 1, left : cols.max() + 1]
    taken = ndimage.binary_dilation(_background_distance(image) > GROUND_DISTANCE, iterations=6)
    size, (h, w) = image.shape[0], shape.shape
    for _ in range(tries):
        y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        if not taken[y : y + h, x : x + w][shape].any():
            placed = np.zeros_like(part)
            placed[y : y + h, x : x + w] = shape
            image[placed] = image[top : top + h, left : left + w][shape]
            return placed
    return None


def _missing(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    part = _pick_part(image, rng)
    if part is not None:
        _fill_ground(image, part, rng)
        return part
    size = image.shape[0]
    box = _box(size, rng, (0.02, 0.08), centre=_foreground_point(image, rng))
    mask = _ellipse_mask(size, box)
    noise = rng.normal(0, 3, size=(int(mask.sum()), 3))
    image[mask] = np.clip(_background_colour(image) + noise, 0, 255)
    return mask


def _part(
    image: np.ndarray, rng: np.random.Generator
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    top, left, h, w = box = _box(image.shape[0], rng, (0.02, 0.06), _foreground_point(image, rng))
    return box, image[top : top + h, left : left + w].copy()


def _duplicate(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    part = _pick_part(image, rng)
    placed = None if part is None else _place_part(image, part, rng)
    if placed is not None:
        return placed
    _, patch = _part(image, rng)
    return _paste(image, patch, rng)


def _moved(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    part = _pick_part(image, rng, least=2)  # a lone part's place may vary among good images
    placed = None if part is None else _place_part(image, part, rng)
    if placed is not None:
        _fill_ground(image, part, rng)  # the copy is on free ground, never on `part`
        return placed | part
    (top, left, h, w), patch = _part(image, rng)
    old = np.zeros(image.shape[:2], dtype=bool)
    old[top : top + h, left : left + w] = True
    image[old] = _background_colour(image)
    return _paste(image, patch, rng) | old


def _salient_box(
    image: np.ndarray, rng: np.random.Generator, area: tuple[float, float]
) -> tuple[int, int, int, int]:
    """A box (top, left, height, width) centred on a pixel unlike the background."""
    return _box(image.shape[0], rng, area, _foreground_point(image, rng))


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _object_share(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """The fraction of a box's pixels that are not background (`GROUND_DISTANCE`)."""
    top, left, h, w = box
    distance = np.abs(image[top : top + h, left : left + w] - _background_colour(image)).sum(-1)
    return float((distance > GROUND_DISTANCE).mean())


def _box_mask(size: int, *boxes: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    for top, left, h, w in boxes:
        mask[top : top + h, left : left + w] = True
    return mask


def _swap(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    first = top, left, h, w = _salient_box(image, rng, (0.02, 0.06))
    patch = image[top : top + h, left : left + w]
    best, best_difference = None, -1.0  # the partner of most different content, for a change
    for attempt in range(32):
        y, x = _foreground_point(image, rng) if attempt < 16 else (
            int(rng.integers(size)), int(rng.integers(size)))  # fmt: skip
        second = (
            int(np.clip(y - h // 2, 0, size - h)),
            int(np.clip(x - w // 2, 0, size - w)),
            h,
            w,
        )
        if _overlap(first, second):
            continue
        partner = image[second[0] : second[0] + h, second[1] : second[1] + w]
        # of the object, not the ground: weighted by how much of it is not background
        difference = float(np.abs(partner - patch).mean()) * _object_share(image, second)
        if difference > best_difference:
            best, best_difference = second, difference
    if best is None:  # two opposite corners never overlap (h, w <= size / 2)
        first, best = (0, 0, h, w), (size - h, size - w, h, w)
    (t1, l1, _, _), (t2, l2, _, _) = first, best
    a = image[t1 : t1 + h, l1 : l1 + w].copy()
    image[t1 : t1 + h, l1 : l1 + w] = image[t2 : t2 + h, l2 : l2 + w]
    image[t2 : t2 + h, l2 : l2 + w] = a
    return _box_mask(size, first, best)


def _recolour(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    y, x = _foreground_point(image, rng)
    top, left, h, w = _box(size, rng, (0.04, 0.12), centre=(y, x))
    region = image[top : top + h, left : left + w]
    cy, cx = y - top, x - left
    seed = np.median(region[max(0, cy - 2) : cy + 3, max(0, cx - 2) : cx + 3].reshape(-1, 3), 0)
    distance = np.abs(region - seed).sum(axis=-1)
    similar = distance <= max(45.0, float(np.quantile(distance, 0.3)))
    labels, _ = ndimage.label(similar)
    local = labels == labels[cy, cx] if labels[cy, cx] else similar
    local = ndimage.binary_closing(local, iterations=2) & (local | similar)
    if local.mean() < 0.15:  # no coherent area: an ellipse of the box
        local = _ellipse_mask(size, (top, left, h, w))[top : top + h, left : left + w]
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + h, left : left + w] = local
    pixels = image[mask]
    mean = pixels.mean(axis=0)
    for _ in range(16):  # a colour clearly unlike the area's own
        target = rng.uniform(0, 255, size=3)
        if np.abs(target - mean).sum() > 150:
            break
    image[mask] = np.clip(target + (pixels - mean), 0, 255)
    return mask


def _erase(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    best, best_difference = None, -1.0  # the region that differs most from its neighbourhood
    for _ in range(8):
        box = top, left, h, w = _salient_box(image, rng, (0.02, 0.08))
        sources = [(top - h, left), (top + h, left), (top, left - w), (top, left + w)]
        sources = [(t, lf) for t, lf in sources if 0 <= t <= size - h and 0 <= lf <= size - w]
        if not sources:
            continue
        for t, lf in sources:  # the object's texture around it, unlike the region itself
            difference = float(np.abs(image[t : t + h, lf : lf + w]
                                      - image[top : top + h, left : left + w]).mean())  # fmt: skip
            difference *= _object_share(image, (t, lf, h, w)) ** 2
            if difference > best_difference:
                best, best_difference = (box, (t, lf)), difference
    if best is None:  # boxes are at most half the image: a neighbour always fits
        return _scratch(image, other, rng)
    (top, left, h, w), (t, lf) = best
    image[top : top + h, left : left + w] = image[t : t + h, lf : lf + w].copy()
    return _box_mask(size, (top, left, h, w))


def _fill_level(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    edges = np.abs(np.diff(image.mean(axis=-1), axis=0))  # (S-1, S): between rows r and r+1
    low, high = int(0.15 * size), int(0.85 * size)
    strength = edges[low:high].mean(axis=1)
    candidates = low + np.argsort(strength)[-5:]
    row = int(candidates[rng.integers(len(candidates))]) + 1  # the first row below the boundary
    strong = np.nonzero(edges[row - 1] > 0.5 * edges[row - 1].max())[0]
    left, right = (int(strong.min()), int(strong.max()) + 1) if len(strong) else (0, size)
    if right - left < size // 8:
        left, right = size // 4, 3 * size // 4
    shift = max(2, int(rng.uniform(0.04, 0.12) * size))
    if rng.random() < 0.5:  # the boundary moves down: the band above it grows
        shift = min(shift, size - row, row)
        band = image[row - shift : row, left:right].copy()
        image[row : row + shift, left:right] = band
        return _box_mask(size, (row, left, shift, right - left))
    shift = min(shift, row, size - row)  # the boundary moves up: the band below it grows
    band = image[row : row + shift, left:right].copy()
    image[row - shift : row, left:right] = band
    return _box_mask(size, (row - shift, left, shift, right - left))


def _feather(h: int, w: int) -> np.ndarray:
    """(h, w) blending weights: 1 inside, falling linearly to 0 over the outer quarter of the box,
    so a pasted region has no edge of its own."""
    ramp_y = np.minimum(np.arange(h) + 1, np.arange(h)[::-1] + 1) / max(1.0, h / 4)
    ramp_x = np.minimum(np.arange(w) + 1, np.arange(w)[::-1] + 1) / max(1.0, w / 4)
    return np.clip(np.minimum(ramp_y[:, None], ramp_x[None, :]), 0, 1)[..., None]


def _registered(other: np.ndarray, image: np.ndarray) -> np.ndarray:
    """`other` shifted (by whole pixels, at most an eighth of the size) to lie over `image`: the
    shift that maximises the cross-correlation of their grey levels, computed by FFT."""
    a, b = image.mean(axis=-1), other.mean(axis=-1)
    correlation = np.fft.irfft2(
        np.fft.rfft2(a - a.mean()) * np.conj(np.fft.rfft2(b - b.mean())), a.shape
    )
    size, reach = a.shape[0], a.shape[0] // 8
    shifts = (np.arange(size) + size // 2) % size - size // 2  # index -> signed shift
    allowed = np.abs(shifts) <= reach
    correlation[~allowed, :] = -np.inf
    correlation[:, ~allowed] = -np.inf
    dy, dx = np.unravel_index(int(np.argmax(correlation)), correlation.shape)
    return np.roll(other, (int(shifts[dy]), int(shifts[dx])), axis=(0, 1))


def _transplant(image: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    other = _registered(other, image)
    best, best_difference = None, -1.0  # where the other good image differs most
    for _ in range(8):
        box = top, left, h, w = _salient_box(image, rng, (0.03, 0.10))
        difference = float(np.abs(other[top : top + h, left : left + w]
                                  - image[top : top + h, left : left + w]).mean())  # fmt: skip
        if difference > best_difference:
            best, best_difference = box, difference
    top, left, h, w = best
    alpha = _feather(h, w)
    region = image[top : top + h, left : left + w]
    region[:] = alpha * other[top : top + h, left : left + w] + (1 - alpha) * region
    return _box_mask(image.shape[0], best)


_MAKERS = {
    "cutpaste": _cutpaste,
    "perlin": _perlin,
    "scratch": _scratch,
    "missing": _missing,
    "duplicate": _duplicate,
    "moved": _moved,
    "swap": _swap,
    "recolour": _recolour,
    "erase": _erase,
    "fill_level": _fill_level,
    "transplant": _transplant,
}


def synthetic_defects(
    images: torch.Tensor, count: int, seed: int, kinds: tuple[str, ...] = KINDS
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """`count` defective copies of uint8 `images` (N, 3, S, S), cycling over images and `kinds`.

    Returns uint8 images (count, 3, S, S), bool masks (count, S, S) and the kind of each. The
    mask is exactly the set of pixels that may differ from the source image.
    """
    unknown = set(kinds) - set(_MAKERS)
    if unknown or not kinds:
        raise ValueError(
            f"unknown defect kinds {sorted(unknown)}; choose from {KINDS + DIAGNOSTIC_KINDS}"
        )
    sources = images.permute(0, 2, 3, 1).numpy().astype(np.float32)
    out_images, out_masks, out_kinds = [], [], []
    for index in range(count):
        rng = np.random.default_rng((seed, index))
        kind = kinds[index % len(kinds)]
        source = index % len(sources)
        image = sources[source].copy()
        other = sources[int(rng.integers(len(sources)))]
        if kind in DIAGNOSTIC_KINDS and len(sources) > 1:  # another image, not this one
            other = sources[(source + 1 + int(rng.integers(len(sources) - 1))) % len(sources)]
        mask = _MAKERS[kind](image, other, rng)
        image = np.where(mask[..., None], np.round(image), sources[source])
        out_images.append(torch.from_numpy(image.astype(np.uint8)).permute(2, 0, 1))
        out_masks.append(torch.from_numpy(mask))
        out_kinds.append(kind)
    return torch.stack(out_images), torch.stack(out_masks), out_kinds
