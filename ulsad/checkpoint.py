"""Self-contained checkpoints: `model.safetensors` + `config.json`, written atomically, loaded from a
folder, an embedded default (`weights/manifest.json`) or the Hugging Face Hub. No pickle."""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ulsad.config import ULSADConfig
from ulsad.errors import ULSADError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ulsad.model import ULSAD

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "ulsad-1"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
FULL_PRECISION = ("feature_mean", "feature_std", "map_quantiles", "threshold")


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
    """Write `text` to `path` in one rename (readers see the old or the new file, never half)."""
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


# A Hugging Face Hub repo id: owner/name, letters, digits and . _ -, not starting with . or -
# (huggingface_hub's own rule), at most 96 characters each side.
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def is_hub_repo_id(text: str) -> bool:
    """Whether `text` is a well-formed Hub repo id `owner/name` (no path tricks: no `..`, `--`)."""
    return (
        bool(HUB_REPO_ID.fullmatch(text))
        and ".." not in text
        and "--" not in text
        and not text.endswith((".", ".git"))
    )


def save_pretrained(
    model: ULSAD, directory: str | Path, dtype: torch.dtype = torch.float32
) -> Path:
    """Write the model to `directory`.

    `dtype=torch.float16` halves the size (statistics stay fp32); outputs then deviate by about
    0.1% (relative), so the embedded checkpoints are stored in fp32.
    """
    directory = Path(directory)
    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().cpu()
        if value.is_floating_point() and name not in FULL_PRECISION:
            value = value.to(dtype)
        tensors[name] = value.contiguous()
    config = {"format": FORMAT, **model.config.to_dict()}
    metadata = {"format": FORMAT, "config": json.dumps(config, sort_keys=True)}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    write_text_atomic(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def read_manifest() -> dict[str, Any]:
    """`weights/manifest.json`: embedded checkpoints and the Hub repos where published ones live."""
    path = WEIGHTS_DIR / "manifest.json"
    if not path.is_file():
        return {"default": None, "checkpoints": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def _resolve(path_or_repo_id: str | Path, revision: str | None, local: bool = True) -> Path:
    """A local folder holding the two checkpoint files (downloading them from the Hub if needed).

    `local=False`: only embedded names and Hub repo ids (no folders, nothing about the file system
    in the messages): what a public app accepts from its users."""
    spec = str(path_or_repo_id)
    entry = read_manifest()["checkpoints"].get(spec)
    if local:
        path = Path(path_or_repo_id).expanduser()
        if path.is_dir():
            return path
        if entry is None and path.exists():
            raise ULSADError(f"Checkpoint {spec!r} is a file, not a checkpoint folder.")
    if entry is not None and (WEIGHTS_DIR / entry["path"] / WEIGHTS_NAME).is_file():
        return WEIGHTS_DIR / entry["path"]
    repo_id = entry["hub_repo_id"] if entry is not None else spec
    # A local spec that is not a folder may be a mistyped path as well as a Hub id: say both.
    no_folder = (
        f"Checkpoint {spec!r} not found: no such folder, and " if local and not entry else ""
    )
    if not is_hub_repo_id(repo_id):
        folder = "not a folder, " if local else ""
        raise ULSADError(
            f"Checkpoint {spec!r} not found: {folder}not an embedded checkpoint "
            f"({', '.join(available_checkpoints()) or 'none installed'}), "
            "not a Hub repo id of the form 'owner/name'."
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        files = [
            hf_hub_download(repo_id, name, revision=revision)
            for name in (CONFIG_NAME, WEIGHTS_NAME)
        ]
    except RepositoryNotFoundError as error:
        hub = f"no Hub repo {repo_id!r}" if no_folder else f"Hub repo {repo_id!r} does not exist"
        raise ULSADError(f"{no_folder}{hub} (or it is private: log in).") from error
    except RevisionNotFoundError as error:
        raise ULSADError(f"Hub repo {repo_id!r} has no revision {revision!r}.") from error
    except LocalEntryNotFoundError as error:
        if no_folder:
            raise ULSADError(
                f"{no_folder}the Hub repo {repo_id!r} could not be downloaded (nor found in the "
                "local cache): check the path, or your connection (or HF_HUB_OFFLINE)."
            ) from error
        hint = ", or pass a local checkpoint folder" if local else ""
        raise ULSADError(
            f"Could not download {repo_id!r} from the Hugging Face Hub and it is not in the local "
            f"cache: check your connection (or HF_HUB_OFFLINE){hint}."
        ) from error
    except EntryNotFoundError as error:
        raise ULSADError(
            f"Hub repo {repo_id!r} is not an ULSAD checkpoint: it has no {CONFIG_NAME} or "
            f"{WEIGHTS_NAME}."
        ) from error
    return Path(files[1]).parent


def available_checkpoints() -> list[str]:
    """Names of the embedded checkpoints present in this installation."""
    entries = read_manifest()["checkpoints"]
    return [n for n, e in entries.items() if (WEIGHTS_DIR / e["path"] / WEIGHTS_NAME).is_file()]


def load_pretrained(
    path_or_repo_id: str | Path,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    local: bool = True,
) -> ULSAD:
    """Load a checkpoint written by `save_pretrained` (see `ULSAD.from_pretrained`).

    `local=False` refuses local folders (a public app's users name embedded or Hub checkpoints)."""
    from ulsad.model import ULSAD

    folder = _resolve(path_or_repo_id, revision, local=local)
    spec = str(path_or_repo_id)
    user_folder = local and Path(spec).expanduser().is_dir()

    def shown(path: Path) -> str:  # a downloaded or embedded file is named by its checkpoint
        return str(path) if user_folder else f"{path.name} of checkpoint {spec!r}"

    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            where = folder if user_folder else repr(spec)
            raise ULSADError(f"{where} is not an ULSAD checkpoint: {path.name} is missing.")
    try:
        values = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ULSADError(
            f"{shown(config_path)} is not valid JSON ({error}): re-download it."
        ) from error
    if not isinstance(values, dict) or values.pop("format", None) != FORMAT:
        raise ULSADError(f'{shown(config_path)} is not an ULSAD config (no "format": "{FORMAT}").')
    try:
        config = ULSADConfig.from_dict(values)
    except TypeError as error:  # e.g. a required field missing
        raise ULSADError(f"{shown(config_path)} is not a valid ULSAD config ({error}).") from error
    except ULSADError as error:
        raise ULSADError(f"{shown(config_path)}: {error}") from error
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise ULSADError(
            f"{shown(weights_path)} is corrupt or truncated ({error}): re-download or re-save it."
        ) from error
    try:
        model = ULSAD(config, pretrained_backbone=False)
    except (RuntimeError, ValueError, KeyError) as error:  # e.g. a backbone timm does not know
        raise ULSADError(
            f"{shown(config_path)}: cannot build the model ({type(error).__name__}: {error})."
        ) from error
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in expected if k in tensors and tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ULSADError(
            f"{shown(weights_path)} does not match its config.json (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}): the two files come from "
            "different models."
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return model.to(device).eval()


def push_to_hub(model: ULSAD, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Create `repo_id` if needed and upload the checkpoint; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message="Upload ULSAD")
    return str(info)
