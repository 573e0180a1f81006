"""Training: cached frozen features, Adam with the config's schedule, held-out calibration,
synthetic-defect validation, resumable.

The backbone is frozen, so its features (and the self-attention target, which depends on them
alone) are computed once, for every image and for its augmented copies if any; an epoch then
costs only the two trainable branches. Map quantiles and the default threshold come from good
images held out of the TRAINING folder (or the dataset's own validation split), never from test
images. `train` strings together small public pieces (`training_data`, `prepare_sets`,
`make_optimizer`, `run_epoch` / `train_step`, `EpochChoice`, `pruned_after`, `save_state` /
`load_state`, `calibrate`) that benchmarks and notebooks reuse. The schedule is the model's
config alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ulsad.checkpoint import (
    CONFIG_NAME,
    TRAINING_NAME,
    WEIGHTS_NAME,
    round_to_storage,
    save_pretrained,
)
from ulsad.config import ULSADConfig
from ulsad.devices import native_bfloat16, resolve_device
from ulsad.errors import ULSADError
from ulsad.files import atomic_path, remove_stale_temporaries, write_text_atomic
from ulsad.images import find_images, load_image, to_tiles
from ulsad.model import ULSADModel, attention
from ulsad.synthetic_defects import part_scenes, synthetic_defects
from ulsad.validation import (
    FUSION_WEIGHTS,
    ValidationMaps,
    best_weight,
    f1_threshold,
    fusion_table,
    map_quantiles,
)

log = logging.getLogger(__name__)
STATE_NAME = "train_state.pt"
# An earlier epoch is kept only if it beats the later ones on synthetic defects by more than
# this: between epochs of one run the score moves by ~0.001 (7 runs on metal_plate, bottle and
# commutator), so smaller differences are noise, and the later, longer-trained model is kept.
STOP_TOLERANCE = 0.005
# The global branch stops training when its best fusion weight beats the local map alone by less
# than this. Both scores come from the same maps, so this is a tie, not epoch-to-epoch noise: on
# metal_plate, bottle and commutator (9 models) the global map's gain was at most 0.0002; on the
# synthetic layout set (`ulsad.data.make_layout_dataset`), where it matters, 0.0049-0.0075 at every
# validation point, and STOP_TOLERANCE cut it there.
PRUNE_TOLERANCE = 0.001
EpochCallback = Callable[[int, int, float, float], Any]


def good_training_images(
    data: Any, category: str | None, dataset: str
) -> tuple[list[Any], list[Any]]:
    """(train, validation) good images: a dataset root + category, a folder, or a list of images."""
    if isinstance(data, (list, tuple)):
        return list(data), []
    root = Path(data)
    if category is None:
        if not root.is_dir():
            raise ULSADError(f"Training folder not found: {root}")
        images = find_images(root)
        if not images:
            raise ULSADError(f"No images (.png/.jpg/.jpeg/.bmp/.tif) found under {root}.")
        return images, []
    from ulsad.data import load_split

    train = [s.path for s in load_split(dataset, root, category, "train") if s.label == 0]
    validation = [s.path for s in load_split(dataset, root, category, "validation") if s.label == 0]
    return train, validation


def split_holdout(items: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Deterministic (train, held-out) split; at least one image on each side."""
    if len(items) < 2:
        raise ULSADError(f"Need at least 2 good training images, got {len(items)}.")
    n_val = min(len(items) - 1, max(1, round(len(items) * fraction)))
    order = np.random.default_rng(seed).permutation(len(items))
    held_out = set(order[:n_val].tolist())
    return (
        [x for i, x in enumerate(items) if i not in held_out],
        [x for i, x in enumerate(items) if i in held_out],
    )


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


