"""Scoring images with a trained model: batching, original-size maps, a plain result object."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ulsad.errors import ULSADError
from ulsad.images import Box, crop_regions, load_image, region_fractions, to_tensor, to_tiles
from ulsad.model import top_count, top_mean

__all__ = [
    "ImageInput",
    "Prediction",
    "iter_predictions",
    "model_scoring",
    "original_size_maps",
    "predict",
    "predict_batches",
    "stitch",
    "whole_global_settings",
    "whole_image_global",
]

if TYPE_CHECKING:
    from ulsad.model import AnomalyMaps, ULSADModel

# What `predict` accepts for one image (see `ulsad.images.load_image`).
ImageInput = str | Path | Image.Image | np.ndarray | Tensor


@dataclass
class Prediction:
    """One image's result. Maps are float32 (H, W) at the image's original size (at the model's
    scale from `iter_predictions(..., resize=False)`); with tiling, `score` is the highest tile's.
    `global_map` is zeros when the model's combined map gives it no weight (then never computed)."""

    score: float
    anomaly_map: np.ndarray
    local_map: np.ndarray
    global_map: np.ndarray
    threshold: float | None = None
    path: Path | None = None

    @property
    def is_anomalous(self) -> bool | None:
        """score > threshold (the checkpoint's default, from held-out good images), if known."""
        return None if self.threshold is None else self.score > self.threshold


