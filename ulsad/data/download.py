"""Optional dataset downloads: resumable, checksum-verified, safely extracted, idempotent.

``download(dataset)`` fetches the official archive into a cache folder (``$ULSAD_DATA`` or
``~/.cache/ulsad/datasets``), resuming a partial ``.part`` file with an HTTP Range request,
verifies its sha256 (digests as published by anomalib; logged when unknown), extracts it (tar or
zip, rejecting members that would land outside the destination) and returns the dataset root
(the ``root`` of ``load_split`` and ``make_jobs``). A second call returns at once. Standard
library and tqdm only; steps are logged (``logging``), and ``progress=True`` shows the bytes
downloaded as a bar on stderr (multi-GB archives take minutes).

MVTec AD and MVTec LOCO AD are downloaded only with ``accept_licence=True``: MVTec asks users to
accept the licence (CC BY-NC-SA 4.0) on the dataset page first. MPDD has no direct link (OneDrive).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import urlparse

from ulsad.errors import ULSADError

log = logging.getLogger(__name__)
CHUNK = 1 << 20
ROOT_OPTION = "root"  # how a Python caller names the dataset root (`{root}` in messages)
MARKER = ".ulsad_complete"


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from and what its archive holds."""

    title: str
    page: str  # the human-readable download page
    licence: str
    url: str | None = None  # direct archive link; None when only a manual download exists
    sha256: str | None = None  # expected digest of the archive; None when unknown
    subdir: str = ""  # folder inside the extracted archive that is the dataset root
    needs_licence: bool = False  # the provider asks users to accept the licence first


SOURCES: dict[str, Source] = {
    "mvtec_ad": Source(
        "MVTec AD",
        "https://www.mvtec.com/research-teaching/datasets/mvtec-ad",
        "CC BY-NC-SA 4.0",
        "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f283/download/"
        "420938113-1629960298/mvtec_anomaly_detection.tar.xz",
        "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
        needs_licence=True,
    ),
    "mvtec_loco": Source(
        "MVTec LOCO AD",
        "https://www.mvtec.com/research-teaching/datasets/mvtec-loco-ad",
        "CC BY-NC-SA 4.0",
        "https://www.mydrive.ch/shares/48237/1b9106ccdfbb09a0c414bd49fe44a14a/download/"
        "430647091-1646842701/mvtec_loco_anomaly_detection.tar.xz",
        "9e7c84dba550fd2e59d8e9e231c929c45ba737b6b6a6d3814100f54d63aae687",
        needs_licence=True,
    ),
    "visa": Source(
        "VisA",
        "https://github.com/amazon-science/spot-diff",
        "CC BY 4.0 (see LICENSE-DATASET in the archive)",
        "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
        "2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
    ),
    "btad": Source(
        "BTAD",
        "https://github.com/pankajmishra000/VT-ADL",
        "CC BY-SA 4.0",
        "https://avires.dimi.uniud.it/papers/btad/btad.zip",
        "461c9387e515bfed41ecaae07c50cf6b10def647b36c9e31d239ab2736b10d2a",
        subdir="BTech_Dataset_transformed",
    ),
    "mpdd": Source("MPDD", "https://github.com/stepanje/MPDD", "CC BY-NC-SA 4.0"),
}


def default_cache() -> Path:
    """``$ULSAD_DATA`` if set, else ``~/.cache/ulsad/datasets``."""
    return Path(os.environ.get("ULSAD_DATA") or "~/.cache/ulsad/datasets").expanduser()