def augmented_copies(images: torch.Tensor, config: ULSADConfig, seed: int) -> torch.Tensor:
    """`config.augment_copies` random rotations/mirrors of uint8 `images` (N, 3, S, S), stacked
    copy after copy. Rotation reflect-pads first, so no blank corners enter the training set."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2.functional import rotate

    generator = torch.Generator().manual_seed(seed)
    size = images.shape[-1]
    pad = math.ceil(size * (math.sqrt(2) - 1) / 2)
    copies = []
    for _ in range(config.augment_copies):
        angles = (torch.rand(len(images), generator=generator) * 2 - 1) * config.augment_rotation
        mirror = torch.rand(len(images), generator=generator) < (0.5 if config.augment_flip else 0)
        for image, angle, flip in zip(images, angles.tolist(), mirror.tolist(), strict=True):
            padded = torch.nn.functional.pad(image[None].float(), [pad] * 4, mode="reflect")
            turned = rotate(padded, angle, InterpolationMode.BILINEAR)[0, :, pad:-pad, pad:-pad]
            copies.append((turned.flip(-1) if flip else turned).round().to(torch.uint8))
    return torch.stack(copies) if copies else images[:0]


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


@torch.no_grad()
def calibrate(
    model: ULSADModel, cache: FeatureCache, batch_size: int = 8, defects: FeatureCache | None = None
) -> list[float]:
    """Set the map quantiles and default threshold (the highest score) from held-out good images,
    and with synthetic `defects` the best-F1 threshold too; returns the good images' scores."""
    local_maps, global_maps = cache_maps(model, cache, batch_size)
    rows = [map_quantiles(local_maps, model.config.quantiles), [math.nan, math.nan]]
    if global_maps is not None:
        rows[1] = map_quantiles(global_maps, model.config.quantiles)
    model.map_quantiles.copy_(torch.tensor(rows))
    scores = model.combine(local_maps, global_maps).score.tolist()
    model.threshold.fill_(max(scores))
    if defects is not None:
        defect_scores = model.combine(*cache_maps(model, defects, batch_size)).score.numpy()
        model.threshold_f1.fill_(f1_threshold(np.array(scores), defect_scores))
    return scores


@dataclass
class SyntheticSet:
    """Synthetic defects on the held-out good images, with their masks (`ulsad.synthetic_defects`)."""

    cache: FeatureCache
    masks: torch.Tensor
    kinds: list[str]
    part_scenes: int  # held-out inputs on which the logical kinds took whole parts

    def fusion_table(self, model: ULSADModel, good: FeatureCache, batch_size: int) -> dict:
        """Synthetic-defect metrics per candidate fusion weight (the configured one, if fixed)."""
        good_local, good_global = cache_maps(model, good, batch_size)
        defect_local, defect_global = cache_maps(model, self.cache, batch_size)
        maps = ValidationMaps(
            good_local, good_global, defect_local, defect_global, self.masks, self.kinds
        )
        w = model.config.local_weight
        weights = FUSION_WEIGHTS if w is None else (w,)
        return fusion_table(maps, model.config.quantiles, weights, model.image_score)


def trainable_state(model: ULSADModel) -> dict[str, torch.Tensor]:
    """The trained part of the state (the frozen backbone is rebuilt from its weights)."""
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if not k.startswith("extractor.")
    }


def training_data(
    data: Any, category: str | None, dataset: str, config: ULSADConfig
) -> tuple[list[Any], list[Any]]:
    """(train, held-out) good images: the dataset's validation split, else `val_fraction` of the
    training images held out."""
    train_items, val_items = good_training_images(data, category, dataset)
    if not val_items:
        train_items, val_items = split_holdout(train_items, config.val_fraction, config.seed)
    if len(train_items) < 2:
        raise ULSADError(f"Need at least 2 good training images, got {len(train_items)}.")
    return train_items, val_items


def run_key(config: ULSADConfig, epochs: int, train_items: list, val_items: list) -> str:
    """What a resume state must match: the config, the budget and the exact images."""
    return json.dumps(
        {"config": config.to_dict(), "epochs": epochs, "batch_size": config.batch_size,
         "train": [str(x) for x in train_items], "val": [str(x) for x in val_items]},
        sort_keys=True, default=str,
    )  # fmt: skip


def make_optimizer(model: ULSADModel, epochs: int) -> tuple[torch.optim.Optimizer, Any]:
    """Adam over the trainable branches, and the config's learning-rate schedule (per epoch)."""
    cfg = model.config
    params = [p for n, p in model.named_parameters() if not n.startswith("extractor.")]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.lr_schedule == "cosine":
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    milestones = list(cfg.lr_milestones)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, cfg.lr_gamma)


def train_step(
    model: ULSADModel,
    optimizer: torch.optim.Optimizer,
    features: torch.Tensor,
    normalized_images: torch.Tensor,
    self_attention: torch.Tensor | None = None,
    local_only: bool = False,
    query_index: torch.Tensor | None = None,
) -> float:
    """One optimiser step on one batch (under bf16 autocast as `training_precision` says);
    returns the batch's loss. `local_only`: the local loss alone (the global branch pruned, see
    `pruned_after`)."""
    device = features.device
    precision = model.config.training_precision
    bf16 = precision == "bfloat16" or (precision == "auto" and native_bfloat16(device))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model.losses(
            features, normalized_images, self_attention, local_only, query_index
        ).total
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def query_index(
    config: ULSADConfig, epoch: int, step: int, positions: int, device: torch.device
) -> torch.Tensor | None:
    """The flat feature positions whose attention this step's loss compares
    (`attention_queries`), drawn from a generator seeded by (seed, epoch, step), so that a
    resumed run draws the same; None: all of them."""
    if not 0 < config.attention_queries < positions:
        return None
    generator = torch.Generator().manual_seed((config.seed * 100_003 + epoch) * 10_007 + step)
    return torch.randperm(positions, generator=generator)[: config.attention_queries].to(device)


