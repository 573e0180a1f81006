"""Loader for VisA (Visual Anomaly) with its official one-class split ``split_csv/1cls.csv``.

Download: https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar (project
https://github.com/amazon-science/spot-diff; licence CC BY 4.0 per the AWS Open Data registry,
CC BY-NC-SA 4.0 per anomalib: read ``LICENSE-DATASET`` in the archive; cite Zou et al., ECCV 2022).
Layout of the extracted tar (as read by anomalib's ``visa`` module and spot-diff's split script)::

    <root>/split_csv/1cls.csv                       columns object,split,label,image,mask
    <root>/<object>/Data/Images/Normal/*.JPG        label "normal"
    <root>/<object>/Data/Images/Anomaly/*.JPG       label "anomaly"
    <root>/<object>/Data/Masks/Anomaly/*.png        values 0/1 or 0/255 (any value > 0 is defect)

Paths in the csv are relative to ``<root>``; split is ``train`` or ``test`` (no validation split).
VisA has no per-folder defect types, so defective samples get ``defect="anomaly"``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ulsad.data.samples import Sample
from ulsad.errors import ULSADError

VISA_CATEGORIES = (
    "candle",
    "capsules",
    "cashew",
    "chewinggum",
    "fryum",
    "macaroni1",
    "macaroni2",
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "pipe_fryum",
)
SPLIT_CSV = Path("split_csv") / "1cls.csv"
_COLUMNS = ("object", "split", "label", "image", "mask")


def read_split_csv(root: Path) -> list[dict[str, str]]:
    """Rows of ``root/split_csv/1cls.csv`` (header checked, BOM tolerated)."""
    path = root / SPLIT_CSV
    if not path.is_file():
        raise ULSADError(
            f"{path} not found: pass as {{root}} the folder extracted from VisA_20220922.tar "
            "(it holds split_csv/ and one folder per object).",
            root="root",
        )
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ULSADError(
                f"{path} lacks the columns {missing} (expected {','.join(_COLUMNS)}); restore "
                "it from the VisA archive."
            )
        return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]


def find_categories(root: Path) -> list[str]:
    """Objects listed in the split csv."""
    return sorted({row["object"] for row in read_split_csv(root)})


def load(root: Path, category: str, split: str) -> list[Sample]:
    """Samples of ``split`` for one object; "validation" gives [] (VisA has none)."""
    if split == "validation":
        return []
    samples = []
    for row in read_split_csv(root):
        if row["object"] != category or row["split"] != split:
            continue
        image = root / row["image"]
        if not image.is_file():
            raise ULSADError(
                f"{image} is listed in {root / SPLIT_CSV} but missing; re-extract the archive."
            )
        if row["label"] == "normal":
            samples.append(Sample(image, 0, "good"))
            continue
        mask = root / row["mask"] if row["mask"] else None
        if mask is None or not mask.is_file():
            expected = mask or root / category / "Data" / "Masks" / "Anomaly" / f"{image.stem}.png"
            raise ULSADError(
                f"defective image {image} has no mask: expected {expected}; re-extract the "
                "archive or remove the row from 1cls.csv."
            )
        samples.append(Sample(image, 1, "anomaly", (mask,)))
    if not samples:
        raise ULSADError(
            f"{root / SPLIT_CSV} lists no {split} images for '{category}'; check the category "
            "name and the csv."
        )
    return sorted(samples, key=lambda s: s.path)
