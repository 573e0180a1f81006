"""Which checkpoints the app offers and loads: the manifest's entries and their examples, what a
user may type (Hub ids; local folders only when allowed), the Hub size check, a small LRU cache
of loaded models, and the thresholds a checkpoint carries."""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ulsad import ULSAD, hub
from ulsad.checkpoint import CONFIG_NAME, read_config
from ulsad.config import ULSADConfig
from ulsad.devices import resolve_device
from ulsad.errors import ULSADError
from ulsad.images import IMAGE_EXTENSIONS
from ulsad.presets import PRESETS

FITTED = "fitted"  # checkpoint choice: the model fitted in this session
MAX_HUB_CHECKPOINT_BYTES = 2**30
# Set to 1 to let users type local checkpoint folders (a local app; never on a public server).
LOCAL_CHECKPOINTS_ENV = "ULSAD_APP_LOCAL_CHECKPOINTS"
THRESHOLD_KINDS = {
    "heldout": "highest held-out good score",
    "f1": "best F1 on synthetic defects",
}


def is_set(variable: str) -> bool:
    """Whether the environment variable is set to a true value (1, true, yes, on)."""
    return os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on")


def checkpoint_choices() -> tuple[list[tuple[str, str]], str | None]:
    """(label, name) of the embedded checkpoints and the default name, from weights/manifest.json.

    Checkpoints listed but not installed stay selectable: they are fetched from their Hub repo.
    """
    manifest = hub.read_manifest()
    installed = set(hub.available_checkpoints())
    choices = [
        (entry.get("title", name) + ("" if name in installed else " (from the Hub)"), name)
        for name, entry in manifest["checkpoints"].items()
    ]
    names = [name for _, name in choices]
    default = manifest.get("default")
    return choices, default if default in names else (names[0] if names else None)


def example_folders(choices: list[tuple[str, str]]) -> Iterator[tuple[str, Path]]:
    """(name, weights/<name>/examples/) of each offered checkpoint in the manifest."""
    offered = {value for _, value in choices}
    for name, entry in hub.read_manifest()["checkpoints"].items():
        if name in offered:
            yield name, hub.WEIGHTS_DIR / entry["path"] / "examples"


def example_rows(choices: list[tuple[str, str]]) -> list[list[str]]:
    """[image, checkpoint] for each image in weights/<name>/examples/ of the offered checkpoints."""
    return [
        [str(path), name]
        for name, folder in example_folders(choices)
        if folder.is_dir()
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    ]


def example_credits(choices: list[tuple[str, str]]) -> str:
    """The attribution texts (weights/<name>/examples/ATTRIBUTION.md, headings dropped)."""
    texts = []
    for _, folder in example_folders(choices):
        if (folder / "ATTRIBUTION.md").is_file():
            lines = (folder / "ATTRIBUTION.md").read_text(encoding="utf-8").splitlines()
            texts.append("\n".join(line for line in lines if not line.startswith("#")).strip())
    return "\n\n".join(text for text in texts if text)


def check_hub_size(repo_id: str) -> None:
    """Refuse Hub checkpoints too large to be ULSAD models before downloading them (online only)."""
    if is_set("HF_HUB_OFFLINE"):
        return
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        size = get_hf_file_metadata(hf_hub_url(repo_id, "model.safetensors"), timeout=10).size
    except Exception:  # unreachable, missing, private: `from_pretrained` reports it clearly
        return
    if size and size > MAX_HUB_CHECKPOINT_BYTES:
        raise ULSADError(f"{repo_id}/model.safetensors is {size / 2**30:.1f} GB: too big to load.")


# What a public app builds from a Hub checkpoint's config.json (checked before its weights are
# downloaded): the presets' backbones and at most their widths, inputs up to 384 px. A config
# may otherwise ask for any size of model (featae_width=6000: +3.3 GB) or of input
# (image_size=2560: 8.6 s per request). Embedded checkpoints (the manifest's) are trusted.
PUBLIC_MAX = {"image_size": 384, "channels": 384, "featae_width": 1536, "global_width": 64}
PUBLIC_MAX_AGGREGATION = 9


def check_public_config(config: ULSADConfig, repo_id: str) -> None:
    """Refuse a Hub checkpoint's config that asks for more than the app builds (`PUBLIC_MAX`)."""
    backbones = sorted({preset.config.backbone for preset in PRESETS.values()})
    if config.backbone not in backbones:
        raise ULSADError(
            f"{repo_id}: backbone {config.backbone!r} is not one this app runs "
            f"({', '.join(backbones)})."
        )
    for field, most in PUBLIC_MAX.items():
        value = getattr(config, field)
        if value > most:
            raise ULSADError(
                f"{repo_id}: {field} {value} is more than this app runs (at most {most}): "
                "score with this checkpoint locally (`ulsad predict`)."
            )
    if max(config.feature_aggregation) > PUBLIC_MAX_AGGREGATION:
        raise ULSADError(
            f"{repo_id}: feature_aggregation {list(config.feature_aggregation)} is more than "
            f"this app runs (at most {PUBLIC_MAX_AGGREGATION})."
        )


