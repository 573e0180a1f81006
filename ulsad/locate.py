"""Where a checkpoint name points, without loading anything: a local folder, an embedded default
(`weights/manifest.json`) or a Hugging Face Hub repo id, and one quick question to the Hub
(`check_hub_repo`) so that a mistyped path fails in a second or two, offline too.

No torch here: the command line answers `ulsad predict --checkpoint runs/typo` before it loads
the model code. Loading is `ulsad.hub`, which uses these functions.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

from ulsad.errors import ULSADError
from ulsad.version import __version__

log = logging.getLogger(__name__)
# A checkpoint's files, as `ulsad.checkpoint` names them (CONFIG_NAME, WEIGHTS_NAME; a test checks
# that they agree): named here too so that this module stays free of torch.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# How long the Hub may take to answer the one request that asks whether a repo exists, unless
# HF_HUB_ETAG_TIMEOUT (huggingface_hub's own timeout for that request) is set: the Hub answers in
# well under a second; an unreachable or silent Hub must not hold a typo for long.
PROBE_TIMEOUT_S = 2.0
# A Hugging Face Hub repo id: owner/name, letters, digits and . _ -, not starting with . or -
# (huggingface_hub's own rule), at most 96 characters each side.
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def default_weights_dir() -> Path:
    """The embedded checkpoints: `ulsad/weights` in an installed wheel (pyproject.toml maps the
    repository's `weights/` there), `weights/` beside the package in a source checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "weights"
    return installed if (installed / "manifest.json").is_file() else here.parent / "weights"


WEIGHTS_DIR = default_weights_dir()


def is_hub_repo_id(text: str) -> bool:
    """Whether `text` is a well-formed Hub repo id `owner/name` (no path tricks: no `..`, `--`)."""
    return (
        bool(HUB_REPO_ID.fullmatch(text))
        and ".." not in text
        and "--" not in text
        and not text.endswith((".", ".git"))
    )


def read_manifest(weights_dir: Path = WEIGHTS_DIR) -> dict[str, Any]:
    """`manifest.json`: embedded checkpoints and the Hub repos where published ones live."""
    path = weights_dir / "manifest.json"
    if not path.is_file():
        return {"default": None, "checkpoints": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def available_checkpoints(weights_dir: Path = WEIGHTS_DIR) -> list[str]:
    """Names of the embedded checkpoints present in this installation."""
    entries = read_manifest(weights_dir)["checkpoints"]
    return [n for n, e in entries.items() if (weights_dir / e["path"] / WEIGHTS_FILE).is_file()]


def resolve_checkpoint(
    spec: str | Path, local: bool = True, weights_dir: Path = WEIGHTS_DIR
) -> tuple[Path | None, str | None]:
    """(local checkpoint folder, None) or (None, Hub repo id) for a folder, embedded name or id.

    `local=False`: only embedded names and Hub repo ids (no folders, nothing about the file system
    in the messages): what a public app accepts from its users."""
    text = str(spec)
    entry = read_manifest(weights_dir)["checkpoints"].get(text)
    if local:
        path = Path(text).expanduser()
        if path.is_dir():
            return path, None
        if entry is None and path.exists():
            raise ULSADError(f"Checkpoint {text!r} is a file, not a checkpoint folder.")
    if entry is not None and (weights_dir / entry["path"] / WEIGHTS_FILE).is_file():
        return weights_dir / entry["path"], None
    repo_id = entry["hub_repo_id"] if entry is not None else text
    if not is_hub_repo_id(repo_id):
        folder = "not a folder, " if local else ""
        names = ", ".join(available_checkpoints(weights_dir)) or "none installed"
        raise ULSADError(
            f"Checkpoint {text!r} not found: {folder}not an embedded checkpoint ({names}), "
            "not a Hub repo id of the form 'owner/name'."
        )
    return None, repo_id


_FOUND: set[tuple[str, str, str | None]] = set()  # (endpoint, repo, revision) answered: it exists


def check_hub_repo(
    repo_id: str,
    revision: str | None = None,
    maybe_folder: bool = False,
    filename: str = CONFIG_FILE,
    **hub: Any,
) -> None:
    """Ask the Hub once, without retries and within `PROBE_TIMEOUT_S`, whether `repo_id` exists;
    raise a one-line ULSADError if it does not or if the Hub cannot be reached.

    A repo already in the local cache is not asked about (it loads offline, as before), nor is one
    asked about before in this process. `maybe_folder`: `repo_id` is what the user typed and
    could be a mistyped folder as well; the message then names both readings. `hub`: the
    `hf_hub_download` arguments (`cache_dir`, `token`, `local_files_only`, `endpoint`).

    Why a separate request: huggingface_hub retries an unreachable Hub five times with backoff
    (about 25 s of "Retrying in 8s" lines) before it says a file is not there; one request that
    must answer quickly says the same for a typo, and a real repo is then downloaded as before."""
    from huggingface_hub import constants, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.file_download import get_hf_file_metadata

    endpoint = hub.get("endpoint") or constants.ENDPOINT
    key = (endpoint, repo_id, revision)
    cached = try_to_load_from_cache(repo_id, filename, hub.get("cache_dir"), revision=revision)
    if key in _FOUND or isinstance(cached, str):
        return
    typo = f"Checkpoint {repo_id!r} not found: no folder {repo_id} here, and"
    if hub.get("local_files_only") or constants.is_offline_mode():
        if not maybe_folder:
            return  # the download says it, without asking the Hub either
        raise ULSADError(
            f"{typo} Hub repo {repo_id!r} is not in the local cache (offline: HF_HUB_OFFLINE "
            "is set)."
        )
    timeout = constants.HF_HUB_ETAG_TIMEOUT
    if timeout == constants.DEFAULT_ETAG_TIMEOUT:
        timeout = PROBE_TIMEOUT_S
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    answer: list[BaseException | None] = []

    def ask() -> None:
        try:
            get_hf_file_metadata(
                url,
                token=hub.get("token"),
                timeout=timeout,
                library_name="ulsad",
                library_version=__version__,
                endpoint=endpoint,
                retry_on_errors=False,
            )
            answer.append(None)
        except Exception as error:
            answer.append(error)

    # In a thread with a deadline: the request's own timeouts do not cover name resolution,
    # which a broken resolver can hold for 5-10 s.
    thread = threading.Thread(target=ask, name="ulsad-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    try:
        if not answer:
            raise TimeoutError(f"no answer within {timeout:g} s")
        if answer[0] is not None:
            raise answer[0]
    except RepositoryNotFoundError as error:
        private = "(if it is private or gated, log in with `hf auth login` or pass a token)"
        if maybe_folder:
            raise ULSADError(f"{typo} no Hub repo {repo_id!r} {private}.") from error
        raise ULSADError(f"Hub repo {repo_id!r} does not exist {private}.") from error
    except RevisionNotFoundError as error:
        raise ULSADError(f"Hub repo {repo_id!r} has no revision {revision!r}.") from error
    except EntryNotFoundError as error:
        raise ULSADError(
            f"Hub repo {repo_id!r} is not an ULSAD checkpoint: it has no {filename}."
        ) from error
    except Exception as error:  # network boundary: no DNS, refused, timed out, 5xx
        reason = (str(error).strip().splitlines() or [""])[0] or type(error).__name__
        if isinstance(error, TimeoutError) or "timed out" in reason.lower():
            reason = f"no answer within {timeout:g} s"
        log.debug("Hub probe of %s failed: %s", url, reason)
        if maybe_folder:
            raise ULSADError(
                f"{typo} the Hub ({endpoint}) could not be asked about repo {repo_id!r} "
                f"({reason}): check the name, or your connection."
            ) from error
        raise ULSADError(
            f"Could not download {repo_id!r} from the Hugging Face Hub ({reason}) and it is not "
            "in the local cache: check your connection (or HF_HUB_OFFLINE)."
        ) from error
    _FOUND.add(key)