def download(
    dataset: str,
    dest: str | Path | None = None,
    *,
    accept_licence: bool = False,
    progress: bool = False,
) -> Path:
    """Download and extract ``dataset`` under ``dest/<dataset>``; return the dataset root.

    ``progress``: a bar of the bytes downloaded on stderr (the command line's, on a terminal)."""
    if dataset not in SOURCES:
        raise ULSADError(
            f"no download for '{dataset}'; downloadable datasets: {', '.join(SOURCES)}."
        )
    source = SOURCES[dataset]
    target = Path(dest).expanduser() if dest is not None else default_cache()
    target = target / dataset
    root = target / source.subdir if source.subdir else target
    if (target / MARKER).is_file():
        return root
    if source.url is None:
        raise ULSADError(
            f"{source.title} has no direct download link: download it by hand from "
            f"{source.page} ({source.licence}), extract it and pass it as {{root}}.",
            root=ROOT_OPTION,
        )
    if source.needs_licence and not accept_licence:
        raise ULSADError(
            f"{source.title} is licensed {source.licence} and MVTec asks you to accept its licence "
            f"at {source.page}: read it there, then download it by hand and pass it as {{root}}, or "
            "accept it here with {accept_licence}.",
            root=ROOT_OPTION,
            accept_licence="accept_licence=True",
        )
    if target.exists():
        raise ULSADError(
            f"{target} exists but is not a finished download: if it holds the dataset, pass it "
            "as {root}; otherwise delete it and retry.",
            root=ROOT_OPTION,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    name = PurePosixPath(urlparse(source.url).path).name or f"{dataset}.archive"
    archive = target.parent / name
    fetch(source.url, archive, sha256=source.sha256, page=source.page, progress=progress)
    log.info("extracting %s -> %s", archive.name, target)
    extract(archive, target)
    (target / MARKER).write_text(f"{source.url}\n", encoding="utf-8")
    archive.unlink()
    return root


def fetch(
    url: str,
    path: Path,
    *,
    sha256: str | None,
    page: str,
    timeout: float = 30.0,
    progress: bool = False,
) -> Path:
    """Download ``url`` to ``path`` through ``path.part``, resuming it; verify ``sha256``.
    ``progress``: show the bytes as a tqdm bar on stderr.

    On a checksum mismatch the partial file is deleted and ULSADError raised; with no expected
    digest the computed one is logged (a warning) so that it can be recorded.
    """
    if path.is_file():
        return path
    part = path.with_name(path.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "ulsad"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            mode = "ab" if offset and response.status == 206 else "wb"
            log.info("downloading %s -> %s", url, path)
            with part.open(mode) as out:
                copy(response, out, offset if mode == "ab" else 0, progress, path.name)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:  # 416: the .part file is already complete
            raise _unreachable(url, page, f"HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _unreachable(url, page, str(reason)) from exc
    digest = file_sha256(part)
    if sha256 is None:
        log.warning("sha256 of %s: %s (no published digest to compare)", path.name, digest)
    elif digest != sha256.lower():
        part.unlink()
        raise ULSADError(
            f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest}; the file was "
            f"deleted: run again, or download it by hand from {page} and pass it as {{root}}.",
            root=ROOT_OPTION,
        )
    part.replace(path)
    return path


def copy(response: Any, out: BinaryIO, done: int, progress: bool, name: str) -> None:
    """Copy the body of ``response`` to ``out`` in chunks; with ``progress``, a bar of bytes
    (its total from Content-Length, plus the ``done`` bytes of a resumed file)."""
    if not progress:
        shutil.copyfileobj(response, out, CHUNK)
        return
    from tqdm import tqdm

    length = response.headers.get("Content-Length")
    total = done + int(length) if length and length.isdigit() else None
    with tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
              desc=name, file=sys.stderr) as bar:  # fmt: skip
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
            bar.update(len(block))


def _unreachable(url: str, page: str, reason: str) -> ULSADError:
    return ULSADError(
        f"could not reach {url} ({reason}); download it by hand from {page} and pass it as {{root}}.",
        root=ROOT_OPTION,
    )


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_member(name: str, archive: Path) -> None:
    """Reject absolute names and ``..`` components: they would write outside the destination."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise ULSADError(
            f"{archive} holds an unsafe member '{name}' (it would be written outside the "
            "destination); nothing was extracted: download it again from the official page."
        )


def extract(archive: Path, dest: Path) -> None:
    """Extract a tar (any compression) or zip archive into a new folder ``dest``, all or nothing."""
    tmp = dest.with_name(dest.name + ".extracting")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    _check_member(name, archive)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for member in members:
                    _check_member(member.name, archive)
                    if member.issym() or member.islnk():
                        _check_member(member.linkname, archive)
                    elif not (member.isfile() or member.isdir()):
                        raise ULSADError(
                            f"{archive} holds a special file '{member.name}'; nothing was "
                            "extracted: download it again from the official page."
                        )
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, members=members, filter="data")
                else:  # Python without extraction filters: members were checked above
                    tf.extractall(tmp, members=members)
        else:
            raise ULSADError(f"{archive} is neither a tar nor a zip archive; delete it and retry.")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ULSADError(f"cannot extract {archive} ({exc}); delete it and retry.") from exc
    except ULSADError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(dest)
