"""Reading images robustly (paths, PIL, numpy, tensors; 16-bit, greyscale, alpha, CMYK, EXIF rotation)
and turning them into the model's input tensor. Training and inference share `to_tensor`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from ulsad.errors import ULSADError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_PIXELS = 256_000_000  # refuse larger images rather than risk running out of memory


def _to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit greyscale
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


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


def load_image(source: Any) -> Image.Image:
    """Any supported input -> an RGB PIL image, upright, 8 bits per channel.

    Accepts a path, raw bytes, a PIL image, a numpy array (HxW, HxWxC or CxHxW; uint8, uint16 or
    float in [0, 1]) or a tensor of the same layouts.
    """
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
    try:
        with opener() as image:
            if image.width * image.height > MAX_PIXELS:
                raise ULSADError(
                    f"{name} is {image.width}x{image.height} pixels, more than the {MAX_PIXELS:,} "
                    "this tool reads: downscale it first."
                )
            image.load()
            return _to_rgb(image)
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
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


def find_images(folder: Path) -> list[Path]:
    """Image files below `folder`, recursively, sorted."""
    return sorted(
        p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
