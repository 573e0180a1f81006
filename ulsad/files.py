"""Files: atomic writes (a crash never leaves half a file), their leftovers, and safe text.

Every file ulsad writes (checkpoints, reports, CSVs, training state) goes through `atomic_path`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_path",
    "csv_cell",
    "glob_escape",
    "remove_stale_temporaries",
    "write_text_atomic",
]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")


def csv_cell(text: str) -> str:
    """A text cell that a spreadsheet shows as text: a leading = + - @ (or tab, CR) gets a '."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def remove_stale_temporaries(folder: str | Path, names: list[str]) -> list[Path]:
    """Delete the temporary files `atomic_path` left for `names` in `folder` when a process was
    killed mid-write (SIGKILL, power loss); returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for name in names:
        for stray in folder.glob(f".{glob_escape(name)}.*.tmp"):
            if stray.is_file():
                stray.unlink(missing_ok=True)
                removed.append(stray)
    return removed


def glob_escape(text: str) -> str:
    """`text` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", text)