def epoch_batches(n_train: int, config: ULSADConfig, epoch: int) -> list[torch.Tensor]:
    """Cache indices of one epoch's batches: a seeded shuffle, one version of each image (the
    original or an augmented copy), no batch of one (BatchNorm needs two samples)."""
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(n_train, generator=generator)
    if config.augment_copies:
        order += n_train * torch.randint(0, config.augment_copies + 1, (n_train,),
                                         generator=generator)  # fmt: skip
    return [b for b in order.split(config.batch_size) if len(b) > 1]


@dataclass
class TrainingSets:
    """Everything an epoch reads, computed once: cached training and held-out images, and the
    synthetic defects on the held-out ones (None when `synthetic_defects` is 0)."""

    train: FeatureCache
    heldout: FeatureCache
    synthetic: SyntheticSet | None
    n_train: int  # real training inputs (images or tiles; the cache also holds augmented copies)


def prepare_sets(
    model: ULSADModel,
    train_images: torch.Tensor,
    val_images: torch.Tensor,
    device: torch.device,
    progress: bool,
    fit_statistics: bool = True,
) -> TrainingSets:
    """Augment, extract and cache uint8 inputs (`load_images`); with `fit_statistics`, first set
    the model's feature statistics from the real training inputs (a resumed run keeps its own)."""
    cfg, batch_size = model.config, model.config.batch_size
    n_train = len(train_images)
    if cfg.augment_copies:
        train_images = torch.cat([train_images, augmented_copies(train_images, cfg, cfg.seed)])
    raw = backbone_features(model, train_images, device, batch_size, progress)
    if fit_statistics:  # statistics of the real images only (the originals come first)
        mean, std = channel_statistics(raw[:n_train])
        model.feature_mean.copy_(mean)
        model.feature_std.copy_(std)
    train_cache = build_cache(model, train_images, device, batch_size, progress, raw=raw)
    del raw
    synthetic = None
    if cfg.synthetic_defects:
        defects, masks, kinds = synthetic_defects(val_images, cfg.synthetic_defects, cfg.seed)
        defect_cache = build_cache(model, defects, device, batch_size, progress)
        synthetic = SyntheticSet(defect_cache, masks, kinds, part_scenes(val_images))
    heldout = build_cache(model, val_images, device, batch_size, progress)
    return TrainingSets(train_cache, heldout, synthetic, n_train)


def validation_epochs(config: ULSADConfig, epochs: int) -> set[int]:
    """The `validation_points` evenly spaced epochs at which synthetic defects compare the model
    so far (the last epoch included)."""
    points = min(config.validation_points, epochs)
    return {math.ceil(epochs * (i + 1) / points) for i in range(points)}


class EpochChoice:
    """The epoch to keep, by synthetic-defect score: the latest within `STOP_TOLERANCE` of the
    best so far (a resume state carries it as `state`)."""

    def __init__(self, state: dict | None = None) -> None:
        self.state = state

    def consider(self, model: ULSADModel, epoch: int, table: dict[float, dict]) -> dict:
        """Record `epoch`'s fusion table; keep its weights if it is (near) the best."""
        weight = best_weight(table)
        score = table[weight]["score"]
        top = max(score, self.state["top"]) if self.state is not None else score
        if score >= top - STOP_TOLERANCE:  # later epochs win near-ties
            self.state = {"score": score, "top": top, "epoch": epoch, "local_weight": weight,
                          "table": json.dumps(table), "model": trainable_state(model)}  # fmt: skip
        else:
            self.state["top"] = top
        local_only = {"local_only_score": table[1.0]["score"]} if 1.0 in table else {}
        return {"local_weight": weight, **table[weight], **local_only}

    def apply(self, model: ULSADModel) -> None:
        """Load the kept epoch's weights and its fusion weight into `model`."""
        model.load_state_dict(self.state["model"], strict=False)
        model.config = model.config.replace(local_weight=self.state["local_weight"])


