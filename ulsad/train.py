"""Training: given good images, Adam on cached frozen features with the recipe's schedule; model
selection on synthetic defects (`ulsad.selection`), held-out calibration; resumable.

`train` takes images that are already found (paths, arrays or a dataset object); where they come
from (a folder, a benchmark layout) is `ulsad.data.training_images`' business, and this module
never imports `ulsad.data`. Map quantiles and the thresholds come from good images held out of
the training images (or given), never from test images. `train` strings together small public
pieces (`training_data`, `prepare_sets`, `make_optimizer`, `run_epoch` / `train_step`,
`ulsad.resume`) that benchmarks and notebooks reuse.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
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
from ulsad.devices import native_bfloat16, resolve_device
from ulsad.errors import ULSADError
from ulsad.feature_cache import (
    FeatureCache,
    Inputs,
    augmented_copies,
    backbone_features,
    build_cache,
    channel_statistics,
    load_inputs,
    training_count,
    training_inputs,
)
from ulsad.files import remove_stale_temporaries, write_text_atomic
from ulsad.model import ULSADModel
from ulsad.recipe import TrainingRecipe
from ulsad.resume import STATE_NAME, load_state, run_key, save_state
from ulsad.selection import (
    DefectSet,
    EpochChoice,
    calibrate,
    make_defect_set,
    pruned_after,
    selection_epochs,
    selection_record,
)

__all__ = [
    "EpochCallback",
    "TrainingSets",
    "epoch_batches",
    "evaluate_loss",
    "make_optimizer",
    "prepare_sets",
    "query_index",
    "run_epoch",
    "split_holdout",
    "train",
    "train_step",
    "training_data",
]

log = logging.getLogger(__name__)
EpochCallback = Callable[[int, int, float, float], Any]


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


def as_image_list(images: Iterable[Any] | None, what: str) -> list[Any]:
    """The images of a list, tuple, array or dataset object (anything with `len` and indexing,
    or iterable), as a list; a path (a folder to search) is refused: `ulsad.data` resolves it."""
    if images is None:
        return []
    if isinstance(images, (str, Path)):
        raise ULSADError(
            f"{what} must be images (paths, arrays or a dataset of them), got the path {images}: "
            "find the images first (ulsad.data.training_images, or ULSAD.fit, which does)."
        )
    if hasattr(images, "__len__") and hasattr(images, "__getitem__"):
        return [images[i] for i in range(len(images))]  # type: ignore[index]
    return list(images)


def training_data(
    images: Iterable[Any], heldout: Iterable[Any] | None, recipe: TrainingRecipe
) -> tuple[list[Any], list[Any]]:
    """(train, held-out) good images: `heldout` if given, else `val_fraction` of the training
    images held out."""
    train_items, val_items = as_image_list(images, "images"), as_image_list(heldout, "heldout")
    if not val_items:
        train_items, val_items = split_holdout(train_items, recipe.val_fraction, recipe.seed)
    if len(train_items) < 2:
        raise ULSADError(f"Need at least 2 good training images, got {len(train_items)}.")
    return train_items, val_items


def make_optimizer(
    model: ULSADModel, recipe: TrainingRecipe, epochs: int
) -> tuple[torch.optim.Optimizer, Any]:
    """Adam over the trainable branches, and the recipe's learning-rate schedule (per epoch)."""
    params = [p for n, p in model.named_parameters() if not n.startswith("extractor.")]
    optimizer = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.lr_schedule == "cosine":
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    milestones = list(recipe.lr_milestones)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, recipe.lr_gamma)


