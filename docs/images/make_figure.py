"""Draw docs/images/maps.png, the README's picture: example images of the embedded checkpoints
and their anomaly maps over them, the region above the threshold outlined, each with its score
and verdict (top two rows); then the synthetic layout checkpoint's logical example (the right
disc in the wrong colour) with its local, global and combined maps: the local map sees nothing
wrong, the global map finds the defect (bottom row).

Run from the repository root: `python docs/images/make_figure.py` (offline, a few seconds).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ulsad import ULSAD
from ulsad.visualize import colorize, display_range, overlay

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "maps.png"
EXAMPLES = [  # (embedded checkpoint, example image)
    ("bottle", "good_000.png"),
    ("bottle", "broken_large_000.png"),
    ("metal_plate", "good_000.png"),
    ("metal_plate", "defect_000.png"),
]
LOGICAL = ("layout", "mismatched_004.png")  # one of weights/layout/examples
PANEL, GAP, CAPTION = 200, 6, 34


def example_path(name: str, file: str) -> Path:
    return ROOT / "weights" / name / "examples" / file


def panels() -> list[tuple[Image.Image, Image.Image, str]]:
    """(image, overlay, caption) for each example, at PANEL x PANEL pixels."""
    models: dict[str, ULSAD] = {}
    out = []
    for name, file in EXAMPLES:
        model = models.setdefault(name, ULSAD.from_pretrained(name))
        path = example_path(name, file)
        image = Image.open(path).convert("RGB")
        result = model.predict(str(path))
        threshold = float(model.threshold)
        shown = overlay(image, result.anomaly_map, threshold)
        verdict = "anomalous" if result.is_anomalous else "good"
        caption = f"{name}: {verdict}\nscore {result.score:.2f} (threshold {threshold:.2f})"
        size = (PANEL, PANEL)
        out.append((image.resize(size, Image.LANCZOS), shown.resize(size, Image.LANCZOS), caption))
    return out


def logical_panels() -> list[tuple[Image.Image, str]]:
    """(panel, caption): the layout example, its local and global maps (one colour range, that
    of the combined map), and the combined map over it with the verdict."""
    name, file = LOGICAL
    model = ULSAD.from_pretrained(name)
    path = example_path(name, file)
    image = Image.open(path).convert("RGB")
    result = model.predict(str(path))
    threshold = float(model.threshold)
    vmin, vmax = display_range(result.anomaly_map, threshold)

    def heat(anomaly_map) -> Image.Image:
        return Image.blend(image, Image.fromarray(colorize(anomaly_map, vmin, vmax)), 0.5)

    verdict = "anomalous" if result.is_anomalous else "good"
    items = [
        (image, f"{name} (synthetic): right disc\nin the wrong colour"),
        (heat(result.local_map), "local (structural) map:\nnothing wrong"),
        (heat(result.global_map), "global (logical) map:\nthe pairing is wrong"),
        (
            overlay(image, result.anomaly_map, threshold),
            f"combined map: {verdict}\nscore {result.score:.2f} (threshold {threshold:.2f})",
        ),
    ]
    return [(panel.resize((PANEL, PANEL), Image.LANCZOS), caption) for panel, caption in items]


def figure() -> Image.Image:
    """Inputs on the top row, overlays with captions below; the logical example's row last."""
    items, logical = panels(), logical_panels()
    width = max(len(items), len(logical)) * PANEL + (max(len(items), len(logical)) + 1) * GAP
    height = 3 * PANEL + 5 * GAP + 2 * CAPTION
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    for i, (image, shown, caption) in enumerate(items):
        x = GAP + i * (PANEL + GAP)
        canvas.paste(image, (x, GAP))
        canvas.paste(shown, (x, 2 * GAP + PANEL))
        draw.multiline_text((x + 2, 3 * GAP + 2 * PANEL - 4), caption, fill="black", font=font)
    top = 4 * GAP + 2 * PANEL + CAPTION
    for i, (panel, caption) in enumerate(logical):
        x = GAP + i * (PANEL + GAP)
        canvas.paste(panel, (x, top))
        draw.multiline_text((x + 2, top + PANEL + GAP - 4), caption, fill="black", font=font)
    return canvas


if __name__ == "__main__":
    # A 256-colour octree palette keeps the PNG small (about 120 KB; the synthetic row's noisy
    # ground costs the most) with no visible banding; a median-cut one needed 200 KB.
    figure().quantize(256, method=Image.Quantize.FASTOCTREE).save(OUT, optimize=True)
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size / 1e3:.0f} KB")