def check_hub_config(spec: str) -> None:
    """Download only a Hub checkpoint's config.json and check it (`check_public_config`)."""
    _, repo_id = hub.resolve_checkpoint(spec, local=False)
    if repo_id is None:
        return
    path = hub.download_file(repo_id, CONFIG_NAME, None, {}, local=False)
    config, _ = read_config(path, f"config.json of {spec}")
    check_public_config(config, spec)


class ModelCache:
    """The `maxsize` most recently used checkpoints, loaded once each (thread-safe): requests for
    one checkpoint while it loads wait for that load instead of starting their own."""

    def __init__(self, maxsize: int = 4, device: str | torch.device | None = None):
        self.maxsize, self.device = maxsize, resolve_device(device)
        self._models: OrderedDict[str, ULSAD] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # a lock per checkpoint being loaded
        self.loads = 0  # loads started (tests: concurrent requests for one id load it once)

    def put(self, spec: str, model: ULSAD) -> None:
        """Keep `model` under `spec`, dropping the least recently used beyond `maxsize`."""
        with self._lock:
            self._models[spec] = model
            self._models.move_to_end(spec)
            while len(self._models) > self.maxsize:
                self._models.popitem(last=False)

    def get(self, spec: str, local: bool = True) -> ULSAD:
        """The model of an embedded name, a Hub repo id or (`local`) a checkpoint folder."""
        spec = str(spec).strip()
        if not spec:
            raise ULSADError("No checkpoint chosen: pick one or type a Hub repo id / folder.")
        key = spec if local else f"hub:{spec}"
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per checkpoint at a time; who waited finds it cached
            with self._lock:
                if key in self._models:
                    self._models.move_to_end(key)
                    return self._models[key]
                self.loads += 1
            try:
                model = self._load(spec, local)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
        self.put(key, model)
        return model

    def _load(self, spec: str, local: bool) -> ULSAD:
        """Load outside the cache's lock (may download); a public app's Hub checkpoints are
        checked first: the size of their weights and what their config asks to build."""
        is_hub_id = hub.is_hub_repo_id(spec) and not (local and Path(spec).exists())
        if is_hub_id and spec not in hub.read_manifest()["checkpoints"]:
            check_hub_size(spec)
            if not local:
                check_hub_config(spec)
        return ULSAD.from_pretrained(spec, device=self.device, local=local)


def local_checkpoints_allowed() -> bool:
    """Whether the app's users may name local checkpoint folders (`ULSAD_APP_LOCAL_CHECKPOINTS`)."""
    return is_set(LOCAL_CHECKPOINTS_ENV)


def checkpoint_source(spec: str, offered: Iterable[str]) -> str:
    """How the app may load a user's checkpoint value, checked without touching the file system:
    "offered" (a dropdown entry, set by whoever runs the app), "hub" (an embedded name or a Hub
    repo id `owner/name`), or "local" (any folder, only when `ULSAD_APP_LOCAL_CHECKPOINTS=1`).
    Anything else is refused with one message, whatever exists on the server."""
    spec = str(spec or "").strip()
    if not spec:
        raise ULSADError("No checkpoint chosen: pick one or type a Hub repo id (owner/name).")
    if spec in set(offered):
        return "offered"
    if spec in hub.read_manifest()["checkpoints"] or hub.is_hub_repo_id(spec):
        return "hub"
    if local_checkpoints_allowed():
        return "local"
    raise ULSADError(
        "Unknown checkpoint: choose one from the list, or type a Hugging Face Hub repo id of the "
        "form owner/name (letters, digits, '-', '_', '.')."
    )


def model_threshold(model: ULSAD, kind: str = "heldout") -> float | None:
    """One of the checkpoint's thresholds, None if it has none: `heldout`, the highest score among
    held-out good images (the default); `f1`, the best F1 on synthetic defects pasted onto them."""
    if kind not in THRESHOLD_KINDS:
        raise ULSADError(f"Threshold kind must be one of {sorted(THRESHOLD_KINDS)}, got {kind!r}.")
    value = float(model.threshold if kind == "heldout" else model.threshold_f1)
    return None if math.isnan(value) else value


def describe(model: ULSAD) -> str:
    """One Markdown line about a checkpoint: preset, backbone, input size and thresholds."""
    cfg, threshold = model.config, model_threshold(model)
    shown = f"{threshold:.4f}" if threshold is not None else "none (uncalibrated)"
    f1 = model_threshold(model, "f1")
    other = f"; best F1 on synthetic defects **{f1:.4f}**" if f1 is not None else ""
    return (
        f"`{cfg.preset}` preset, backbone `{cfg.backbone}`, {cfg.image_size} px input; "
        f"default threshold **{shown}** (the highest score among held-out good images){other}."
    )