def save_state(path: Path, model: ULSADModel, optimizer, scheduler, epoch: int, history: list,
               key: str, choice: EpochChoice) -> None:  # fmt: skip
    """The resume state, atomically: trained weights, optimiser, schedule, history, kept epoch."""
    state = {"best": choice.state, "epoch": epoch, "key": key, "model": trainable_state(model),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "history": json.dumps(history)}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, key: str, model: ULSADModel, optimizer, scheduler,
               device: torch.device) -> tuple[int, list, EpochChoice]:  # fmt: skip
    """Restore a resume state of the same run; returns (epochs done, history, kept epoch).
    A corrupt, truncated or foreign file is one ULSADError that says how to start over."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or not isinstance(state.get("key"), str):
            raise ValueError("not a dictionary with a run key")
    except Exception as error:  # torch.load raises many kinds: zip, pickle, EOF, OS errors
        raise ULSADError(
            f"{path} is not a resume state this version can read ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else 'no detail'}): pass {{restart}} "
            "to discard it and train from the start.",
            restart="resume=False",
        ) from None
    if state["key"] != key:
        raise ULSADError(
            f"{path} belongs to a different training run (other data or settings): "
            "choose another {out_dir} folder, or pass {restart} to discard it.",
            out_dir="out_dir",
            restart="resume=False",
        )
    try:
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return state["epoch"], json.loads(state["history"]), EpochChoice(state.get("best"))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # same key, other contents
        raise ULSADError(
            f"{path} does not fit this model ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else 'no detail'}): pass "
            "{restart} to discard it and train from the start.",
            restart="resume=False",
        ) from None


def run_epoch(model: ULSADModel, optimizer, sets: TrainingSets, epoch: int,
              device: torch.device, local_only: bool = False) -> float:  # fmt: skip
    """One epoch of optimiser steps; returns the mean training loss."""
    model.train()
    batches = epoch_batches(sets.n_train, model.config, epoch)
    positions = sets.train.features[0, 0].numel()
    total = 0.0
    for step, index in enumerate(batches):
        batch = sets.train.batch(model, index, device)
        queries = None if local_only else query_index(model.config, epoch, step, positions, device)
        total += train_step(model, optimizer, *batch, local_only, queries) * len(index)
    return total / sum(len(b) for b in batches)


def global_map_adds_nothing(point: dict) -> bool:
    """Whether a validation point's fusion (`EpochChoice.consider`'s record) gave the global map
    no weight, or a best score within `PRUNE_TOLERANCE` (a tie) of the local map alone's."""
    if point["local_weight"] == 1.0:
        return True
    return point["score"] - point.get("local_only_score", -math.inf) < PRUNE_TOLERANCE


def pruned_after(config: ULSADConfig, history: list[dict]) -> int | None:
    """The epoch after which the global branch stops training (`prune_global`): the first
    validation point where the global map adds nothing (`global_map_adds_nothing`); None while
    it trains. Read from the history, so a resumed run prunes where the interrupted one did."""
    if not (config.prune_global and config.global_branch):
        return None
    points = (h for h in history if "synthetic" in h)
    return next((h["epoch"] for h in points if global_map_adds_nothing(h["synthetic"])), None)


