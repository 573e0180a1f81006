"""Plotly figures and Markdown tables that the notebooks show: anomaly maps, score histograms,
loss curves, bar charts of metrics, and tables of benchmark results.

Every function returns a figure (call `.show()`) or a Markdown string (wrap it in
`IPython.display.Markdown`); none of them trains or evaluates anything. Needs plotly (the `app`
extra).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from ulsad.data import Sample, load_mask
from ulsad.experiments.tables import markdown_table
from ulsad.images import load_image
from ulsad.visualize import colorize, display_range, overlay

MAP_COLUMNS = ("image", "ground truth", "local map", "global map", "overlay")
HEATMAPS = {"local map": "local_map", "global map": "global_map", "anomaly map": "anomaly_map"}
METRICS = ("image_auroc", "pixel_auroc", "aupro", "spro_0.05")


def thumb(array: np.ndarray, side: int = 160) -> np.ndarray:
    """A float map or an image downsampled for display (plotly sends every value to the browser)."""
    array = array.astype(np.float32) if array.ndim == 2 else array
    return np.asarray(Image.fromarray(array).resize((side, side)))


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals; empty for a missing value."""
    return "" if value is None else f"{100 * value:.2f}"


def hide_axes(fig: go.Figure) -> go.Figure:
    """Image-like subplots: no axes, y downwards, square pixels."""
    fig.update_xaxes(visible=False)
    return fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")


def maps_figure(
    paths: Sequence[str | Path],
    predictions: Sequence[Any],
    threshold: float | None,
    *,
    row_titles: Sequence[str],
    masks: Sequence[np.ndarray] | None = None,
    columns: Sequence[str] = MAP_COLUMNS,
    side: int = 160,
    title: str | None = None,
) -> go.Figure:
    """One row per image: any of the `MAP_COLUMNS` and "anomaly map". Heatmaps share one colour
    range (`display_range`); "overlay" outlines the region above `threshold`; "ground truth"
    needs `masks`."""
    fig = make_subplots(
        rows=len(paths),
        cols=len(columns),
        horizontal_spacing=0.01,
        vertical_spacing=0.03,
        row_titles=list(row_titles),
        column_titles=list(columns),
    )
    last_heatmap = max(i for i, c in enumerate(columns, 1) if c in HEATMAPS)
    for row, (path, pred) in enumerate(zip(paths, predictions, strict=True), start=1):
        image = load_image(path)
        vmin, vmax = display_range(pred.anomaly_map, threshold)
        for col, column in enumerate(columns, start=1):
            if column == "image":
                trace = go.Image(z=thumb(np.asarray(image), side))
            elif column == "overlay":
                trace = go.Image(
                    z=thumb(np.asarray(overlay(image, pred.anomaly_map, threshold)), side)
                )
            elif column == "ground truth":
                trace = go.Heatmap(
                    z=thumb(masks[row - 1], side),
                    colorscale="gray",
                    zmin=0,
                    zmax=1,
                    showscale=False,
                )
            else:
                trace = go.Heatmap(
                    z=thumb(getattr(pred, HEATMAPS[column]), side),
                    colorscale="Inferno",
                    zmin=vmin,
                    zmax=vmax,
                    showscale=row == 1 and col == last_heatmap,
                    colorbar={"x": 1.08},
                )
            fig.add_trace(trace, row, col)
    fig.update_layout(
        title=title,
        height=(side + 30) * len(paths) + 80,
        width=min(900, len(columns) * (side + 40) + 160),
        margin={"l": 100, "r": 20, "t": 80, "b": 10},
        plot_bgcolor="white",
    )
    return hide_axes(fig)


def examples_figure(samples: Sequence[Sample]) -> go.Figure:
    """Test images (top row) above their ground-truth masks, titled by defect type."""
    fig = make_subplots(
        rows=2,
        cols=len(samples),
        subplot_titles=[s.defect for s in samples],
        vertical_spacing=0.02,
        horizontal_spacing=0.01,
    )
    for col, sample in enumerate(samples, start=1):
        image = np.asarray(load_image(sample.path))
        mask = load_mask(sample, image.shape[:2]).astype(np.float32)
        fig.add_trace(go.Image(z=thumb(image)), 1, col)
        fig.add_trace(
            go.Heatmap(z=thumb(mask), colorscale="gray", zmin=0, zmax=1, showscale=False), 2, col
        )
    fig.update_layout(
        height=420, width=180 * len(samples) + 60, title="test images and their masks"
    )
    return hide_axes(fig)


