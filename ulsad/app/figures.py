"""The app's plotly figures: the interactive anomaly heatmap, in the colours of the overlay PNGs
(`ulsad.visualize.COLOR_STOPS`), and the histogram of a batch's scores."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F

from ulsad.visualize import COLOR_STOPS, display_range

# The overlay's colour map as a plotly colour scale: plotly interpolates it linearly in RGB too.
COLORSCALE = [[position, "rgb({},{},{})".format(*rgb)] for position, rgb in COLOR_STOPS]


def resize_map(anomaly_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float map -> `size` = (h, w), area-averaged when shrinking, bilinear when growing."""
    tensor = torch.from_numpy(np.ascontiguousarray(anomaly_map, dtype=np.float32))[None, None]
    shrink = size[0] <= anomaly_map.shape[0] and size[1] <= anomaly_map.shape[1]
    kwargs = {"mode": "area"} if shrink else {"mode": "bilinear", "align_corners": False}
    return F.interpolate(tensor, size=size, **kwargs)[0, 0].numpy()


def heatmap_figure(anomaly_map: np.ndarray, threshold: float | None, max_side: int = 256):
    """Interactive plotly heatmap (hover shows the value), the region above threshold outlined."""
    height, width = anomaly_map.shape
    scale = min(1.0, max_side / max(height, width))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    z = resize_map(anomaly_map, (h, w)) if (h, w) != (height, width) else anomaly_map
    x = (np.arange(w) + 0.5) * width / w
    y = (np.arange(h) + 0.5) * height / h
    vmin, vmax = display_range(anomaly_map, threshold)
    fig = go.Figure(
        go.Heatmap(
            z=np.round(z, 4),
            x=x,
            y=y,
            zmin=vmin,
            zmax=vmax,
            colorscale=COLORSCALE,
            colorbar={"title": "anomaly"},
            hovertemplate="x %{x:.0f}, y %{y:.0f}<br>anomaly %{z:.3f}<extra></extra>",
        )
    )
    if threshold is not None and float(z.max()) > threshold:
        fig.add_trace(
            go.Contour(
                z=z,
                x=x,
                y=y,
                showscale=False,
                hoverinfo="skip",
                name="threshold",
                contours={"start": threshold, "end": threshold, "size": 1, "coloring": "none"},
                line={"color": "#00ff00", "width": 2},
            )
        )
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", showgrid=False)
    fig.update_xaxes(constrain="domain", showgrid=False)
    fig.update_layout(
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        height=420,
        title="Anomaly map (hover for values)",
    )
    return fig


def histogram_figure(scores: list[float], threshold: float | None):
    """Histogram of batch scores with the threshold as a vertical line."""
    fig = go.Figure(
        go.Histogram(
            x=scores,
            nbinsx=max(10, min(50, len(scores) // 2)),
            marker_color="#5b6ee1",
            name="images",
        )
    )
    if threshold is not None:
        fig.add_vline(
            x=threshold,
            line_color="#e4572e",
            line_dash="dash",
            annotation_text=f"threshold {threshold:.3f}",
        )
    fig.update_layout(
        xaxis_title="image score",
        yaxis_title="images",
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        bargap=0.05,
    )
    return fig
