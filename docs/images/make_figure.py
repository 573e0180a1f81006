"""Draw docs/images/maps.png, the README's picture: example images of the two embedded
checkpoints (top) and their anomaly maps over them, the region above the threshold outlined
(bottom), each with its score and verdict.

Run from the repository root: `python docs/images/make_figure.py` (offline, a few seconds).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ulsad import ULSAD
from ulsad.visualize import overlay

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "maps.png"
EXAMPLES = [  # (embedded checkpoint, example image)
    ("bottle", "good_000.png"),
    ("bottle", "broken_large_000.png"),
    ("metal_plate", "good_000.png"),
    ("metal_plate", "defect_000.png"),
]
PANEL, GAP, CAPTION = 200, 6, 34


def panels() -> list[tuple[Image.Image, Image.Image, str]]:
    """(image, overlay, caption) for each example, at PANEL x PANEL pixels."""
    models: dict[str, ULSAD] = {}
    out = []
    for name, file in EXAMPLES:
        model = models.setdefault(name, ULSAD.from_pretrained(name))
        path = ROOT / "weights" / name / "examples" / file
        image = Image.open(path).convert("RGB")
        result = model.predict(str(path))
        threshold = float(model.threshold)
        shown = overlay(image, result.anomaly_map, threshold)
        verdict = "anomalous" if result.is_anomalous else "good"
        caption = f"{name}: {verdict}\nscore {result.score:.2f} (threshold {threshold:.2f})"
        size = (PANEL, PANEL)
        out.append((image.resize(size, Image.LANCZOS), shown.resize(size, Image.LANCZOS), caption))
    return out


def figure() -> Image.Image:
    """Inputs on the top row, overlays with captions below."""
    items = panels()
    width = len(items) * PANEL + (len(items) + 1) * GAP
    height = 2 * PANEL + 3 * GAP + CAPTION
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    for i, (image, shown, caption) in enumerate(items):
        x = GAP + i * (PANEL + GAP)
        canvas.paste(image, (x, GAP))
        canvas.paste(shown, (x, 2 * GAP + PANEL))
        draw.multiline_text((x + 2, 3 * GAP + 2 * PANEL - 4), caption, fill="black", font=font)
    return canvas


if __name__ == "__main__":
    # A 256-colour palette keeps the PNG small (about 125 KB) with no visible banding.
    figure().quantize(256, method=Image.Quantize.MEDIANCUT).save(OUT, optimize=True)
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size / 1e3:.0f} KB")