def score_histogram(
    scores: Sequence[float],
    labels: Sequence[int] | None,
    thresholds: Mapping[str, float | None],
    title: str,
    nbins: int = 30,
) -> go.Figure:
    """Image scores of good and defective images (all of them without labels), with each
    threshold as a vertical line."""
    fig = go.Figure()
    groups = [(0, "good"), (1, "defective")] if labels is not None else [(None, "all")]
    labels = labels if labels is not None else [None] * len(scores)
    for label, name in groups:
        chosen = [s for s, y in zip(scores, labels, strict=True) if y == label]
        fig.add_trace(go.Histogram(x=chosen, name=name, opacity=0.6, nbinsx=nbins))
    drawn = [(name, t) for name, t in thresholds.items() if t is not None]
    for k, (name, t) in enumerate(drawn):
        fig.add_vline(
            x=t,
            line_dash=("dash", "dot", "dashdot")[k % 3],
            annotation_text=name,
            annotation_position=("top right", "bottom right", "top left")[k % 3],
        )
    return fig.update_layout(
        barmode="overlay",
        title=title,
        xaxis_title="image score",
        yaxis_title="images",
        height=360,
    )


def loss_curves(history: Sequence[Mapping[str, float]]) -> go.Figure:
    """Total training loss and loss on held-out good images, per epoch (`training.json`)."""
    names = (("train_loss", "training loss"), ("val_loss", "held-out good images"))
    epochs = [h["epoch"] for h in history]
    fig = go.Figure([go.Scatter(x=epochs, y=[h[k] for h in history], name=n) for k, n in names])
    return fig.update_layout(
        title="total loss per epoch", xaxis_title="epoch", yaxis_title="loss", height=330
    )


def bar_chart(
    x: Sequence[Any], series: Mapping[str, Sequence[float | None]], title: str, **layout: Any
) -> go.Figure:
    """Grouped bars: one bar per series at each x; `layout` goes to `update_layout`."""
    fig = go.Figure([go.Bar(x=list(x), y=list(y), name=name) for name, y in series.items()])
    return fig.update_layout(barmode="group", title=title, **{"height": 350, **layout})


def metrics_table(
    rows: Iterable[tuple[str, Mapping[str, Any]]], keys: Sequence[str], first: str = "test folder"
) -> str:
    """Markdown: one row per (name, metrics) with its number of defective images and each metric
    in percent (empty where a metric does not apply)."""
    return markdown_table(
        [first, "defective images", *keys],
        (
            [
                name,
                values.get("n_anomalous", values.get("n")),
                *(percent(values.get(k)) for k in keys),
            ]
            for name, values in rows
        ),
    )


def split_table(samples: Sequence[Sample]) -> str:
    """Markdown: the test folders of a split with their group and how many images have masks."""
    rows = []
    for defect, n in sorted(Counter(s.defect for s in samples).items()):
        group = sorted({s.group for s in samples if s.defect == defect})
        masked = sum(bool(s.mask_paths) for s in samples if s.defect == defect)
        rows.append([defect, ", ".join(group) or "-", n, masked])
    return markdown_table(["test folder", "group", "images", "with masks"], rows)


def categories_figure(
    records: Sequence[Mapping[str, Any]], paper: Mapping[str, float], title: str
) -> go.Figure:
    """Benchmark records: each metric per category in percent (the metrics some category has),
    with the paper's dataset means as dotted lines."""
    keys = [k for k in METRICS if any(r["metrics"].get(k) is not None for r in records)]
    fig = bar_chart(
        [r["category"] for r in records],
        {k: [100 * (r["metrics"].get(k) or 0) for r in records] for k in keys},
        title,
        height=380,
        yaxis_range=[0, 105],
    )
    for k, value in paper.items():
        fig.add_hline(y=value, line_dash="dot", annotation_text=f"paper mean {k}")
    return fig


