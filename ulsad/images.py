"""Reading images robustly (paths, PIL, numpy, tensors; 16-bit, greyscale, alpha, CMYK, EXIF rotation)
and turning them into the model's input tensors. Training and inference share `to_tiles`."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from ulsad.errors import ULSADError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "Box",
    "crop_regions",
    "find_images",
    "is_image",
    "load_image",
    "region_fractions",
    "tile_boxes",
    "to_tensor",
    "to_tiles",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_PIXELS = 256_000_000  # refuse larger images rather than risk running out of memory
# Pillow's own decompression-bomb guard refuses ~179 Mpx (twice its default limit), below ulsad's
# documented (and clearer) MAX_PIXELS refusal: raise it to MAX_PIXELS for every caller.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # refused below


def _to_rgb(image: Image.Image, owned: bool = False) -> Image.Image:
    """Upright RGB. `owned`: `image` was decoded here, so it may be changed in place (no copies:
    a large upload then needs its decoded size once, not three times)."""
    if owned and image.getexif().get(ImageOps.ExifTags.Base.Orientation, 1) == 1:
        pass  # upright already
    else:
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit greyscale
        image = _to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image if owned and image.mode == "RGB" else image.convert("RGB")


STRIP_PIXELS = 2**20  # 16-bit / float images are converted this many pixels at a time


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale image -> 8 bits ("L"), scaled by 65535 if any value
    exceeds 255 (else by 255). Converted in strips of rows: beside the 8-bit result only one
    strip's float32 copy is held (whole-image float64 copies took 2.5x the documented memory)."""
    peak = 65535.0 if float(image.getextrema()[1]) > 255 else 255.0
    width, height = image.size
    out = np.empty((height, width), np.uint8)
    rows = max(1, STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        strip = np.asarray(image.crop((0, top, width, min(height, top + rows))), np.float32)
        strip *= 255.0 / peak
        strip += 0.5
        np.clip(strip, 0, 255, out=strip)
        out[top : top + strip.shape[0]] = strip
        del strip
    return Image.fromarray(out)


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ULSADError(f"Expected an HxW, HxWx3 or HxWx4 image array, got shape {array.shape}.")
    if array.dtype == np.uint16:
        array = (array / 257.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ULSADError(
            f"Unsupported image array dtype {array.dtype}: use uint8, uint16 or float."
        )
    return Image.fromarray(np.ascontiguousarray(array))


def load_image(
    source: Any, max_pixels: int | None = None, reduce_to: int | None = None
) -> Image.Image:
    """Any supported input -> an RGB PIL image, upright, 8 bits per channel.

    Accepts a path, raw bytes, a PIL image, a numpy array (HxW, HxWxC or CxHxW; uint8, uint16 or
    float in [0, 1]) or a tensor of the same layouts. Files of more than `max_pixels` (default
    MAX_PIXELS) are refused
    before they are decoded; `reduce_to`: JPEGs are decoded at the smallest 1/2, 1/4 or 1/8 scale
    whose long side stays at least `reduce_to` (less memory); `max_pixels` then applies to the
    reduced size, and the larger of it and MAX_PIXELS to the file's own.
    """
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(source, Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ULSADError(f"Image not found: {path}")
        name, opener = str(path), lambda: Image.open(path)
    elif isinstance(source, bytes):
        name, opener = "uploaded image", lambda: Image.open(io.BytesIO(source))
    else:
        raise ULSADError(f"Cannot read an image from a {type(source).__name__}.")

    def limit_text() -> str:  # one wording for every refusal of this call, whatever the format
        if reduce_to is None or max_pixels >= MAX_PIXELS:
            return f"{max_pixels:,}"
        return f"{max_pixels:,} (a JPEG up to {MAX_PIXELS:,}, decoded at a reduced scale)"

    def too_large(width: int, height: int) -> ULSADError:
        return ULSADError(
            f"{name} is {width}x{height} pixels, more than the {limit_text()} this tool reads: "
            "downscale it first."
        )

    try:
        with opener() as image:
            width, height = image.size
            file_limit = max(max_pixels, MAX_PIXELS) if reduce_to else max_pixels
            if width * height > file_limit:
                raise too_large(width, height)
            if reduce_to is not None and image.format == "JPEG" and max(width, height) > reduce_to:
                scale = reduce_to / max(width, height)
                image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))
            if image.width * image.height > max_pixels:
                raise too_large(width, height)
            image.load()
            return _to_rgb(image, owned=True)
    except Image.DecompressionBombError:  # more than twice Image.MAX_IMAGE_PIXELS
        raise ULSADError(
            f"{name} has more than the {limit_text()} pixels this tool reads: downscale it first."
        ) from None
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
    ) as error:
        if isinstance(error, ULSADError):
            raise
        raise ULSADError(
            f"Cannot read {name}: {error}. Is it a complete PNG, JPEG, BMP or TIFF image?"
        ) from error