def train_step(
    model: ULSADModel,
    optimizer: torch.optim.Optimizer,
    features: torch.Tensor,
    normalized_images: torch.Tensor,
    self_attention: torch.Tensor | None = None,
    local_only: bool = False,
    query_index: torch.Tensor | None = None,
    precision: str = "auto",
    masks: torch.Tensor | None = None,
) -> float:
    """One optimiser step on one batch (under bf16 autocast as `precision`, the recipe's
    `training_precision`, says); returns the batch's loss. `local_only`: the local loss alone
    (the global branch pruned, see `ulsad.selection.pruned_after`); `masks`: which losses each
    input trains (`ULSADModel.losses`)."""
    device = features.device
    bf16 = precision == "bfloat16" or (precision == "auto" and native_bfloat16(device))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model.losses(
            features, normalized_images, self_attention, local_only, query_index, masks
        ).total
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def query_index(
    recipe: TrainingRecipe, epoch: int, step: int, positions: int, device: torch.device
) -> torch.Tensor | None:
    """The flat feature positions whose attention this step's loss compares
    (`attention_queries`), drawn from a generator seeded by (seed, epoch, step), so that a
    resumed run draws the same; None: all of them."""
    if not 0 < recipe.attention_queries < positions:
        return None
    generator = torch.Generator().manual_seed((recipe.seed * 100_003 + epoch) * 10_007 + step)
    return torch.randperm(positions, generator=generator)[: recipe.attention_queries].to(device)