def full_runs_table(
    records: Sequence[Mapping[str, Any]], dataset: str, paper: Mapping[str, float]
) -> str:
    """Markdown: the committed full-run records with their hardware and commit, and the paper's
    means; or a note that there is none."""
    if not records:
        return (
            f"**No full run of {dataset} has been committed yet** (nothing in "
            f"`notebooks/full_runs/{dataset}/`): there are no numbers of ours to show for it. Run "
            "this notebook with `SMOKE = False` on a GPU and commit the runner's JSONs and summary "
            "there."
        )
    rows = []
    for r in records:
        m, env, cfg = r["metrics"], r["environment"], r["config"]
        hardware = (
            env.get("cuda_device") or f"{env.get('cpu')} ({env.get('torch_threads')} threads)"
        )
        commit = (env.get("git_commit") or "unknown")[:10]
        commit += " (modified)" if env.get("git_dirty") else ""
        rows.append(
            [r["variant"], r["category"], r["preset"], cfg["epochs"]]
            + [percent(m.get(k)) for k in ("image_auroc", "pixel_auroc", "aupro")]
            + [f"{r['timings']['train_s'] / 60:.1f}", hardware, f"`{commit}`"]
        )
    header = ["variant", "category", "preset", "epochs", "image AUROC", "pixel AUROC", "AUPRO"]
    table = markdown_table([*header, "train min", "hardware", "commit"], rows)
    means = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in paper.items()) or "no number"
    return (
        f"{table}\n\nPaper ({dataset} mean over all categories, `paper` preset): {means}. Metrics "
        "in percent. How each run was made (command, data, machine load): "
        "`notebooks/full_runs/README.md`."
    )


def png(image: Image.Image, side: int | None = None) -> bytes:
    """PNG bytes of `image` (its longer side scaled to `side`), in 256 colours: a picture a
    committed notebook carries without growing by megabytes."""
    import io

    if side is not None:
        scale = side / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    buffer = io.BytesIO()
    image.convert("RGB").quantize(256).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def maps_png(
    paths: Sequence[str | Path],
    predictions: Sequence[Any],
    threshold: float | None,
    side: int = 160,
) -> bytes:
    """A static picture (PNG bytes, for `IPython.display.Image`): one row per image with the
    image, its anomaly map as a heatmap and the overlay outlining the region above `threshold`.
    Unlike a plotly figure it shows wherever a notebook is read without a kernel (GitHub, the
    Hub's viewer)."""
    gap = 4
    grid = Image.new("RGB", (3 * side + 2 * gap, len(paths) * (side + gap) - gap), "white")
    for row, (path, pred) in enumerate(zip(paths, predictions, strict=True)):
        image = load_image(path)
        vmin, vmax = display_range(pred.anomaly_map, threshold)
        tiles = (image, Image.fromarray(colorize(pred.anomaly_map, vmin, vmax)),
                 overlay(image, pred.anomaly_map, threshold))  # fmt: skip
        for col, tile in enumerate(tiles):
            corner = (col * (side + gap), row * (side + gap))
            grid.paste(tile.convert("RGB").resize((side, side)), corner)
    return png(grid)


def branch_maps_png(path: str | Path, pred: Any, threshold: float | None, side: int = 192) -> bytes:
    """A static picture (PNG bytes) of one image and what each branch sees: the image, its local
    map, its global map (both heatmaps over the image, in the anomaly map's colour range, so
    that they compare) and the overlay of the combined map outlining the region above
    `threshold`."""
    gap = 4
    image = load_image(path).convert("RGB")
    vmin, vmax = display_range(pred.anomaly_map, threshold)

    def heat(anomaly_map: np.ndarray) -> Image.Image:
        return Image.blend(image, Image.fromarray(colorize(anomaly_map, vmin, vmax)), 0.5)

    tiles = (image, heat(pred.local_map), heat(pred.global_map),
             overlay(image, pred.anomaly_map, threshold))  # fmt: skip
    grid = Image.new("RGB", (4 * side + 3 * gap, side), "white")
    for col, tile in enumerate(tiles):
        grid.paste(tile.resize((side, side)), (col * (side + gap), 0))
    return png(grid)