def to_tensor(image: Image.Image, size: int) -> Tensor:
    """RGB PIL image -> (3, size, size) float tensor in [0, 1], resized bilinearly (antialiased)."""
    resized = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(resized, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


Box = tuple[int, int, int, int]  # (left, top, right, bottom) in pixels, as PIL's crop


MAX_TILES = 8  # tiles per image: a 1 x 4096 image is not scored as 4,096 tiles (memory, time)


def tile_boxes(width: int, height: int, max_tiles: int = MAX_TILES) -> list[Box]:
    """Square tiles along the long side of an elongated image, so that each is resized to the
    model's input without distortion: as few as cover it, ceil(long / short), evenly spaced
    (overlapping where the long side is not a multiple of the short one), first and last flush
    with the ends.
    Below an aspect ratio of 2: one box, the whole image (a square resize; MVTec LOCO's 1.45 and
    VisA's 1.5 stay whole, so a product's layout is seen at once).
    At most `max_tiles`: more elongated images (past 1:`max_tiles`, e.g. a 1 x 1024 strip) get
    `max_tiles` boxes of long / `max_tiles` each, which the resize stretches across the short
    side, so the work and memory per image stay bounded whatever its shape."""
    short, long = min(width, height), max(width, height)
    if long < 2 * short:
        return [(0, 0, width, height)]
    count = min(math.ceil(long / short), max(1, max_tiles))
    side = max(short, math.ceil(long / count))  # the box's extent along the long side
    if count == 1:
        return [(0, 0, width, height)]
    starts = [round(i * (long - side) / (count - 1)) for i in range(count)]
    if width >= height:
        return [(start, 0, start + side, height) for start in starts]
    return [(0, start, width, start + side) for start in starts]


def to_tiles(image: Image.Image, size: int, tile: bool) -> tuple[Tensor, list[Box]]:
    """The model's inputs for one image: (T, 3, size, size) in [0, 1] and each one's box in the
    image, T <= MAX_TILES. `tile`: tiles of an elongated image (`tile_boxes`); else one square
    resize."""
    boxes = tile_boxes(image.width, image.height) if tile else [(0, 0, image.width, image.height)]
    if len(boxes) == 1:
        return to_tensor(image, size)[None], boxes
    return torch.stack([to_tensor(image.crop(box), size) for box in boxes]), boxes


def region_fractions(boxes: list[Box], width: int, height: int) -> Tensor:
    """(T, 4) float boxes (left, top, right, bottom) as fractions of the image's width and height:
    where each tile lies in the whole image's square resize."""
    return torch.tensor(
        [(x0 / width, y0 / height, x1 / width, y1 / height) for x0, y0, x1, y1 in boxes],
        dtype=torch.float32,
    )


def crop_regions(maps: Tensor, regions: Tensor) -> Tensor:
    """The part of each (N, H, W) map inside its region ((N, 4) fractions, `region_fractions`),
    resampled bilinearly to (H, W): a whole-image map cut to a tile. The whole region
    (0, 0, 1, 1) returns the map unchanged (samples fall on pixel centres)."""
    x0, y0, x1, y1 = regions.to(maps.device, maps.dtype).unbind(1)
    zero = torch.zeros_like(x0)
    theta = torch.stack(
        [
            torch.stack([x1 - x0, zero, x0 + x1 - 1], 1),
            torch.stack([zero, y1 - y0, y0 + y1 - 1], 1),
        ],
        1,
    )
    grid = torch.nn.functional.affine_grid(theta, [len(maps), 1, *maps.shape[1:]], False)
    out = torch.nn.functional.grid_sample(
        maps.unsqueeze(1), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.squeeze(1)


def is_image(path: Path) -> bool:
    """An image file by extension (any case); hidden files such as macOS `._x.png` are not."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def find_images(folder: str | Path, *, recursive: bool = True) -> list[Path]:
    """Sorted image files in `folder` (and below it when `recursive`); none if it does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and is_image(p))