def train(
    model: ULSADModel,
    data: Any,
    category: str | None = None,
    *,
    dataset: str = "mvtec_ad",
    device: str | torch.device | None = None,
    out_dir: str | Path | None = None,
    save_every: int = 5,
    resume: bool = True,
    progress: bool = True,
    callback: EpochCallback | None = None,
) -> ULSADModel:
    """Train `model` on good images and calibrate it; returns the model (trained in place).

    `data`: a dataset root with `category` (layout `dataset`, see `ulsad.data`), a folder of good
    images, or a list of images. The schedule (`epochs` or `steps`, `batch_size`, `lr`...) is the
    model's config. With `out_dir`, a resumable training state is written every `save_every`
    epochs and the final checkpoint (`save_pretrained`) at the end; re-running with the same
    `out_dir` continues an interrupted run. `callback(epoch, epochs, train_loss, val_loss)` is
    called after every epoch (for progress bars; an exception stops training).
    """
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
        raise ULSADError(f"save_every must be an integer >= 1, got {save_every!r}.")
    cfg = model.config
    device = resolve_device(device)
    model.to(device)
    state_path = Path(out_dir) / STATE_NAME if out_dir is not None else None
    if out_dir is not None:  # left by a process killed while writing (SIGKILL): never complete
        remove_stale_temporaries(out_dir, [STATE_NAME, TRAINING_NAME, WEIGHTS_NAME, CONFIG_NAME])
    train_items, val_items = training_data(data, category, dataset, cfg)
    started = time.perf_counter()
    size = cfg.image_size
    train_images = load_images(train_items, size, progress, "loading training images", cfg.tile)
    val_images = load_images(val_items, size, progress, "loading held-out images", cfg.tile)
    epochs = cfg.training_epochs(len(train_images))  # steps count inputs: tiles, if tiled
    key = run_key(cfg, epochs, train_items, val_items)
    optimizer, scheduler = make_optimizer(model, epochs)
    start_epoch, history, choice = 0, [], EpochChoice()
    if state_path is not None and state_path.is_file() and resume:
        start_epoch, history, choice = load_state(
            state_path, key, model, optimizer, scheduler, device
        )
        log.info("resuming from %s at epoch %d/%d", state_path, start_epoch, epochs)

    sets = prepare_sets(model, train_images, val_images, device, progress, start_epoch == 0)
    del train_images, val_images
    checked = validation_epochs(cfg, epochs) if sets.synthetic is not None else set()
    bar = tqdm(range(start_epoch, epochs), desc="training", disable=not progress, unit="epoch",
               initial=start_epoch, total=epochs)  # fmt: skip
    for epoch in bar:
        local_only = pruned_after(cfg, history) is not None
        train_loss = run_epoch(model, optimizer, sets, epoch, device, local_only)
        scheduler.step()
        val_loss = evaluate_loss(model, sets.heldout, cfg.batch_size, local_only)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss})
        if epoch + 1 in checked:
            table = sets.synthetic.fusion_table(model, sets.heldout, cfg.batch_size)
            history[-1]["synthetic"] = choice.consider(model, epoch + 1, table)
            if not local_only and pruned_after(cfg, history) is not None:
                log.info("global branch gets no weight at epoch %d: it stops training", epoch + 1)
        bar.set_postfix(train_loss=f"{train_loss:.4f}", val_loss=f"{val_loss:.4f}")
        if state_path is not None and ((epoch + 1) % save_every == 0 or epoch + 1 == epochs):
            save_state(state_path, model, optimizer, scheduler, epoch + 1, history, key, choice)
        if callback is not None:
            callback(epoch + 1, epochs, train_loss, val_loss)

    selection = None
    if choice.state is not None:  # the best epoch on synthetic defects, and its fusion weight
        choice.apply(model)
        selection = {
            "defects": cfg.synthetic_defects,
            "kinds": sorted(set(sets.synthetic.kinds)),
            "heldout_inputs": len(sets.heldout.images),
            "part_scenes": sets.synthetic.part_scenes,
            "epochs_compared": sorted(checked),
            "chosen_epoch": choice.state["epoch"],
            "local_weight": choice.state["local_weight"],
            "global_pruned_after": pruned_after(cfg, history),
            "fusion_table": json.loads(choice.state["table"]),
        }
    round_to_storage(model)  # as the checkpoint stores it: the threshold fits what loads
    defects = sets.synthetic.cache if sets.synthetic is not None else None
    scores = calibrate(model, sets.heldout, cfg.batch_size, defects)
    model.eval()
    if out_dir is not None:
        save_pretrained(model, Path(out_dir))
        summary = {
            "epochs": epochs,
            "n_train": len(train_items),
            "n_heldout": len(val_items),
            "n_train_tiles": sets.n_train,  # inputs trained on: n_train unless tiled
            "heldout_scores": scores,
            "threshold": float(model.threshold),
            "threshold_f1": float(model.threshold_f1),
            "steps": epochs * cfg.steps_per_epoch(sets.n_train),
            "synthetic_validation": selection,
            "seconds": time.perf_counter() - started,
            "device": str(device),
            "history": history,
        }
        write_text_atomic(Path(out_dir) / TRAINING_NAME, json.dumps(summary, indent=2) + "\n")
        state_path.unlink(missing_ok=True)
    return model


@torch.no_grad()
def evaluate_loss(
    model: ULSADModel, cache: FeatureCache, batch_size: int, local_only: bool = False
) -> float:
    """Mean total loss over a cached set, in eval mode (the held-out validation loss; the local
    loss alone once the global branch is pruned, as in training)."""
    model.eval()
    total = 0.0
    for index in torch.arange(len(cache.images)).split(batch_size):
        batch = cache.batch(model, index, model.device)
        total += model.losses(*batch, local_only=local_only).total.item() * len(index)
    return total / len(cache.images)
