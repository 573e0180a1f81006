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

from ulsad.images import load_image, to_tensor

if TYPE_CHECKING:
    from ulsad.model import AnomalyMaps, ULSADModel

# What `predict` accepts for one image (see `ulsad.images.load_image`).
ImageInput = str | Path | Image.Image | np.ndarray | Tensor


@dataclass
class Prediction:
    """One image's result. Maps are float32 (H, W) at the image's original size (S x S, the
    model's input size, from `iter_predictions(..., resize=False)`)."""

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


def _resize(maps: Tensor, size: tuple[int, int]) -> np.ndarray:
    resized = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)
    return resized[:, 0].float().cpu().numpy()


def iter_predictions(
    forward: Callable[[Tensor], AnomalyMaps],
    items: Sequence[Any],
    *,
    image_size: int,
    threshold: float | None,
    batch_size: int = 8,
    load: Callable[[Any], Image.Image | None] = load_image,
    resize: bool = True,
) -> Iterator[tuple[Any, Image.Image, Prediction]]:
    """(input, image, prediction) for each input, one batch at a time, so that any number of inputs
    fits in memory. `load` reads an input (None skips it: the loader reports why, e.g. an
    unreadable upload among many); `resize=False` leaves the maps at the model's S x S."""
    for start in range(0, len(items), batch_size):
        loaded = [(item, load(item)) for item in items[start : start + batch_size]]
        loaded = [(item, image) for item, image in loaded if image is not None]
        if not loaded:
            continue
        out = forward(torch.stack([to_tensor(image, image_size) for _, image in loaded]))
        for i, (item, image) in enumerate(loaded):
            maps = torch.stack([out.anomaly_map[i], out.local_map[i], out.global_map[i]])
            size = (image.height, image.width)
            combined, local_map, global_map = (
                _resize(maps, size) if resize else maps.float().cpu().numpy()
            )
            yield (
                item,
                image,
                Prediction(
                    score=float(out.score[i]),
                    anomaly_map=combined,
                    local_map=local_map,
                    global_map=global_map,
                    threshold=threshold,
                    path=Path(item) if isinstance(item, (str, Path)) else None,
                ),
            )


def predict_batches(
    forward: Callable[[Tensor], AnomalyMaps],
    inputs: Any,
    *,
    image_size: int,
    threshold: float | None,
    batch_size: int = 8,
) -> Prediction | list[Prediction]:
    """Score inputs with any batch function (PyTorch model, ONNX Runtime session) from (B, 3, S, S)
    images in [0, 1] to `AnomalyMaps`; all backends share loading, batching and resizing."""
    single = not isinstance(inputs, (list, tuple))
    items = [inputs] if single else list(inputs)
    kwargs = {"image_size": image_size, "threshold": threshold, "batch_size": batch_size}
    results = [prediction for *_, prediction in iter_predictions(forward, items, **kwargs)]
    return results[0] if single else results


def predict(model: ULSADModel, inputs: Any, batch_size: int = 8) -> Prediction | list[Prediction]:
    """Score one input or a list of inputs (see `ulsad.images.load_image` for what is accepted)."""
    threshold = float(model.threshold)
    threshold = None if math.isnan(threshold) else threshold

    @torch.inference_mode()
    def forward(batch: Tensor) -> AnomalyMaps:
        return model(batch.to(model.device))

    was_training = model.training
    model.eval()
    try:
        return predict_batches(
            forward, inputs, image_size=model.config.image_size, threshold=threshold,
            batch_size=batch_size,
        )  # fmt: skip
    finally:
        model.train(was_training)
