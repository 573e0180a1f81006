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

from ulsad.images import crop_regions, load_image, region_fractions, to_tensor, to_tiles
from ulsad.model import ULSADModel, attention
from ulsad.recipe import TrainingRecipe

__all__ = [
    "FeatureCache",
    "Inputs",
    "WholeImages",
    "augmented_copies",
    "backbone_features",
    "build_cache",
    "cache_maps",
    "channel_statistics",
    "load_images",
    "load_inputs",
    "training_count",
    "training_inputs",
]


@dataclass
class FeatureCache:
    """Inputs of the trainable branches, computed once: uint8 images, features, attention target."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    features: torch.Tensor  # (N, C, h, w) standardised
    self_attention: torch.Tensor | None
    # Tiles whose global map comes from their whole image (`ULSADConfig.global_whole_image`).
    whole: WholeImages | None = None
    # (N, 2) bool: whether each input trains the local loss and the global losses (a training
    # set of tiles and whole images, `training_inputs`); None: every input trains all of them.
    loss_masks: torch.Tensor | None = None

    def batch(self, model: ULSADModel, index: torch.Tensor, device: torch.device) -> tuple:
        images = self.images[index].to(device).float().div_(255.0)
        target = None if self.self_attention is None else self.self_attention[index].to(device)
        return self.features[index].to(device), model.extractor.normalize(images), target

    def masks(self, index: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        """The loss masks of a batch (`loss_masks`; an augmented copy's are its original's)."""
        if self.loss_masks is None:
            return None
        return self.loss_masks[index % len(self.loss_masks)].to(device)


@dataclass
class WholeImages:
    """The global branch's inputs when the local branch reads tiles: one whole-image resize per
    image, the whole image of each tile and the tile's region in it."""

    cache: FeatureCache  # (M, ...) whole-image resizes
    source: torch.Tensor  # (N,) long: the whole image of each tile
    regions: torch.Tensor  # (N, 4) float: each tile's region (`ulsad.images.region_fractions`)


@dataclass
class Inputs:
    """Decoded inputs of a set of images: uint8 tiles (N, 3, S, S), and when the global branch
    reads whole images, one whole-image resize per image (M, 3, S, S), each tile's image and its
    region there (`wholes` None: no image was tiled, or whole images were not asked for)."""

    tiles: torch.Tensor
    wholes: torch.Tensor | None = None
    source: torch.Tensor | None = None
    regions: torch.Tensor | None = None


def load_inputs(
    items: Sequence[Any], size: int, progress: bool, desc: str, tile: bool = False,
    whole: bool = False,
) -> Inputs:  # fmt: skip
    """Decode and resize in threads (PIL releases the GIL), as uint8; with `tile`, an elongated
    image gives its square tiles (`ulsad.images.to_tiles`), one after another, and with `whole`
    its whole square resize too (kept only if some image was tiled)."""

    def load(item: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = load_image(item)
        tiles, boxes = to_tiles(image, size, tile)
        whole_image = to_tensor(image, size)[None] if len(boxes) > 1 else tiles[:1]
        as_uint8 = [t.mul(255.0).round_().to(torch.uint8) for t in (tiles, whole_image)]
        return *as_uint8, region_fractions(boxes, image.width, image.height)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        loaded = list(tqdm(pool.map(load, items), total=len(items), desc=desc,
                           disable=not progress, leave=False))  # fmt: skip
    tiles = torch.cat([t for t, _, _ in loaded])
    if not (whole and len(tiles) > len(loaded)):
        return Inputs(tiles)
    counts = torch.tensor([len(t) for t, _, _ in loaded])
    source = torch.repeat_interleave(torch.arange(len(loaded)), counts)
    return Inputs(tiles, torch.cat([w for _, w, _ in loaded]), source,
                  torch.cat([r for _, _, r in loaded]))  # fmt: skip


def _tiled(inputs: Inputs) -> torch.Tensor:
    """(M,) bool: whether each image of `inputs` (which has whole images) was cut into tiles."""
    assert inputs.wholes is not None and inputs.source is not None
    return torch.bincount(inputs.source, minlength=len(inputs.wholes)) > 1


def training_count(inputs: Inputs) -> int:
    """How many inputs `training_inputs` gives (what the step budget counts), without
    building them."""
    if inputs.wholes is None or inputs.source is None:
        return len(inputs.tiles)
    return len(inputs.tiles) + int(_tiled(inputs).sum())


def training_inputs(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The training set of `inputs` and each input's loss masks (local, global): the tiles, which
    train the local loss (and the global ones where the tile is the whole image), then the whole
    images of tiled images, which train the global losses alone. Without whole images: the
    tiles, no masks (every input trains every loss)."""
    if inputs.wholes is None or inputs.source is None:
        return inputs.tiles, None
    tiled = _tiled(inputs)
    tile_masks = torch.stack([torch.ones_like(inputs.source, dtype=torch.bool),
                              ~tiled[inputs.source]], 1)  # fmt: skip
    whole_masks = torch.tensor([[False, True]]).expand(int(tiled.sum()), 2)
    images = torch.cat([inputs.tiles, inputs.wholes[tiled]])
    return images, torch.cat([tile_masks, whole_masks])


def load_images(
    items: Sequence[Any], size: int, progress: bool, desc: str, tile: bool = False
) -> torch.Tensor:
    """The uint8 tiles (N, 3, S, S) of `items` (`load_inputs` without whole images)."""
    return load_inputs(items, size, progress, desc, tile).tiles


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
    inputs: Inputs | None = None,
) -> FeatureCache:
    """Standardised features (and attention target) of `images`; `raw`: their backbone features,
    if already computed. `inputs`: the images' whole images and regions, cached alongside
    (`FeatureCache.whole`) when there are any."""
    if raw is None:
        raw = backbone_features(model, images, device, batch_size, progress)
    features = (raw - model.feature_mean) / model.feature_std
    target = None
    if model.config.global_branch and model.config.attention_loss:
        with torch.no_grad():
            target = torch.cat([attention(f, f) for f in features.split(batch_size)])
    whole = None
    if inputs is not None and inputs.wholes is not None and model.config.global_branch:
        assert inputs.source is not None and inputs.regions is not None
        wholes = build_cache(model, inputs.wholes, device, batch_size, progress)
        whole = WholeImages(wholes, inputs.source, inputs.regions)
    return FeatureCache(images, features, target, whole)


@torch.no_grad()
def cache_maps(
    model: ULSADModel, cache: FeatureCache, batch_size: int = 8
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Blurred, un-normalised local and global maps (N, S, S) of a cached set, on the CPU."""
    model.eval()
    whole = cache.whole if model.global_ae is not None else None
    local_maps, global_maps = [], []
    for index in torch.arange(len(cache.images)).split(batch_size):
        features, normalized, _ = cache.batch(model, index, model.device)
        local_map, global_map = model.raw_maps(features, normalized, whole is None)
        local_maps.append(model.postprocess(local_map).cpu())
        if global_map is not None:
            global_maps.append(model.postprocess(global_map).cpu())
    if whole is not None:  # the whole images' global maps, cut to each tile's region
        whole_global = cache_maps(model, whole.cache, batch_size)[1]
        assert whole_global is not None
        global_maps = [
            crop_regions(whole_global[whole.source[index]], whole.regions[index])
            for index in torch.arange(len(cache.images)).split(batch_size)
        ]
    return torch.cat(local_maps), torch.cat(global_maps) if global_maps else None