def stitch(tile_maps: Tensor, boxes: Sequence[Box], image_size: tuple[int, int],
           out_size: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """Maps of one image's tiles (T, K, S, S) -> (K, H', W') float32 at `out_size`: each tile's
    maps resized into its box (scaled from `image_size`, (H, W)), overlaps averaged. With one
    box over the whole image this is a plain resize."""
    if len(boxes) == 1:  # the whole image (`tile_boxes`): a plain resize, no accumulators
        resized = F.interpolate(
            tile_maps[:1].float(), size=out_size, mode="bilinear", align_corners=False
        )
        return resized[0].cpu().numpy()
    (h, w), (out_h, out_w) = image_size, out_size
    total = tile_maps.new_zeros((tile_maps.shape[1], out_h, out_w), dtype=torch.float32)
    count = total.new_zeros((1, out_h, out_w))
    for maps, (left, top, right, bottom) in zip(tile_maps, boxes, strict=True):
        y0, y1 = round(top * out_h / h), round(bottom * out_h / h)
        x0, x1 = round(left * out_w / w), round(right * out_w / w)
        resized = F.interpolate(
            maps[None].float(), size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False
        )
        total[:, y0:y1, x0:x1] += resized[0]
        count[:, y0:y1, x0:x1] += 1
    return total.div_(count).cpu().numpy()


def original_size_maps(tile_maps: Tensor, boxes: Sequence[Box], image_size: tuple[int, int],
                       out_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """One image's combined, local and global maps (T, 3, S, S) -> three (H', W') arrays, each
    stitched once: a local map equal to the combined one is copied, and a global map of zeros
    (not used, see `Prediction`) stays lazily allocated zeros, so scoring large images needs a
    third of the memory."""
    distinct = [0]
    if not torch.equal(tile_maps[:, 1], tile_maps[:, 0]):
        distinct.append(1)
    if tile_maps[:, 2].any():
        distinct.append(2)
    resized = stitch(tile_maps[:, distinct], boxes, image_size, out_size)
    stitched = dict(zip(distinct, resized, strict=True))
    combined = stitched[0]
    local_map = stitched[1] if 1 in stitched else combined.copy()
    global_map = stitched[2] if 2 in stitched else np.zeros(combined.shape, np.float32)
    return combined, local_map, global_map


def iter_predictions(
    forward: Callable[[Tensor], AnomalyMaps],
    items: Sequence[Any],
    *,
    image_size: int,
    threshold: float | None,
    batch_size: int = 8,
    load: Callable[[Any], Image.Image | None] = load_image,
    resize: bool = True,
    tile: bool = False,
    whole_global: tuple[float, int] | None = None,
    whole_forward: Callable[[Tensor], AnomalyMaps] | None = None,
) -> Iterator[tuple[Any, Image.Image, Prediction]]:
    """(input, image, prediction) for each input, one batch at a time, so that any number of inputs
    fits in memory. `load` reads an input (None skips it: the loader reports why, e.g. an
    unreadable upload among many); `resize=False` leaves the maps at the model's scale (S x S, or
    S per tile side); `tile`: elongated images are scored as square tiles (`to_tiles`), their
    maps stitched and their score the highest tile's. `whole_global`: (local_weight, score
    pixels) of a model whose global branch reads whole images (`global_whole_image`): a tiled
    image's global map is then its whole image's, cut to each tile (`whole_image_global`), and
    `whole_forward` (default: `forward`) computes it."""
    for start in range(0, len(items), batch_size):
        loaded = [(item, load(item)) for item in items[start : start + batch_size]]
        loaded = [(item, image) for item, image in loaded if image is not None]
        if not loaded:
            continue
        tiled = [to_tiles(image, image_size, tile) for _, image in loaded]
        inputs = torch.cat([t for t, _ in tiled])
        if whole_global is None or whole_forward is None:
            scores, maps = run_batches(forward, inputs, batch_size)
        else:  # `forward` for tiles of tiled images, `whole_forward` for whole images
            of_tiled = torch.tensor([len(boxes) > 1 for _, boxes in tiled for _ in boxes])
            parts = [(chosen, run_batches(run, inputs[chosen], batch_size))
                     for chosen, run in ((of_tiled, forward), (~of_tiled, whole_forward))
                     if chosen.any()]  # fmt: skip
            first_scores, first_maps = parts[0][1]
            scores = first_scores.new_zeros(len(inputs))
            maps = first_maps.new_zeros((len(inputs), *first_maps.shape[1:]))
            for chosen, (part_scores, part_maps) in parts:
                scores[chosen], maps[chosen] = part_scores, part_maps
        if whole_global is not None:
            images = [image for _, image in loaded]
            scores, maps = whole_image_global(whole_forward or forward, images, tiled, scores,
                                              maps, *whole_global, image_size, batch_size)  # fmt: skip
        first = 0
        for (item, image), (_, boxes) in zip(loaded, tiled, strict=True):
            size = (image.height, image.width)
            box_h, box_w = boxes[0][3] - boxes[0][1], boxes[0][2] - boxes[0][0]
            out_size = size if resize else (
                round(size[0] * image_size / box_h), round(size[1] * image_size / box_w)
            )  # fmt: skip
            last = first + len(boxes)
            score = float(scores[first:last].max())
            if not math.isfinite(score):  # NaN compared as "good": an error, never a verdict
                shown = str(item) if isinstance(item, (str, Path)) else "an image"
                raise ULSADError(
                    f"The score of {shown} is {score}, not a number: the model computes "
                    "non-finite values (broken weights or a diverged training), so no verdict "
                    "can be given; re-train or re-download the checkpoint."
                )
            combined, local_map, global_map = original_size_maps(
                maps[first:last], boxes, size, out_size
            )
            yield (
                item,
                image,
                Prediction(
                    score=score,
                    anomaly_map=combined,
                    local_map=local_map,
                    global_map=global_map,
                    threshold=threshold,
                    path=Path(item) if isinstance(item, (str, Path)) else None,
                ),
            )
            first = last


def run_batches(
    forward: Callable[[Tensor], AnomalyMaps], inputs: Tensor, batch_size: int
) -> tuple[Tensor, Tensor]:
    """Scores (N,) and combined, local and global maps (N, 3, S, S) of inputs, a batch at a time."""
    outputs = [forward(chunk) for chunk in inputs.split(batch_size)]
    scores = torch.cat([out.score for out in outputs])
    maps = torch.cat(
        [torch.stack([out.anomaly_map, out.local_map, out.global_map], 1) for out in outputs]
    )
    return scores, maps


def whole_image_global(
    forward: Callable[[Tensor], AnomalyMaps], images: Sequence[Image.Image],
    tiled: Sequence[tuple[Tensor, list[Box]]], scores: Tensor, maps: Tensor, local_weight: float,
    score_pixels: int, image_size: int, batch_size: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Scores (T,) and maps (T, 3, S, S) of a batch's tiles, with the global map of each tiled
    image replaced by its whole image's (one square resize through `forward`), cut to the tile's
    region, and each tile's combined map and score fused again from it (`ULSADModel.combine`:
    the same weight; the score is the mean of the `score_pixels` highest values)."""
    counts = [len(boxes) for _, boxes in tiled]
    whole = [i for i, n in enumerate(counts) if n > 1]
    if not whole:
        return scores, maps
    inputs = torch.stack([to_tensor(images[i], image_size) for i in whole])
    global_maps = torch.cat(
        [forward(chunk).global_map.float() for chunk in inputs.split(batch_size)]
    )
    scores, maps = scores.clone(), maps.clone()
    starts = np.cumsum([0, *counts])
    for global_map, i in zip(global_maps, whole, strict=True):
        boxes, tiles = tiled[i][1], slice(starts[i], starts[i + 1])
        regions = region_fractions(boxes, images[i].width, images[i].height)
        cut = crop_regions(global_map.expand(len(boxes), -1, -1), regions)
        combined = local_weight * maps[tiles, 1] + (1 - local_weight) * cut
        maps[tiles, 0], maps[tiles, 2] = combined, cut
        scores[tiles] = top_mean(combined, score_pixels)
    return scores, maps


def whole_global_settings(config: Any) -> tuple[float, int] | None:
    """`iter_predictions`' `whole_global` for a model config (`ULSADConfig` or its dict):
    (local_weight, score pixels) when its global branch reads whole images and its combined
    map uses it, else None."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    weight = get("local_weight", None)
    weight = 0.5 if weight is None else float(weight)  # as `ULSADModel.fusion_weight`
    if not (get("tile", False) and get("global_whole_image", False) and get("global_branch", True)):
        return None
    if weight >= 1.0:
        return None
    size = int(get("image_size", 256))
    return weight, top_count(float(get("image_score_fraction", 0.0)), size * size)


def predict_batches(
    forward: Callable[[Tensor], AnomalyMaps],
    inputs: Any,
    *,
    image_size: int,
    threshold: float | None,
    batch_size: int = 8,
    tile: bool = False,
    whole_global: tuple[float, int] | None = None,
    whole_forward: Callable[[Tensor], AnomalyMaps] | None = None,
) -> Prediction | list[Prediction]:
    """Score inputs with any batch function (PyTorch model, ONNX Runtime session) from (B, 3, S, S)
    images in [0, 1] to `AnomalyMaps`; all backends share loading, tiling, batching and resizing."""
    single = not isinstance(inputs, (list, tuple))
    items = [inputs] if single else list(inputs)
    kwargs = {"image_size": image_size, "threshold": threshold, "batch_size": batch_size,
              "tile": tile, "whole_global": whole_global, "whole_forward": whole_forward}  # fmt: skip
    results = [prediction for *_, prediction in iter_predictions(forward, items, **kwargs)]
    return results[0] if single else results


def model_scoring(model: ULSADModel) -> tuple[Callable[[Tensor], AnomalyMaps], dict[str, Any]]:
    """The batch function and the `iter_predictions` settings that score with `model` (input
    size, tiling, and with `global_whole_image` the whole-image global map: tiles then skip the
    global branch, whole images run it)."""
    whole_global = whole_global_settings(model.config)

    @torch.inference_mode()
    def forward(batch: Tensor) -> AnomalyMaps:
        return model(batch.to(model.device))

    @torch.inference_mode()
    def tile_forward(batch: Tensor) -> AnomalyMaps:  # the global map comes from whole images
        return model(batch.to(model.device), with_global=False)

    settings = {"image_size": model.config.image_size, "tile": model.config.tile,
                "whole_global": whole_global, "whole_forward": forward}  # fmt: skip
    return (forward if whole_global is None else tile_forward), settings


def predict(model: ULSADModel, inputs: Any, batch_size: int = 8) -> Prediction | list[Prediction]:
    """Score one input or a list of inputs (see `ulsad.images.load_image` for what is accepted)."""
    threshold = float(model.threshold)
    threshold = None if math.isnan(threshold) else threshold

    forward, settings = model_scoring(model)
    was_training = model.training
    model.eval()
    try:
        return predict_batches(
            forward, inputs, threshold=threshold, batch_size=batch_size, **settings
        )
    finally:
        model.train(was_training)
