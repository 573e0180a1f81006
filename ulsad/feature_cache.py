"""What the trainable branches read, computed once: images as uint8, their standardised backbone
features and the self-attention target.

The backbone is frozen, so its features (and the self-attention target, which depends on them
alone) are computed once per image and per augmented copy; an epoch then costs only the two
trainable branches. Training (`ulsad.train`) and model selection (`ulsad.selection`) both read
these caches; benchmarks time the same pieces.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ulsad.images import load_image, to_tiles
from ulsad.model import ULSADModel, attention
from ulsad.recipe import TrainingRecipe

__all__ = [
    "FeatureCache",
    "augmented_copies",
    "backbone_features",
    "build_cache",
    "cache_maps",
    "channel_statistics",
    "load_images",
]


@dataclass
class FeatureCache:
    """Inputs of the trainable branches, computed once: uint8 images, features, attention target."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    features: torch.Tensor  # (N, C, h, w) standardised
    self_attention: torch.Tensor | None

    def batch(self, model: ULSADModel, index: torch.Tensor, device: torch.device) -> tuple:
        images = self.images[index].to(device).float().div_(255.0)
        target = None if self.self_attention is None else self.self_attention[index].to(device)
        return self.features[index].to(device), model.extractor.normalize(images), target


def load_images(
    items: Sequence[Any], size: int, progress: bool, desc: str, tile: bool = False
) -> torch.Tensor:
    """Decode and resize in threads (PIL releases the GIL), cached as uint8 (N, 3, S, S); with
    `tile`, an elongated image gives its square tiles (`ulsad.images.to_tiles`), one after another."""

    def load(item: Any) -> torch.Tensor:
        return to_tiles(load_image(item), size, tile)[0].mul_(255.0).round_().to(torch.uint8)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        loaded = pool.map(load, items)
        tensors = list(tqdm(loaded, total=len(items), desc=desc, disable=not progress, leave=False))
    return torch.cat(tensors)


@torch.no_grad()
def backbone_features(
    model: ULSADModel, images: torch.Tensor, device: torch.device, batch_size: int, progress: bool
) -> torch.Tensor:
    chunks = []
    for start in tqdm(
        range(0, len(images), batch_size),
        desc="backbone features",
        disable=not progress,
        leave=False,
    ):
        batch = images[start : start + batch_size].to(device).float().div_(255.0)
        chunks.append(model.extractor(model.extractor.normalize(batch)))
    return torch.cat(chunks)


def augmented_copies(images: torch.Tensor, recipe: TrainingRecipe, seed: int) -> torch.Tensor:
    """`recipe.augment_copies` random rotations/mirrors of uint8 `images` (N, 3, S, S), stacked
    copy after copy. Rotation reflect-pads first, so no blank corners enter the training set."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2.functional import rotate

    generator = torch.Generator().manual_seed(seed)
    size = images.shape[-1]
    pad = math.ceil(size * (math.sqrt(2) - 1) / 2)
    made = []
    for _ in range(recipe.augment_copies):
        angles = (torch.rand(len(images), generator=generator) * 2 - 1) * recipe.augment_rotation
        flip = 0.5 if recipe.augment_flip else 0
        mirror = torch.rand(len(images), generator=generator) < flip
        for image, angle, mirrored in zip(images, angles.tolist(), mirror.tolist(), strict=True):
            padded = torch.nn.functional.pad(image[None].float(), [pad] * 4, mode="reflect")
            turned = rotate(padded, angle, InterpolationMode.BILINEAR)[0, :, pad:-pad, pad:-pad]
            made.append((turned.flip(-1) if mirrored else turned).round().to(torch.uint8))
    return torch.stack(made) if made else images[:0]


def channel_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std over images and positions, accumulated in float64."""
    flat = features.transpose(0, 1).reshape(features.shape[1], -1).double()
    mean = flat.mean(dim=1)
    std = (flat.pow(2).mean(dim=1) - mean.pow(2)).clamp_min(0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)


def build_cache(
    model: ULSADModel,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int,
    progress: bool,
    raw: torch.Tensor | None = None,
) -> FeatureCache:
    """Standardised features (and attention target) of `images`; `raw`: their backbone features,
    if already computed."""
    if raw is None:
        raw = backbone_features(model, images, device, batch_size, progress)
    features = (raw - model.feature_mean) / model.feature_std
    target = None
    if model.config.global_branch and model.config.attention_loss:
        with torch.no_grad():
            target = torch.cat([attention(f, f) for f in features.split(batch_size)])
    return FeatureCache(images, features, target)


@torch.no_grad()
def cache_maps(
    model: ULSADModel, cache: FeatureCache, batch_size: int = 8
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Blurred, un-normalised local and global maps (N, S, S) of a cached set, on the CPU."""
    model.eval()
    local_maps, global_maps = [], []
    for index in torch.arange(len(cache.images)).split(batch_size):
        features, normalized, _ = cache.batch(model, index, model.device)
        local_map, global_map = model.raw_maps(features, normalized)
        local_maps.append(model.postprocess(local_map).cpu())
        if global_map is not None:
            global_maps.append(model.postprocess(global_map).cpu())
    return torch.cat(local_maps), torch.cat(global_maps) if global_maps else None
