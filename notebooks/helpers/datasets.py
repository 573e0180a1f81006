"""The dataset notebook's per-dataset parts: the notes in `notebooks/datasets/<name>.md` (what the
dataset is, its download, its layout, its splits), the category it trains step by step, and the
tiny smoke-mode dataset written in each benchmark's own layout, so that the real loader runs.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from ulsad.data import load_split, make_synthetic_dataset
from ulsad.data.synthetic import LOGICAL_DEFECTS

NOTES = Path(__file__).resolve().parents[1] / "datasets"
# The category each dataset's walk-through trains step by step.
EXAMPLE_CATEGORY = {
    "mvtec_ad": "bottle",
    "mvtec_loco": "breakfast_box",
    "visa": "candle",
    "mpdd": "metal_plate",
    "btad": "01",
}
# Smoke mode adds a few real images of these categories when ../shared/data holds them.
REAL_SUBSET = {"mvtec_ad": "bottle", "mpdd": "metal_plate"}


def dataset_note(dataset: str, section: str | None = None) -> str:
    """Markdown of `datasets/<dataset>.md`: its opening (title and description) without `section`,
    else the text under the heading `## <section>` ("" where the note has no such section)."""
    path = NOTES / f"{dataset}.md"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in NOTES.glob("*.md")))
        raise ValueError(f"no note for dataset {dataset!r} in {NOTES.name}/: one of {known}")
    opening, *sections = path.read_text(encoding="utf-8").split("\n## ")
    if section is None:
        return opening.strip()
    bodies = dict(s.split("\n", 1) for s in sections)
    return bodies.get(section, "").strip()


def smoke_dataset(dataset: str, root: Path, real_data: Path) -> str:
    """Write a synthetic category in `dataset`'s layout under `root` (plus a subset of the real
    `REAL_SUBSET` category where `real_data/<dataset>` has it); the category to train step by
    step."""
    logical = dataset == "mvtec_loco"  # the dataset of logical anomalies
    category = make_synthetic_dataset(root, "synthetic", n_train=20 if logical else 16,
                                      n_test_good=6, n_test_defect=8, size=128, logical=logical)  # fmt: skip
    if dataset == "mvtec_loco":
        to_loco_layout(category)
    elif dataset == "visa":
        to_visa_layout(root, category.name)
    elif dataset == "btad":
        to_btad_layout(category)
    real = real_data / dataset / REAL_SUBSET.get(dataset, "")
    if dataset in REAL_SUBSET and real.is_dir():
        copy_subset(dataset, real.parent, real.name, root)
        return real.name
    return category.name


def copy_subset(dataset, source_root, category, target_root, n_train=16, n_per_type=3) -> None:
    """Copy a few images (and their masks) of a real category, keeping the dataset's layout."""
    picked = load_split(dataset, source_root, category, "train")[:n_train]
    per_type = Counter()
    for sample in load_split(dataset, source_root, category, "test"):
        if per_type[sample.defect] < n_per_type:
            per_type[sample.defect] += 1
            picked.append(sample)
    for sample in picked:
        for path in (sample.path, *sample.mask_paths):
            target = target_root / path.relative_to(source_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def to_loco_layout(category_dir: Path, n_validation: int = 4) -> None:
    """Rearrange a synthetic category (MVTec AD layout) into MVTec LOCO AD's layout."""
    validation = category_dir / "validation" / "good"
    validation.mkdir(parents=True)
    for path in sorted((category_dir / "train" / "good").glob("*.png"))[-n_validation:]:
        path.rename(validation / path.name)
    counters = Counter()
    for folder in sorted(p for p in (category_dir / "test").iterdir() if p.name != "good"):
        kind = "logical_anomalies" if folder.name in LOGICAL_DEFECTS else "structural_anomalies"
        (category_dir / "test" / kind).mkdir(exist_ok=True)
        for image in sorted(folder.glob("*.png")):
            name = f"{counters[kind]:03d}"
            counters[kind] += 1
            image.rename(category_dir / "test" / kind / f"{name}.png")
            mask_dir = category_dir / "ground_truth" / kind / name
            mask_dir.mkdir(parents=True)
            (category_dir / "ground_truth" / folder.name / f"{image.stem}_mask.png").rename(
                mask_dir / "000.png"
            )
        folder.rmdir()
        (category_dir / "ground_truth" / folder.name).rmdir()
    # One defect type, pixel value 255; saturation at 100% of each region: sPRO = PRO here.
    config = {"defect_name": "synthetic", "pixel_value": 255, "saturation_threshold": 1.0,
              "relative_saturation": True}  # fmt: skip
    (category_dir / "defects_config.json").write_text(json.dumps([config]))


def to_visa_layout(root: Path, category: str) -> None:
    """Rearrange a synthetic category (MVTec AD layout) into VisA's layout and split csv."""
    source, target = root / category, root / category / "Data"
    rows = ["object,split,label,image,mask"]
    for split, folder in (("train", source / "train" / "good"), ("test", source / "test" / "good")):
        (target / "Images" / "Normal").mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.glob("*.png")):
            moved = target / "Images" / "Normal" / f"{split}_{image.name}"
            image.rename(moved)
            rows.append(f"{category},{split},normal,{moved.relative_to(root)},")
    (target / "Images" / "Anomaly").mkdir(parents=True)
    (target / "Masks" / "Anomaly").mkdir(parents=True)
    for folder in sorted(p for p in (source / "test").iterdir() if p.name != "good"):
        for image in sorted(folder.glob("*.png")):
            name = f"{folder.name}_{image.name}"
            image.rename(target / "Images" / "Anomaly" / name)
            mask = source / "ground_truth" / folder.name / f"{image.stem}_mask.png"
            mask.rename(target / "Masks" / "Anomaly" / name)
            rows.append(
                f"{category},test,anomaly,{category}/Data/Images/Anomaly/{name},"
                f"{category}/Data/Masks/Anomaly/{name}"
            )
    (root / "split_csv").mkdir()
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")


def to_btad_layout(category_dir: Path) -> None:
    """Rearrange a synthetic category (MVTec AD layout) into BTAD's (ok / ko, masks by name)."""
    (category_dir / "train" / "good").rename(category_dir / "train" / "ok")
    (category_dir / "test" / "good").rename(category_dir / "test" / "ok")
    for kind in ("test", "ground_truth"):
        (category_dir / kind / "ko").mkdir()
    for folder in sorted(
        p for p in (category_dir / "test").iterdir() if p.name not in ("ok", "ko")
    ):
        for image in sorted(folder.glob("*.png")):
            image.rename(category_dir / "test" / "ko" / f"{folder.name}_{image.name}")
            mask = category_dir / "ground_truth" / folder.name / f"{image.stem}_mask.png"
            mask.rename(category_dir / "ground_truth" / "ko" / f"{folder.name}_{image.name}")
        folder.rmdir()
        (category_dir / "ground_truth" / folder.name).rmdir()
