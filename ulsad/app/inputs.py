"""What app users send, checked against the app's limits: uploaded images, zips of images and
numeric arguments. Every refusal is a `ULSADError` that names the file, never a server path."""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from ulsad.errors import ULSADError
from ulsad.images import IMAGE_EXTENSIONS, load_image

MAX_SIDE = 4096  # longer uploads are downscaled before inspection (memory, latency)
MAX_BATCH_IMAGES = 500
MAX_UPLOAD_PIXELS = 64_000_000  # larger uploads are refused before decoding (JPEGs: reduced)
MAX_MEMBER_BYTES = 200 * 2**20  # per image inside an uploaded zip
MAX_UNPACKED_BYTES = 2**30  # everything unpacked from the zips of one request, together
# Zip compression methods Python unpacks: stored, deflate, bzip2, lzma (not Deflate64, 9).
ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}

# An absolute POSIX path (not a URL, not "owner/name"): shown to app users as its last part.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"/:,;()]+/)*([^\s'\"/:,;()]*)")


def scrub_paths(message: str) -> str:
    """`message` with every absolute path replaced by its file name (the app shows no server
    paths)."""
    return ABSOLUTE_PATH.sub(lambda m: m.group(1) or "(path)", message)


def number(value: Any, what: str, low: float, high: float, integer: bool = False) -> float:
    """An API argument as a number in [low, high] (a clear message for text, NaN, out of range)."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ULSADError(f"{what} must be a number, got {str(value)[:40]!r}.") from None
    if not math.isfinite(result) or not low <= result <= high:
        raise ULSADError(f"{what} must be between {low:g} and {high:g}, got {str(value)[:40]}.")
    if integer and result != int(result):
        raise ULSADError(f"{what} must be a whole number, got {str(value)[:40]}.")
    return int(result) if integer else result


def upload_path(value: Any) -> tuple[Path, str]:
    """(path, display name) of an uploaded file: a path, or gradio's FileData (dict or object)."""
    if value is None:
        raise ULSADError("No image given: upload one or pick an example.")
    if isinstance(value, dict):
        path, name = value.get("path"), value.get("orig_name")
    else:
        path, name = getattr(value, "path", value), getattr(value, "orig_name", None)
    if not path:
        raise ULSADError("The upload did not arrive: try again.")
    return Path(path), name or Path(path).name


def load_upload(path: str | Path, name: str | None = None) -> tuple[Image.Image, str | None]:
    """An uploaded image as RGB, downscaled to MAX_SIDE on its long side; (image, notice or None).

    Every problem (not an image, truncated, too many pixels) is a ULSADError naming the file.
    """
    name = name or Path(path).name
    try:
        with Image.open(path) as header:  # the size before a reduced (JPEG) decode
            width, height = header.size
    except Exception:  # not an image: load_image says why
        width = height = 0
    try:
        image = load_image(Path(path), max_pixels=MAX_UPLOAD_PIXELS, reduce_to=MAX_SIDE)
    except ULSADError as error:
        raise ULSADError(scrub_paths(str(error).replace(str(path), name))) from None
    if not width:
        width, height = image.size
    elif (width > height) != (image.width > image.height):  # turned upright by its EXIF tag
        width, height = height, width
    if max(width, height) <= MAX_SIDE:
        return image, None
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.BILINEAR)
    notice = (
        f"{name} is {width}x{height} pixels: downscaled to {image.width}x{image.height} "
        "for inspection."
    )
    return image, notice


def member_problem(member: zipfile.ZipInfo) -> str | None:
    """Why a zip member is not unpacked ("" for OS metadata, left out silently), or None."""
    name = member.filename.replace("\\", "/")
    parts = [part for part in name.split("/") if part and part != "."]  # dir/./c.png: dir/c.png
    if member.is_dir() or not parts:
        return ""
    if any(part.startswith("__MACOSX") for part in parts) or parts[-1].startswith("."):
        return ""  # macOS resource forks, hidden files
    if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in parts:
        return "outside the archive, not unpacked"
    if any(part.startswith(".") for part in parts):
        return ""  # inside a hidden folder
    suffix = Path(parts[-1]).suffix.lower()
    if suffix == ".zip":
        return "a zip inside a zip, not unpacked"
    if suffix not in IMAGE_EXTENSIONS:
        return "not an image"
    if member.file_size > MAX_MEMBER_BYTES:
        return f"over {MAX_MEMBER_BYTES // 2**20} MB"
    if member.flag_bits & 0x1:
        return "encrypted (password-protected), not unpacked: zip it without a password"
    if member.compress_type not in ZIP_METHODS:
        return (
            f"compressed with method {member.compress_type} (e.g. Deflate64), which cannot be "
            "unpacked here: zip it with the standard Deflate method"
        )
    return None


def collect_images(
    files: Iterable[Any],
    workdir: str | Path,
    limit: int,
    budget: int = MAX_UNPACKED_BYTES,
) -> tuple[list[tuple[Path, str]], list[str]]:
    """Uploaded images and zips of images -> ([(path, display name)], ["name: why skipped"]).

    Zip members are extracted under `workdir` with generated names (no path traversal); members
    that are not images, climb out of the archive or are zips themselves are skipped (and named).
    More than `limit` images, or more than `budget` bytes unpacked from all zips together, is an
    error.
    """
    images: list[tuple[Path, str]] = []
    skipped: list[str] = []
    workdir = Path(workdir)
    unpacked = 0

    def add(path: Path, name: str) -> None:
        if len(images) >= limit:
            raise ULSADError(f"Too many images: at most {limit} at a time.")
        images.append((path, name))

    def too_much() -> ULSADError:
        return ULSADError(
            f"The zips unpack to more than {budget / 2**30:g} GB together: upload fewer images."
        )

    for file in files or []:
        path, name = upload_path(file)
        if path.suffix.lower() == ".zip":
            try:
                with zipfile.ZipFile(path) as archive:
                    members = []
                    for member in archive.infolist():
                        problem = member_problem(member)
                        if problem is None:
                            members.append(member)
                        elif problem:
                            skipped.append(f"{name}/{member.filename}: {problem}")
                    if unpacked + sum(m.file_size for m in members) > budget:
                        raise too_much()
                    for member in members:
                        suffix = Path(member.filename).suffix.lower()
                        target = workdir / f"{len(images):05d}{suffix}"
                        add(target, f"{name}/{member.filename}")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with archive.open(member) as source, open(target, "wb") as sink:
                            while chunk := source.read(2**20):  # sizes in headers can lie
                                unpacked += len(chunk)
                                if unpacked > budget:
                                    raise too_much()
                                sink.write(chunk)
            except (
                zipfile.BadZipFile,
                zipfile.LargeZipFile,
                OSError,
                EOFError,
                RuntimeError,  # encrypted members the flag did not announce
                NotImplementedError,  # compression methods zipfile lacks
            ) as error:
                raise ULSADError(f"Cannot read {name} as a zip archive ({error}).") from None
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            add(path, name)
        else:
            skipped.append(f"{name}: not an image")
    return images, skipped