def epoch_batches(
    n_train: int, recipe: TrainingRecipe, epoch: int, pools: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Cache indices of one epoch's batches: a seeded shuffle, one version of each image (the
    original or an augmented copy), no batch of one (BatchNorm needs two samples). `pools`:
    (n_train,) bool, whether each input trains the global branch (`training_inputs`); batches
    are then drawn within each pool and shuffled together, so that the global autoencoder (and
    its BatchNorm statistics) only ever reads whole images, never a tile."""
    generator = torch.Generator().manual_seed(recipe.seed * 100_003 + epoch)
    order = torch.randperm(n_train, generator=generator)
    if recipe.augment_copies:
        order += n_train * torch.randint(0, recipe.augment_copies + 1, (n_train,),
                                         generator=generator)  # fmt: skip
    if pools is None or pools.all() or not pools.any():
        return [b for b in order.split(recipe.batch_size) if len(b) > 1]
    in_pool = pools[order % n_train]
    batches = [b for members in (order[in_pool], order[~in_pool])
               for b in members.split(recipe.batch_size) if len(b) > 1]  # fmt: skip
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


@dataclass
class TrainingSets:
    """Everything an epoch reads, computed once: cached training and held-out images, and the
    synthetic defects on the held-out ones (None when `synthetic_defects` is 0)."""

    train: FeatureCache
    heldout: FeatureCache
    synthetic: DefectSet | None
    n_train: int  # real training inputs (images or tiles; the cache also holds augmented copies)


def prepare_sets(
    model: ULSADModel,
    recipe: TrainingRecipe,
    train_images: torch.Tensor | Inputs,
    val_images: torch.Tensor | Inputs,
    device: torch.device,
    progress: bool,
    fit_statistics: bool = True,
) -> TrainingSets:
    """Augment, extract and cache uint8 inputs (`load_inputs`: tiles, and with
    `global_whole_image` the whole images of tiled ones, see `training_inputs`); with
    `fit_statistics`, first set the model's feature statistics from the real training inputs
    (a resumed run keeps its own)."""
    train_inputs = train_images if isinstance(train_images, Inputs) else Inputs(train_images)
    val_inputs = val_images if isinstance(val_images, Inputs) else Inputs(val_images)
    train_images, loss_masks = training_inputs(train_inputs)
    batch_size, n_train = recipe.batch_size, len(train_images)
    if recipe.augment_copies:
        train_images = torch.cat(
            [train_images, augmented_copies(train_images, recipe, recipe.seed)]
        )
    raw = backbone_features(model, train_images, device, batch_size, progress)
    if fit_statistics:  # statistics of the real images only (the originals come first)
        mean, std = channel_statistics(raw[:n_train])
        model.feature_mean.copy_(mean)
        model.feature_std.copy_(std)
    train_cache = build_cache(model, train_images, device, batch_size, progress, raw=raw)
    train_cache.loss_masks = loss_masks
    del raw
    synthetic = make_defect_set(model, val_inputs, recipe, device, progress)
    heldout = build_cache(model, val_inputs.tiles, device, batch_size, progress, inputs=val_inputs)
    return TrainingSets(train_cache, heldout, synthetic, n_train)


def run_epoch(model: ULSADModel, recipe: TrainingRecipe, optimizer, sets: TrainingSets,
              epoch: int, device: torch.device, local_only: bool = False) -> float:  # fmt: skip
    """One epoch of optimiser steps; returns the mean training loss."""
    model.train()
    pools = None if sets.train.loss_masks is None else sets.train.loss_masks[:, 1]
    batches = epoch_batches(sets.n_train, recipe, epoch, pools)
    positions = sets.train.features[0, 0].numel()
    total, count = 0.0, 0
    for step, index in enumerate(batches):
        masks = sets.train.masks(index, device)
        if masks is not None and local_only and not masks[:, 0].any():
            continue  # whole images of tiled ones train the global branch alone, now pruned
        batch = sets.train.batch(model, index, device)
        batch_local_only = local_only or (masks is not None and not masks[:, 1].any())
        queries = None if batch_local_only else query_index(recipe, epoch, step, positions, device)
        loss = train_step(model, optimizer, *batch, batch_local_only, queries,
                          recipe.training_precision, masks)  # fmt: skip
        total, count = total + loss * len(index), count + len(index)
    return total / max(count, 1)


def train(
    model: ULSADModel,
    images: Iterable[Any],
    heldout: Iterable[Any] | None = None,
    *,
    recipe: TrainingRecipe | None = None,
    device: str | torch.device | None = None,
    out_dir: str | Path | None = None,
    save_every: int = 5,
    resume: bool = True,
    progress: bool = True,
    callback: EpochCallback | None = None,
) -> ULSADModel:
    """Train `model` on good images and calibrate it; returns the model (trained in place).

    `images`: the good training images (paths, PIL images, arrays or tensors; a list or a dataset
    object); `heldout`: good images kept out of training for calibration and model selection
    (default: the recipe's `val_fraction` of `images`). `recipe`: the schedule, augmentation and
    selection (default: the paper's, `TrainingRecipe()`). With `out_dir`, a resumable training
    state is written every `save_every` epochs and the final checkpoint (`save_pretrained`) and
    `training.json` at the end; re-running with the same `out_dir` continues an interrupted run.
    `callback(epoch, epochs, train_loss, val_loss)` is called after every epoch (for progress
    bars; an exception stops training).
    """
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
        raise ULSADError(f"save_every must be an integer >= 1, got {save_every!r}.")
    recipe = recipe if recipe is not None else TrainingRecipe()
    cfg, device = model.config, resolve_device(device)
    model.to(device)
    state_path = Path(out_dir) / STATE_NAME if out_dir is not None else None
    if out_dir is not None:  # left by a process killed while writing (SIGKILL): never complete
        remove_stale_temporaries(out_dir, [STATE_NAME, TRAINING_NAME, WEIGHTS_NAME, CONFIG_NAME])
    train_items, val_items = training_data(images, heldout, recipe)
    started = time.perf_counter()
    size = cfg.image_size
    whole = cfg.global_whole_image and cfg.global_branch
    train_images = load_inputs(train_items, size, progress, "loading training images", cfg.tile,
                               whole)  # fmt: skip
    val_images = load_inputs(val_items, size, progress, "loading held-out images", cfg.tile, whole)
    # steps count inputs: tiles if tiled, and the whole images the global branch reads
    epochs = recipe.training_epochs(training_count(train_images))
    n_tiles = len(train_images.tiles)
    key = run_key(model, recipe, epochs, train_items, val_items)
    optimizer, scheduler = make_optimizer(model, recipe, epochs)
    start_epoch, history, choice = 0, [], EpochChoice()
    if state_path is not None and state_path.is_file() and resume:
        start_epoch, history, choice = load_state(
            state_path, key, model, optimizer, scheduler, device
        )
        log.info("resuming from %s at epoch %d/%d", state_path, start_epoch, epochs)

    sets = prepare_sets(model, recipe, train_images, val_images, device, progress, start_epoch == 0)
    del train_images, val_images
    checked = selection_epochs(recipe, epochs) if sets.synthetic is not None else set()
    bar = tqdm(range(start_epoch, epochs), desc="training", disable=not progress, unit="epoch",
               initial=start_epoch, total=epochs)  # fmt: skip
    for epoch in bar:
        local_only = pruned_after(recipe, model, history) is not None
        train_loss = run_epoch(model, recipe, optimizer, sets, epoch, device, local_only)
        scheduler.step()
        val_loss = evaluate_loss(model, sets.heldout, recipe.batch_size, local_only)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss})
        if epoch + 1 in checked:
            table = sets.synthetic.fusion_table(
                model, sets.heldout, recipe.batch_size, recipe.choose_local_weight
            )
            history[-1]["synthetic"] = choice.consider(
                model, epoch + 1, table, recipe.max_local_weight
            )
            if not local_only and pruned_after(recipe, model, history) is not None:
                log.info("global branch gets no weight at epoch %d: it stops training", epoch + 1)
        bar.set_postfix(train_loss=f"{train_loss:.4f}", val_loss=f"{val_loss:.4f}")
        if state_path is not None and ((epoch + 1) % save_every == 0 or epoch + 1 == epochs):
            save_state(state_path, model, optimizer, scheduler, epoch + 1, history, key, choice)
        if callback is not None:
            callback(epoch + 1, epochs, train_loss, val_loss)

    selection = None
    if choice.state is not None:  # the best epoch on synthetic defects, and its fusion weight
        choice.apply(model)
        selection = selection_record(recipe, model, sets.synthetic, len(sets.heldout.images),
                                     checked, choice, history)  # fmt: skip
    round_to_storage(model)  # as the checkpoint stores it: the threshold fits what loads
    defects = sets.synthetic.cache if sets.synthetic is not None else None
    scores = calibrate(model, sets.heldout, recipe.batch_size, defects)
    model.eval()
    if out_dir is not None:
        save_pretrained(model, Path(out_dir))
        summary = {
            "epochs": epochs,
            "n_train": len(train_items),
            "n_heldout": len(val_items),
            "n_train_tiles": n_tiles,  # tiles trained on: n_train unless tiled
            "n_train_inputs": sets.n_train,  # and the whole images of tiled ones, if any
            "heldout_scores": scores,
            "threshold": float(model.threshold),
            "threshold_f1": float(model.threshold_f1),
            "steps": epochs * recipe.steps_per_epoch(sets.n_train),
            "synthetic_validation": selection,  # the key of earlier versions: what selection chose
            "recipe": recipe.to_dict(),
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
    """Mean total loss over a cached set, in eval mode (the held-out loss; the local loss alone
    once the global branch is pruned, as in training)."""
    model.eval()
    whole = None if local_only or model.global_ae is None else cache.whole

    def mean_over(inputs: FeatureCache, loss: Callable[[tuple], torch.Tensor]) -> float:
        total = 0.0
        for index in torch.arange(len(inputs.images)).split(batch_size):
            total += loss(inputs.batch(model, index, model.device)).item() * len(index)
        return total / len(inputs.images)

    def global_losses(batch: tuple) -> torch.Tensor:
        losses = model.losses(*batch)
        return losses.attention + losses.global_local

    local_only = local_only or whole is not None
    mean = mean_over(cache, lambda batch: model.losses(*batch, local_only=local_only).total)
    if whole is not None:  # tiles trained the local loss, whole images the global ones
        mean += mean_over(whole.cache, global_losses)
    return mean
