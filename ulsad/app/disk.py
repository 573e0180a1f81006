"""The app's disk budget: uploads and outputs in gradio's cache and the session folders together.

gradio deletes cached files after an hour (`ui.DELETE_CACHE`), but within that hour the files of
a busy public app add up without bound. Before each request that writes, `enforce_budget` deletes
the oldest files (older than a couple of minutes, so none that a running request still reads)
until the total is under `DISK_BUDGET_BYTES`; if that is not enough, the request is refused with
one line, and nothing more is written.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ulsad.errors import ULSADError

log = logging.getLogger(__name__)
DISK_BUDGET_BYTES = 4 * 2**30  # uploads, outputs and sessions' files (fitted models) together
DISK_BUDGET_ENV = "ULSAD_APP_DISK_BUDGET_MB"  # who runs the app may set another budget
MIN_AGE_S = 120.0  # younger files may belong to a request in progress: never deleted here
RECHECK_S = 5.0  # while far below the budget, the folders are walked at most this often
_lock = threading.Lock()
_last: dict[tuple[str, ...], tuple[float, int]] = {}  # folders -> (when walked, total then)


def budget_bytes() -> int:
    """DISK_BUDGET_BYTES, or `ULSAD_APP_DISK_BUDGET_MB` megabytes when set."""
    value = os.environ.get(DISK_BUDGET_ENV, "").strip()
    return int(float(value) * 2**20) if value else DISK_BUDGET_BYTES


def files(folders: Iterable[str | Path]) -> list[tuple[float, int, Path]]:
    """(mtime, size, path) of every file under `folders` (links not followed), oldest first."""
    found = []
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                path = Path(root) / name
                try:
                    stat = path.lstat()
                except OSError:  # removed meanwhile
                    continue
                found.append((stat.st_mtime, stat.st_size, path))
    return sorted(found, key=lambda item: item[0])


def enforce_budget(
    folders: Iterable[str | Path], budget: int | None = None, min_age_s: float = MIN_AGE_S
) -> int:
    """Delete the oldest files under `folders` (each older than `min_age_s`) until they hold at
    most `budget` bytes; returns the bytes still in use. Raises a ULSADError when they still hold
    more (everything left is younger): the request is refused, nothing more is written."""
    budget = budget_bytes() if budget is None else budget
    key = tuple(str(folder) for folder in folders)
    with _lock:  # one sweep at a time
        walked, known = _last.get(key, (-RECHECK_S, 0))
        if time.monotonic() - walked < RECHECK_S and known < budget // 2:
            return known  # far below the budget a moment ago: no walk over every file
        listed = files(key)
        total = sum(size for _, size, _ in listed)
        now, removed = time.time(), 0
        for mtime, size, path in listed:
            if total <= budget or now - mtime < min_age_s:
                break
            try:
                path.unlink()
            except OSError:
                continue
            total -= size
            removed += size
        _last[key] = (time.monotonic(), total)
    if removed:
        log.info("disk budget: removed %.0f MB of old uploads and outputs", removed / 2**20)
    if total > budget:
        raise ULSADError(
            f"The server's disk budget for uploads and results ({budget / 2**30:.1f} GB) is in "
            "use by recent requests: try again in a few minutes."
        )
    return total
