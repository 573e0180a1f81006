"""What the Inspect and Batch tabs show: for one image its overlay, branch maps, verdict and
heatmap; for many a table sorted by score, overlays of the worst, and the table as CSV."""

from __future__ import annotations

import csv
import heapq
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from ulsad import ULSAD
from ulsad.app.figures import heatmap_figure, resize_map
from ulsad.app.inputs import load_upload
from ulsad.errors import ULSADError
from ulsad.files import csv_cell, write_text_atomic
from ulsad.inference import Prediction, iter_predictions, model_scoring
from ulsad.visualize import colorize, display_range, overlay


def blend(image: Image.Image, anomaly_map: np.ndarray, vmin: float, vmax: float) -> Image.Image:
    """The image half-blended with the heatmap of `anomaly_map` in the fixed range [vmin, vmax]."""
    heat = Image.fromarray(colorize(anomaly_map, vmin, vmax))
    return Image.blend(image.convert("RGB"), heat, 0.5)


UNUSED_GLOBAL_TEXT = "Not used: this model scores\nwith its local map alone"


def unused_panel(image: Image.Image) -> Image.Image:
    """The panel of a map the model does not compute: the image dimmed to grey, with a label
    saying so (an all-zero heatmap would read as "nothing logical is wrong")."""
    grey = ImageOps.grayscale(image).point(lambda v: 96 + v // 4).convert("RGB")  # 96-159
    draw, centre = ImageDraw.Draw(grey), (grey.width / 2, grey.height / 2)
    width = draw.multiline_textbbox(centre, UNUSED_GLOBAL_TEXT, font_size=100, anchor="mm")
    size = max(8, min(int(90 * grey.width / (width[2] - width[0])), grey.height // 8))
    draw.multiline_text(
        centre, UNUSED_GLOBAL_TEXT, fill=(255, 255, 255), font_size=size, anchor="mm",
        align="center", stroke_width=size // 16, stroke_fill=(0, 0, 0),
    )  # fmt: skip
    return grey


def verdict(pred: Prediction, threshold: float | None, uses_global: bool = True) -> str:
    """One line: good or anomalous against `threshold`, and which branch carries the evidence
    (`uses_global=False`: the model scores with its local map alone)."""
    if uses_global:
        peaks = {
            "local (structural)": float(pred.local_map.max()),
            "global (logical)": float(pred.global_map.max()),
        }
        (top, top_peak), (other, other_peak) = sorted(peaks.items(), key=lambda kv: -kv[1])
        branch = f"strongest evidence: {top} map, peak {top_peak:.3f} vs {other} {other_peak:.3f}"
    else:
        branch = "this model scores with its local (structural) map alone; no global map"
    if threshold is None:
        return f"Score {pred.score:.4f}; no threshold (uncalibrated checkpoint): set one. {branch}."
    if pred.score > threshold:
        return f"ANOMALOUS: score {pred.score:.4f} > threshold {threshold:.4f}; {branch}."
    return f"GOOD: score {pred.score:.4f} <= threshold {threshold:.4f}; {branch}."


@dataclass
class Inspection:
    """Everything the Inspect tab shows for one image."""

    score: float
    overlay: Image.Image
    local_map: Image.Image
    global_map: Image.Image
    verdict: str
    figure: Any


# The Inspect panels are drawn at most this large on their long side (they are shown at 280-360
# px): a 4096 x 4096 upload gave three full-size PNGs, 111 MB per request kept for an hour.
PANEL_SIDE = 1024


def inspect_image(
    model: ULSAD, image: Image.Image, threshold: float | None, panel_side: int = PANEL_SIDE
) -> Inspection:
    """Everything the Inspect tab shows for one (already loaded) image; the panels at most
    `panel_side` pixels on their long side (maps area-averaged to it), the score and the
    heatmap's colour range from the full-size maps."""
    pred = model.predict(image)
    vmin, vmax = display_range(pred.anomaly_map, threshold)
    shown = image
    if max(image.size) > panel_side:
        shown = image.copy()
        shown.thumbnail((panel_side, panel_side), Image.BILINEAR)
    size = (shown.height, shown.width)

    def small(anomaly_map: np.ndarray) -> np.ndarray:
        return anomaly_map if anomaly_map.shape == size else resize_map(anomaly_map, size)

    return Inspection(
        score=pred.score,
        overlay=overlay(shown, small(pred.anomaly_map), threshold),
        local_map=blend(shown, small(pred.local_map), vmin, vmax),
        global_map=(
            blend(shown, small(pred.global_map), vmin, vmax)
            if model.uses_global_map
            else unused_panel(shown)
        ),
        verdict=verdict(pred, threshold, model.uses_global_map),
        figure=heatmap_figure(pred.anomaly_map, threshold),
    )


@dataclass
class BatchResult:
    """What the Batch tab shows for many images."""

    rows: list[dict[str, Any]]  # image, score, anomalous; sorted by score, highest first
    worst: list[tuple[Image.Image, str]]  # overlay thumbnails with captions, highest score first
    failed: list[str]  # "name: reason" for images that could not be read
    notices: list[str]


def score_batch(
    model: ULSAD,
    images: list[tuple[Path, str]],
    threshold: float | None,
    worst_n: int = 8,
    batch_size: int = 8,
    thumbnail: int = 384,
    progress: Callable[[int, int], Any] | None = None,
) -> BatchResult:
    """Score every image (same numbers as `model.predict`); keep overlays of the `worst_n` only.

    Unreadable images are skipped and named in `failed`; `progress(done, total)` follows along."""
    failed: list[str] = []
    notices: list[str] = []
    tried = [0]

    def load(item: tuple[Path, str]) -> Image.Image | None:
        tried[0] += 1
        try:
            image, notice = load_upload(*item)
        except ULSADError as error:
            failed.append(str(error))
            return None
        notices.extend([notice] if notice else [])
        return image

    forward, settings = model_scoring(model)  # as `ulsad.inference.predict` scores
    model.eval()
    rows: list[dict[str, Any]] = []
    heap: list[tuple[float, int, Image.Image, str]] = []  # min-heap of the worst overlays
    scored = iter_predictions(
        forward,
        images,
        threshold=threshold,
        batch_size=batch_size,
        load=load,
        resize=False,  # the maps of the worst few are drawn small, below
        **settings,
    )
    for (_, name), image, pred in scored:
        rows.append({"image": name, "score": pred.score, "anomalous": pred.is_anomalous})
        if worst_n > 0 and (len(heap) < worst_n or pred.score > heap[0][0]):
            thumb = image.copy()
            thumb.thumbnail((thumbnail, thumbnail), Image.BILINEAR)
            shown = overlay(thumb, resize_map(pred.anomaly_map, thumb.size[::-1]), threshold)
            item = (pred.score, len(rows), shown, f"{pred.score:.4f} {name}")
            (heapq.heappush if len(heap) < worst_n else heapq.heapreplace)(heap, item)
        if progress is not None:
            progress(tried[0], len(images))
    rows.sort(key=lambda row: row["score"], reverse=True)
    worst = [(im, caption) for _, _, im, caption in sorted(heap, key=lambda t: -t[0])]
    return BatchResult(rows, worst, failed, notices)


def write_csv(rows: list[dict[str, Any]], path: str | Path, threshold: float | None) -> Path:
    """The batch table as CSV (image, score, anomalous, threshold); names that a spreadsheet would
    run as formulas (= + - @) are quoted with a leading '."""
    path = Path(path)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["image", "score", "anomalous", "threshold"])
    for row in rows:
        writer.writerow(
            [
                csv_cell(row["image"]),
                f"{row['score']:.6f}",
                row["anomalous"],
                "" if threshold is None else f"{threshold:.6f}",
            ]
        )
    write_text_atomic(path, buffer.getvalue())
    return path
