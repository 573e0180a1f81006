"""Where checkpoints live: a local folder, an embedded default (`weights/manifest.json`) or a
Hugging Face Hub repo; loading by any of these names (`load_pretrained`) and publishing
(`push_folder`, `push_to_hub`). The file format itself is `ulsad.checkpoint`.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import torch

from ulsad import locate
from ulsad.card import EXAMPLE_FIGURE, write_model_card
from ulsad.checkpoint import (
    CARD_NAME,
    CONFIG_NAME,
    TRAINING_NAME,
    WEIGHTS_NAME,
    load_checkpoint,
    read_config,
    save_pretrained,
)
from ulsad.errors import ULSADError
from ulsad.model import ULSADModel
from ulsad.version import __version__

log = logging.getLogger(__name__)
M = TypeVar("M", bound=ULSADModel)


WEIGHTS_DIR = locate.WEIGHTS_DIR  # tests and apps may point it elsewhere
HUB_REPO_ID = locate.HUB_REPO_ID
is_hub_repo_id = locate.is_hub_repo_id


def read_manifest() -> dict[str, Any]:
    """`weights/manifest.json`: embedded checkpoints and the Hub repos where published ones live."""
    return locate.read_manifest(WEIGHTS_DIR)


def download_file(
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


def resolve_checkpoint(spec: str | Path, local: bool = True) -> tuple[Path | None, str | None]:
    """(local checkpoint folder, None) or (None, Hub repo id): `ulsad.locate.resolve_checkpoint`
    over this module's `WEIGHTS_DIR`."""
    return locate.resolve_checkpoint(spec, local=local, weights_dir=WEIGHTS_DIR)


def available_checkpoints() -> list[str]:
    """Names of the embedded checkpoints present in this installation."""
    return locate.available_checkpoints(WEIGHTS_DIR)


def load_pretrained(
    path_or_repo_id: str | Path,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    local: bool = True,
    model_class: type[M] = ULSADModel,  # type: ignore[assignment]
    **hub: Any,
) -> M:
    """Load a checkpoint written by `save_pretrained` as a `model_class` (see
    `ULSAD.from_pretrained`) from a folder, an embedded name or a Hub repo id.

    `hub`: passed to `huggingface_hub.hf_hub_download` for Hub repos (`cache_dir`, `token`,
    `force_download`, `local_files_only`). `revision` (branch, tag or commit) applies to Hub repos.
    `local=False` refuses local folders (a public app's users name embedded or Hub checkpoints).
    """
    spec = str(path_or_repo_id)
    folder, repo_id = resolve_checkpoint(path_or_repo_id, local=local)
    user_folder = local and Path(spec).expanduser().is_dir()

    def shown(path: Path) -> str:  # a downloaded or embedded file is named by its checkpoint
        return str(path) if user_folder else f"{path.name} of checkpoint {spec!r}"

    if repo_id is not None:  # config first: a repo that is not ours fails before a big download
        maybe_folder = local and spec not in read_manifest()["checkpoints"]
        # One quick question first: a typo fails in seconds, not after the download's retries.
        locate.check_hub_repo(repo_id, revision, maybe_folder, CONFIG_NAME, **hub)
        config_path = download_file(repo_id, CONFIG_NAME, revision, hub, maybe_folder, local)
        read_config(config_path, shown(config_path))
        weights_path = download_file(repo_id, WEIGHTS_NAME, revision, hub, local=local)
    else:
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                where = folder if user_folder else repr(spec)
                raise ULSADError(f"{where} is not an ULSAD checkpoint: {path.name} is missing.")
    return load_checkpoint(config_path, weights_path, model_class, shown).to(device)


UPLOAD_PATTERNS = [
    CONFIG_NAME,
    WEIGHTS_NAME,
    CARD_NAME,
    TRAINING_NAME,
    EXAMPLE_FIGURE,
    "eval*.json",
    "examples/*",
]


def write_example_figure(directory: str | Path, model: ULSADModel | None = None) -> Path | None:
    """`directory/example.png` for the model card: one image of `directory/examples/` (the first
    whose name does not start with `good`, else the first) beside its anomaly map overlay, the
    region above the checkpoint's threshold outlined. None (nothing written) without examples.
    `model`: the checkpoint already loaded (default: loaded from `directory`)."""
    from PIL import Image

    from ulsad.files import atomic_path
    from ulsad.images import find_images, load_image
    from ulsad.inference import predict
    from ulsad.visualize import overlay

    directory = Path(directory)
    images = find_images(directory / "examples", recursive=False)
    if not images:
        return None
    chosen = next((p for p in images if not p.name.lower().startswith("good")), images[0])
    model = load_pretrained(directory) if model is None else model
    image = load_image(chosen)
    prediction = predict(model, image)
    shown = overlay(image, prediction.anomaly_map, prediction.threshold)
    height = 256
    width = round(image.width * height / image.height)
    figure = Image.new("RGB", (2 * width + 8, height), "white")
    figure.paste(image.resize((width, height), Image.Resampling.BILINEAR), (0, 0))
    figure.paste(shown.resize((width, height), Image.Resampling.BILINEAR), (width + 8, 0))
    target = directory / EXAMPLE_FIGURE
    with atomic_path(target) as tmp:
        figure.save(tmp, format="PNG", optimize=True)
    log.info("wrote %s (%s and its map)", target, chosen.name)
    return target


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

    directory = Path(directory).expanduser()
    if not is_hub_repo_id(repo_id):
        raise ULSADError(f"Give the Hub repo as 'owner/name', got {repo_id!r}.")
    if not directory.is_dir():
        raise ULSADError(f"{directory} is not a checkpoint folder.")
    model = load_pretrained(directory)
    if not (directory / EXAMPLE_FIGURE).is_file():
        write_example_figure(directory, model)  # the card shows it (if examples/ has an image)
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
    model: ULSADModel,
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
