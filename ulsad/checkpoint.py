"""Self-contained checkpoints: `model.safetensors` + `config.json`, written atomically, loaded from a
folder, an embedded default (`weights/manifest.json`) or the Hugging Face Hub. No pickle."""

from __future__ import annotations

import json
import os
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
FULL_PRECISION = ("feature_mean", "feature_std", "map_quantiles", "threshold", "threshold_f1")
OPTIONAL = {"threshold_f1"}  # added after the first release: older checkpoints load without it


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


def _resolve(path_or_repo_id: str | Path, revision: str | None) -> Path:
    """A local folder holding the two checkpoint files (downloading them from the Hub if needed)."""
    local = Path(path_or_repo_id).expanduser()
    if local.is_dir():
        return local
    entry = read_manifest()["checkpoints"].get(str(path_or_repo_id))
    if entry is not None and (WEIGHTS_DIR / entry["path"] / WEIGHTS_NAME).is_file():
        return WEIGHTS_DIR / entry["path"]
    repo_id = entry["hub_repo_id"] if entry is not None else str(path_or_repo_id)
    if (
        local.exists()
        or str(path_or_repo_id).startswith((".", "/", "~"))
        or repo_id.count("/") != 1
    ):
        raise ULSADError(
            f"Checkpoint {str(path_or_repo_id)!r} not found: not a folder, not an embedded "
            f"checkpoint ({', '.join(available_checkpoints()) or 'none installed'}), "
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
        raise ULSADError(f"Hub repo {repo_id!r} does not exist (or is private: log in).") from error
    except RevisionNotFoundError as error:
        raise ULSADError(f"Hub repo {repo_id!r} has no revision {revision!r}.") from error
    except LocalEntryNotFoundError as error:
        raise ULSADError(
            f"Could not download {repo_id!r} from the Hugging Face Hub and it is not in the local "
            "cache: check your connection (or HF_HUB_OFFLINE), or pass a local checkpoint folder."
        ) from error
    except EntryNotFoundError as error:
        raise ULSADError(f"Hub repo {repo_id!r} is not an ULSAD checkpoint: {error}") from error
    return Path(files[1]).parent


def available_checkpoints() -> list[str]:
    """Names of the embedded checkpoints present in this installation."""
    entries = read_manifest()["checkpoints"]
    return [n for n, e in entries.items() if (WEIGHTS_DIR / e["path"] / WEIGHTS_NAME).is_file()]


def load_pretrained(
    path_or_repo_id: str | Path, revision: str | None = None, device: str | torch.device = "cpu"
) -> ULSAD:
    """Load a checkpoint written by `save_pretrained` (see `ULSAD.from_pretrained`)."""
    from ulsad.model import ULSAD

    folder = _resolve(path_or_repo_id, revision)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ULSADError(f"{folder} is not an ULSAD checkpoint: {path.name} is missing.")
    try:
        values = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ULSADError(f"{config_path} is not valid JSON ({error}): re-download it.") from error
    if not isinstance(values, dict) or values.pop("format", None) != FORMAT:
        raise ULSADError(f'{config_path} is not an ULSAD config (no "format": "{FORMAT}").')
    config = ULSADConfig.from_dict(values)
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise ULSADError(
            f"{weights_path} is corrupt or truncated ({error}): re-download or re-save it."
        ) from error
    model = ULSAD(config, pretrained_backbone=False)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors) - OPTIONAL)
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in expected if k in tensors and tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ULSADError(
            f"{weights_path} does not match its config.json (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, wrong shape {wrong[:3]}): the two files come from different models."
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=False)
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
