"""One browser session's state: its folder (created on first use, swept once unused), the model
fitted in it, its Stop flag, and which model it means when it names a checkpoint."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ulsad import ULSAD
from ulsad.app.checkpoints import FITTED, ModelCache, checkpoint_source
from ulsad.errors import ULSADError

SESSION_TTL_S = 4 * 3600  # a session folder unused this long is deleted (API clients never close)
SESSION_SWEEP_EVERY_S = 60

log = logging.getLogger(__name__)
_last_sweep = [0.0]
_sweep_lock = threading.Lock()


def session_root() -> Path:
    """The folder holding every session's folder (one per app process user)."""
    return (
        Path(tempfile.gettempdir())
        / f"ulsad-app-sessions-{os.getuid() if hasattr(os, 'getuid') else 0}"
    )


def sweep_sessions(ttl_s: float = SESSION_TTL_S, force: bool = False) -> list[Path]:
    """Delete session folders unused for `ttl_s` seconds (at most once a minute unless `force`):
    browser sessions end with the tab, API clients' sessions never do."""
    now = time.time()
    with _sweep_lock:
        if not force and now - _last_sweep[0] < SESSION_SWEEP_EVERY_S:
            return []
        _last_sweep[0] = now
    removed = []
    root = session_root()
    for folder in root.glob("ulsad-app-*") if root.is_dir() else []:
        try:
            idle = now - folder.stat().st_mtime
        except OSError:
            continue
        if folder.is_dir() and idle > ttl_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("removed %d idle session folder(s)", len(removed))
    return removed


@dataclass
class Session:
    """Per-browser-session state: plain data, since gradio gives each session a deep copy.

    `fitted`: folder of the model fitted in this session; `stop`: set by the Stop button;
    `choices`: the checkpoint dropdown's entries; `workdir`: created on first use, removed by
    `cleanup` when the session ends, or by `sweep_sessions` once unused for SESSION_TTL_S.
    """

    fitted: Path | None = None
    stop: bool = False
    choices: list[tuple[str, str]] = field(default_factory=list)
    _workdir: Path | None = None

    @property
    def workdir(self) -> Path:
        """This session's folder (re-created if it expired); using it keeps it alive."""
        sweep_sessions()
        if self._workdir is None or not self._workdir.is_dir():
            root = session_root()
            root.mkdir(mode=0o700, exist_ok=True)
            self._workdir = Path(tempfile.mkdtemp(prefix="ulsad-app-", dir=root))
        self.touch()
        return self._workdir

    def touch(self) -> None:
        """Mark the session folder as in use (long fits call this every epoch)."""
        if self._workdir is not None:
            with contextlib.suppress(OSError):
                os.utime(self._workdir)

    def cleanup(self) -> None:
        """The session ended: stop its fit and delete its folder."""
        self.stop = True
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def model(self, checkpoint: str | None, custom: str | None, cache: ModelCache) -> ULSAD:
        """The chosen model: the free-text Hub id if given, else the dropdown's choice.

        Accepted: the dropdown's entries, this session's fitted model, embedded names and Hub
        repo ids; local folders only with ULSAD_APP_LOCAL_CHECKPOINTS=1 (`checkpoint_source`)."""
        spec = (custom or "").strip() or str(checkpoint or "").strip()
        if spec == FITTED:
            if self.fitted is None or not self.fitted.is_dir():
                raise ULSADError(
                    "No model fitted in this session yet (or it expired after "
                    f"{SESSION_TTL_S // 3600} h unused): use the 'Fit your own' tab."
                )
            self.touch()
            return cache.get(str(self.fitted))
        source = checkpoint_source(spec, [value for _, value in self.choices])
        return cache.get(spec, local=source != "hub")
