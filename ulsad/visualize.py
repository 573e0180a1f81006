"""Heatmap overlays of anomaly maps, with the anomalous region outlined (no matplotlib needed)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["COLOR_STOPS", "colorize", "display_range", "overlay", "region_outline"]

# The one colour map of ulsad: "inferno"-like control points (position, RGB), interpolated
# linearly in RGB into a 256-entry lookup table here and into the app's plotly colour scale.
COLOR_STOPS = [
    (0.00, (0, 0, 4)),
    (0.25, (87, 16, 110)),
    (0.50, (188, 55, 84)),
    (0.75, (249, 142, 9)),
    (1.00, (252, 255, 164)),
]
_POSITIONS = np.array([p for p, _ in COLOR_STOPS])
_LUT = np.stack(
    [
        np.interp(np.linspace(0, 1, 256), _POSITIONS, [c[i] for _, c in COLOR_STOPS])
        for i in range(3)
    ],
    axis=1,
).astype(np.uint8)


def display_range(anomaly_map: np.ndarray, threshold: float | None) -> tuple[float, float]:
    """Colour range: 0 (the 90th percentile of good pixels) to twice the threshold, so that
    colours are comparable between images; the map's own range when there is no threshold."""
    if threshold is not None and np.isfinite(threshold) and threshold > 0:
        return 0.0, 2.0 * float(threshold)
    low, high = float(np.min(anomaly_map)), float(np.max(anomaly_map))
    return low, max(high, low + 1e-6)


def colorize(anomaly_map: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(H, W) float -> (H, W, 3) uint8 heatmap (one float32 temporary: large maps stay cheap)."""
    scaled = np.array(anomaly_map, dtype=np.float32)
    scaled -= vmin
    scaled *= 255.0 / max(vmax - vmin, 1e-12)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return _LUT[scaled.astype(np.uint8)]


def region_outline(anomaly_map: np.ndarray, threshold: float, width: int = 2) -> np.ndarray:
    """Boolean (H, W) outline of the pixels whose value exceeds `threshold`."""
    region = anomaly_map > threshold
    if not region.any():
        return region
    return region & ~ndimage.binary_erosion(region, iterations=max(1, width), border_value=0)


def overlay(
    image: Image.Image,
    anomaly_map: np.ndarray,
    threshold: float | None = None,
    alpha: float = 0.5,
    outline_color: tuple[int, int, int] = (0, 255, 0),
) -> Image.Image:
    """The image blended with the heatmap of `anomaly_map` (same size), region above threshold outlined."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if anomaly_map.shape != (rgb.height, rgb.width):
        raise ValueError(f"map {anomaly_map.shape} and image {rgb.size[::-1]} differ in size")
    heat = Image.fromarray(colorize(anomaly_map, *display_range(anomaly_map, threshold)))
    blended = Image.blend(rgb, heat, alpha)  # uint8 throughout: no float copies of the image
    del heat
    if threshold is not None and np.isfinite(threshold):
        width = max(1, round(max(anomaly_map.shape) / 256))
        outline = region_outline(anomaly_map, threshold, width)
        if outline.any():
            blended.paste(outline_color, mask=Image.fromarray(outline))
    return blended
