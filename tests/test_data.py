"""Dataset loaders on tiny fake copies of each official layout, the synthetic dataset, real data."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ulsad.data import (
    DATASETS,
    Sample,
    list_categories,
    load_mask,
    load_split,
    make_layout_dataset,
    make_synthetic_dataset,
    training_images,
)
from ulsad.errors import ULSADError

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _image(path: Path, value: int = 128, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size[1], size[0]), (value, value, value)).save(path)
    return path


def _mask(path: Path, box: tuple[int, int, int, int], value: int = 255, size: int = 8) -> Path:
    """A mask with ``value`` inside box = (top, left, bottom, right), 0 elsewhere."""
    array = np.zeros((size, size), np.uint8)
    top, left, bottom, right = box
    array[top:bottom, left:right] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _mvtec_like(
    cat: Path, good: str = "good", suffix: str = "_mask", ext: str = ".png", mext: str = ".png"
) -> None:
    for i in range(3):
        _image(cat / "train" / good / f"{i:03d}{ext}")
    for i in range(2):
        _image(cat / "test" / good / f"{i:03d}{ext}")
    defects = ["ko"] if good == "ok" else ["crack", "hole"]
    for defect in defects:
        for i in range(2):
            _image(cat / "test" / defect / f"{i:03d}{ext}", value=10)
            _mask(cat / "ground_truth" / defect / f"{i:03d}{suffix}{mext}", (0, 0, 2, 4))


# --------------------------------------------------------------------------- MVTec AD / MPDD


@pytest.mark.parametrize("dataset", ["mvtec_ad", "mpdd"])
def test_mvtec_layout_counts_labels_and_masks(tmp_path: Path, dataset: str) -> None:
    _mvtec_like(tmp_path / "bottle")
    _mvtec_like(tmp_path / "cable")
    (tmp_path / "not_a_category").mkdir()
    assert list_categories(dataset, tmp_path) == ["bottle", "cable"]

    train = load_split(dataset, tmp_path, "bottle", "train")
    assert len(train) == 3 and {(s.label, s.defect) for s in train} == {(0, "good")}
    assert load_split(dataset, tmp_path, "bottle", "validation") == []

    test = load_split(dataset, tmp_path, "bottle", "test")
    assert [s.path for s in test] == sorted(s.path for s in test)
    assert len(test) == 6
    assert [(s.defect, s.label) for s in test].count(("good", 0)) == 2
    crack = [s for s in test if s.defect == "crack"]
    assert [s.label for s in crack] == [1, 1]
    assert crack[0].mask_paths == (tmp_path / "bottle/ground_truth/crack/000_mask.png",)
    mask = load_mask(crack[0])
    assert mask.dtype == bool and mask.shape == (8, 8) and mask.sum() == 8
    assert load_mask(crack[0], (4, 4)).sum() == 2  # nearest resize of a 2x4 box -> 1x2
    good = next(s for s in test if s.label == 0)
    assert good.mask_paths == () and not load_mask(good).any()
    assert load_mask(good).shape == (8, 8) and load_mask(good, (5, 3)).shape == (5, 3)


def test_category_none_accepts_a_category_folder(tmp_path: Path) -> None:
    _mvtec_like(tmp_path / "bottle")
    by_root = load_split("mvtec_ad", tmp_path / "bottle", None, "test")
    assert by_root == load_split("mvtec_ad", tmp_path, "bottle", "test")
    # a root holding exactly one category also works
    assert len(load_split("mvtec_ad", tmp_path, None, "train")) == 3


def test_missing_ground_truth_folder_warns_once_and_gives_no_masks(tmp_path: Path) -> None:
    _mvtec_like(tmp_path / "bottle")
    for mask in sorted((tmp_path / "bottle/ground_truth").rglob("*.png")):
        mask.unlink()
    for folder in sorted((tmp_path / "bottle/ground_truth").iterdir()):
        folder.rmdir()
    (tmp_path / "bottle/ground_truth").rmdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        test = load_split("mvtec_ad", tmp_path, "bottle", "test")
    assert len(caught) == 1 and "image-level" in str(caught[0].message)
    assert sum(s.label for s in test) == 4 and all(s.mask_paths == () for s in test)
    assert not load_mask(test[0]).any()


def test_missing_mask_names_image_and_expected_path(tmp_path: Path) -> None:
    _mvtec_like(tmp_path / "bottle")
    (tmp_path / "bottle/ground_truth/hole/001_mask.png").unlink()
    with pytest.raises(ULSADError) as err:
        load_split("mvtec_ad", tmp_path, "bottle", "test")
    message = str(err.value)
    assert str(tmp_path / "bottle/test/hole/001.png") in message
    assert str(tmp_path / "bottle/ground_truth/hole/001_mask.png") in message


def test_layout_errors(tmp_path: Path) -> None:
    _mvtec_like(tmp_path / "bottle")
    _mvtec_like(tmp_path / "cable")
    with pytest.raises(ULSADError, match="does not exist"):
        load_split("mvtec_ad", tmp_path / "nope", "bottle", "train")
    with pytest.raises(ULSADError, match="does not exist"):
        list_categories("mvtec_ad", tmp_path / "nope")
    with pytest.raises(
        ULSADError, match=r"unknown category 'screw'; looked for .*; found: bottle, cable"
    ):
        load_split("mvtec_ad", tmp_path, "screw", "train")
    with pytest.raises(ULSADError, match=r"pass a category; looked for .*; found: bottle, cable"):
        load_split("mvtec_ad", tmp_path, None, "train")
    with pytest.raises(ULSADError, match="unknown dataset 'kolektor'"):
        load_split("kolektor", tmp_path, "bottle", "train")
    with pytest.raises(ULSADError, match="unknown split 'val'"):
        load_split("mvtec_ad", tmp_path, "bottle", "val")
    for image in (tmp_path / "bottle/train/good").iterdir():
        image.unlink()
    (tmp_path / "bottle/train/good/notes.txt").write_text("not an image")
    with pytest.raises(ULSADError, match="has no images"):
        load_split("mvtec_ad", tmp_path, "bottle", "train")


def test_image_extensions_are_case_insensitive_and_hidden_files_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "c" / "train" / "good"
    for name in ("a.PNG", "b.JpG", "c.jpeg", "d.bmp", "e.TIF", "f.tiff"):
        _image(folder / name)
    _image(folder / "._a.png")
    (folder / "readme.txt").write_text("x")
    names = [s.path.name for s in load_split("mvtec_ad", tmp_path, "c", "train")]
    assert names == ["a.PNG", "b.JpG", "c.jpeg", "d.bmp", "e.TIF", "f.tiff"]


def test_official_lists() -> None:
    assert set(DATASETS) == {"mvtec_ad", "mvtec_loco", "visa", "mpdd", "btad", "folder"}
    expected = {"mvtec_ad": 15, "mvtec_loco": 5, "visa": 12, "mpdd": 6, "btad": 3, "folder": 0}
    assert {name: len(list_categories(name)) for name in DATASETS} == expected
    assert list_categories("btad") == ["01", "02", "03"]


# --------------------------------------------------------------------------- BTAD


def test_btad_ok_ko_layout_with_bmp_images_and_masks(tmp_path: Path) -> None:
    _mvtec_like(tmp_path / "01", good="ok", suffix="", ext=".bmp", mext=".png")
    _mvtec_like(tmp_path / "03", good="ok", suffix="", ext=".bmp", mext=".bmp")
    assert list_categories("btad", tmp_path) == ["01", "03"]
    assert len(load_split("btad", tmp_path, "01", "train")) == 3
    for category, mext in (("01", ".png"), ("03", ".bmp")):
        test = load_split("btad", tmp_path, category, "test")
        assert [(s.label, s.defect) for s in test] == [(1, "ko")] * 2 + [(0, "good")] * 2
        assert test[0].mask_paths == (tmp_path / category / f"ground_truth/ko/000{mext}",)
        assert load_mask(test[0]).sum() == 8


# --------------------------------------------------------------------------- VisA


def _visa(root: Path) -> None:
    rows = ["object,split,label,image,mask"]
    for obj in ("candle", "pcb1"):
        for i in range(3):
            rel = f"{obj}/Data/Images/Normal/{i:04d}.JPG"
            _image(root / rel)
            rows.append(f"{obj},{'train' if i < 2 else 'test'},normal,{rel},")
        rel, mrel = f"{obj}/Data/Images/Anomaly/000.JPG", f"{obj}/Data/Masks/Anomaly/000.png"
        _image(root / rel)
        _mask(root / mrel, (2, 2, 4, 5), value=1)  # VisA masks may be 0/1
        rows.append(f"{obj},test,anomaly,{rel},{mrel}")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv/1cls.csv").write_text("\ufeff" + "\n".join(rows) + "\n", encoding="utf-8")


def test_visa_split_csv(tmp_path: Path) -> None:
    _visa(tmp_path)
    assert list_categories("visa", tmp_path) == ["candle", "pcb1"]
    train = load_split("visa", tmp_path, "candle", "train")
    assert [s.path.name for s in train] == ["0000.JPG", "0001.JPG"]
    assert all(s.label == 0 and s.defect == "good" for s in train)
    assert load_split("visa", tmp_path, "candle", "validation") == []
    test = load_split("visa", tmp_path, "pcb1", "test")
    assert [(s.label, s.defect) for s in test] == [(1, "anomaly"), (0, "good")]
    assert test[0].mask_paths == (tmp_path / "pcb1/Data/Masks/Anomaly/000.png",)
    assert load_mask(test[0]).sum() == 6  # value 1 counts as defect
    with pytest.raises(
        ULSADError, match=r"unknown category 'capsules'; looked for .*; found: candle, pcb1"
    ):
        load_split("visa", tmp_path, "capsules", "train")


def test_visa_errors(tmp_path: Path) -> None:
    with pytest.raises(ULSADError, match=r"1cls\.csv not found"):
        load_split("visa", tmp_path, "candle", "train")
    _visa(tmp_path)
    (tmp_path / "candle/Data/Masks/Anomaly/000.png").unlink()
    with pytest.raises(ULSADError, match=r"Anomaly/000\.JPG has no mask: expected .*000\.png"):
        load_split("visa", tmp_path, "candle", "test")


# --------------------------------------------------------------------------- MVTec LOCO AD


def _loco(cat: Path, with_config: bool = True) -> None:
    for split in ("train", "validation", "test"):
        for i in range(2):
            _image(cat / split / "good" / f"{i:03d}.png")
    _image(cat / "test/logical_anomalies/000.png")
    _image(cat / "test/structural_anomalies/000.png")
    _image(cat / "test/structural_anomalies/001.png")
    gt = cat / "ground_truth"
    _mask(gt / "logical_anomalies/000/000.png", (0, 0, 4, 4), value=255)  # area 16, relative
    _mask(gt / "logical_anomalies/000/001.png", (6, 6, 8, 8), value=254)  # area 4, absolute 10
    _mask(gt / "structural_anomalies/000/000.png", (0, 0, 8, 8), value=254)  # area 64, abs 10
    _mask(gt / "structural_anomalies/001/000.png", (0, 0, 1, 3), value=255)  # area 3, relative
    if with_config:
        config = [
            {
                "defect_name": "missing_item",
                "pixel_value": 255,
                "saturation_threshold": 0.5,
                "relative_saturation": True,
            },
            {
                "defect_name": "scratch",
                "pixel_value": 254,
                "saturation_threshold": 10,
                "relative_saturation": False,
            },
        ]
        (cat / "defects_config.json").write_text(json.dumps(config))


def test_loco_without_a_validation_split_trains_on_its_training_images(tmp_path: Path) -> None:
    """A copy that ships train/good only (no validation/): the validation split is empty and
    training holds out part of the training images, as for MVTec AD."""
    for i in range(3):
        _image(tmp_path / "juice_bottle/train/good" / f"{i:03d}.png")
    assert load_split("mvtec_loco", tmp_path, "juice_bottle", "validation") == []
    train, heldout = training_images(tmp_path, "juice_bottle", "mvtec_loco")
    assert len(train) == 3 and heldout == []


def test_loco_groups_masks_and_saturation_thresholds(tmp_path: Path) -> None:
    _loco(tmp_path / "pushpins")
    assert list_categories("mvtec_loco", tmp_path) == ["pushpins"]
    assert len(load_split("mvtec_loco", tmp_path, "pushpins", "train")) == 2
    validation = load_split("mvtec_loco", tmp_path, "pushpins", "validation")
    assert [s.path.parent.parent.name for s in validation] == ["validation"] * 2
    test = load_split("mvtec_loco", tmp_path, "pushpins", "test")
    assert [(s.defect, s.group, s.label) for s in test] == [
        ("good", "", 0),
        ("good", "", 0),
        ("logical_anomalies", "logical", 1),
        ("structural_anomalies", "structural", 1),
        ("structural_anomalies", "structural", 1),
    ]
    logical, structural0, structural1 = test[2], test[3], test[4]
    assert [p.name for p in logical.mask_paths] == ["000.png", "001.png"]
    assert logical.saturation_thresholds == (8.0, 4.0)  # int(0.5 * 16), min(10, 4)
    assert structural0.saturation_thresholds == (10.0,)  # min(10, 64)
    assert structural1.saturation_thresholds == (1.0,)  # int(0.5 * 3)
    assert load_mask(logical).sum() == 20  # union of both regions
    assert test[0].saturation_thresholds == () and test[0].mask_paths == ()


def test_loco_errors_and_missing_config(tmp_path: Path) -> None:
    _loco(tmp_path / "pushpins", with_config=False)
    with pytest.warns(UserWarning, match=r"defects_config\.json is missing"):
        test = load_split("mvtec_loco", tmp_path, "pushpins", "test")
    assert all(s.saturation_thresholds == () for s in test)
    assert len(test[2].mask_paths) == 2

    _loco(tmp_path / "juice_bottle")
    _mask(tmp_path / "juice_bottle/ground_truth/logical_anomalies/000/002.png", (0, 0, 1, 1), 7)
    with pytest.raises(ULSADError, match="pixel value 7"):
        load_split("mvtec_loco", tmp_path, "juice_bottle", "test")

    _loco(tmp_path / "screw_bag")
    for mask in (tmp_path / "screw_bag/ground_truth/structural_anomalies/001").iterdir():
        mask.unlink()
    with pytest.raises(ULSADError, match=r"structural_anomalies/001\.png has no mask"):
        load_split("mvtec_loco", tmp_path, "screw_bag", "test")


# --------------------------------------------------------------------------- folder


def test_folder_dataset_root_itself_with_masks(tmp_path: Path) -> None:
    for i in range(4):
        _image(tmp_path / "good" / f"g{i}.jpg")
    _image(tmp_path / "test/good/t0.png")
    _image(tmp_path / "test/scratch/s0.png")
    _image(tmp_path / "test/scratch/s1.png")
    _mask(tmp_path / "masks/scratch/s0.png", (0, 0, 1, 1))
    _mask(tmp_path / "masks/scratch/s1_mask.png", (0, 0, 2, 2))
    assert len(load_split("folder", tmp_path, None, "train")) == 4
    test = load_split("folder", tmp_path, None, "test")
    assert [(s.path.name, s.label, s.defect) for s in test] == [
        ("t0.png", 0, "good"),
        ("s0.png", 1, "scratch"),
        ("s1.png", 1, "scratch"),
    ]
    assert [int(load_mask(s).sum()) for s in test if s.label] == [1, 4]
    (tmp_path / "masks/scratch/s1_mask.png").unlink()
    with pytest.raises(ULSADError, match=r"s1\.png has no mask"):
        load_split("folder", tmp_path, None, "test")


def test_folder_dataset_categories_without_masks_or_test(tmp_path: Path) -> None:
    _image(tmp_path / "widget/good/a.png")
    _image(tmp_path / "widget/test/dent/b.png")
    _image(tmp_path / "gadget/good/a.png")
    assert list_categories("folder", tmp_path) == ["gadget", "widget"]
    assert load_split("folder", tmp_path, "gadget", "test") == []
    with pytest.warns(UserWarning, match="no masks/ folder"):
        test = load_split("folder", tmp_path, "widget", "test")
    assert test == [Sample(tmp_path / "widget/test/dent/b.png", 1, "dent")]


# --------------------------------------------------------------------------- synthetic


def test_synthetic_dataset_layout_and_masks(tmp_path: Path) -> None:
    start = time.perf_counter()
    root = make_synthetic_dataset(tmp_path, n_train=6, n_test_good=3, n_test_defect=8, size=64)
    assert time.perf_counter() - start < 5
    assert root == tmp_path / "synthetic"
    assert len(load_split("mvtec_ad", tmp_path, "synthetic", "train")) == 6
    test = load_split("mvtec_ad", tmp_path, "synthetic", "test")
    assert sum(1 - s.label for s in test) == 3
    assert {s.defect for s in test if s.label} == {"scratch", "contamination"}
    for sample in (s for s in test if s.label):
        raw = np.asarray(Image.open(sample.mask_paths[0]))
        assert set(np.unique(raw)) == {0, 255}
        assert 0.005 < (raw > 0).mean() < 0.15


def test_synthetic_defects_are_visible_and_deterministic(tmp_path: Path) -> None:
    a = make_synthetic_dataset(
        tmp_path / "a", n_train=8, n_test_good=2, n_test_defect=8, seed=3, logical=True
    )
    b = make_synthetic_dataset(
        tmp_path / "b", n_train=8, n_test_good=2, n_test_defect=8, seed=3, logical=True
    )
    c = make_synthetic_dataset(tmp_path / "c", n_train=8, n_test_good=2, n_test_defect=8, seed=4)
    assert (a / "test/scratch/000.png").read_bytes() == (b / "test/scratch/000.png").read_bytes()
    assert (a / "test/scratch/000.png").read_bytes() != (c / "test/scratch/000.png").read_bytes()
    test = load_split("mvtec_ad", a.parent, "synthetic", "test")
    defects = {s.defect for s in test if s.label}
    assert defects == {"scratch", "contamination", "missing_object", "misplaced_object"}
    train = np.stack(
        [
            np.asarray(Image.open(s.path), np.float32)
            for s in load_split("mvtec_ad", a.parent, "synthetic", "train")
        ]
    )
    reference = np.median(train, axis=0)
    for sample in (s for s in test if s.label):
        diff = np.abs(np.asarray(Image.open(sample.path), np.float32) - reference).mean(axis=2)
        mask = load_mask(sample)
        assert diff[mask].mean() > 4 * diff[~mask].mean(), sample.path


def test_synthetic_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ULSADError, match="n_train"):
        make_synthetic_dataset(tmp_path, n_train=0)
    with pytest.raises(ULSADError, match="size"):
        make_synthetic_dataset(tmp_path, size=16)


def test_layout_dataset_has_only_layout_defects(tmp_path: Path) -> None:
    """Every defect of the layout set is at the right disc, and is made of normal-looking parts:
    a mismatched disc keeps the size of the left one, a missing one leaves plain ground."""
    root = make_layout_dataset(tmp_path, n_train=3, n_test_good=2, n_test_defect=4)
    samples = load_split("mvtec_ad", tmp_path, "layout", "test")
    assert root == tmp_path / "layout" and len(list((root / "train" / "good").glob("*.png"))) == 3
    assert [s.defect for s in samples] == ["good"] * 2 + ["mismatched"] * 2 + ["missing"] * 2
    for sample in samples:
        image = np.asarray(Image.open(sample.path), dtype=float)
        colourful = image.std(axis=-1) > 30  # the discs; the ground is grey
        left, right = colourful[:, :128], colourful[:, 128:]
        if sample.label == 0:
            assert sample.mask_paths == () and abs(left.sum() - right.sum()) < 0.05 * left.sum()
            continue
        mask = load_mask(sample, image.shape[:2])
        assert mask[:, :128].sum() == 0 and abs(mask.sum() - left.sum()) < 0.05 * left.sum()
        assert right.sum() == (mask.sum() if sample.defect == "mismatched" else 0)
        colour = image[mask].mean(axis=0) if sample.defect == "mismatched" else None
        if colour is not None:  # another colour than the left disc's
            assert np.abs(colour - image[:, :128][left].mean(axis=0)).max() > 40
    with pytest.raises(ULSADError, match="n_train"):
        make_layout_dataset(tmp_path, n_train=0)


def test_elongated_layout_puts_the_discs_in_different_tiles_on_a_textured_ground(tmp_path):
    """``aspect=2``: 256 x 512 images whose discs lie in different halves (so tiling separates
    them); ``textured``: the ground is the periodic texture, one across the whole width."""
    make_layout_dataset(
        tmp_path, n_train=2, n_test_good=1, n_test_defect=2, aspect=2, textured=True
    )
    samples = load_split("mvtec_ad", tmp_path, "layout", "test")
    for sample in samples:
        image = np.asarray(Image.open(sample.path), dtype=float)
        assert image.shape == (256, 512, 3)
        colourful = image.std(axis=-1) > 30
        assert colourful[:, :256].sum() > 1000  # the left disc, whole, in the left tile
        ground = image.mean(axis=-1)[~colourful]
        assert ground.std() > 10  # a texture, not the plain grey (noise std 6)
        if sample.label == 1:
            mask = load_mask(sample, image.shape[:2])
            assert mask[:, :256].sum() == 0 and mask[:, 256:].sum() > 1000
    # one texture over the whole width: the two halves' ground colours agree
    image = np.asarray(Image.open(samples[0].path), dtype=float)
    halves = [image[:40, :256].mean(axis=(0, 1)), image[:40, 256:].mean(axis=(0, 1))]
    assert np.abs(halves[0] - halves[1]).max() < 4
    with pytest.raises(ULSADError, match="aspect"):
        make_layout_dataset(tmp_path, aspect=2.5)


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="../shared/data is absent (fresh clone)")
def test_real_data_copies() -> None:
    bottle = REAL_DATA / "mvtec_ad"
    assert len(load_split("mvtec_ad", bottle, "bottle", "train")) == 209
    with pytest.warns(UserWarning, match="no ground_truth"):
        test = load_split("mvtec_ad", bottle, "bottle", "test")
    assert len(test) == 83 and sum(s.label for s in test) == 63
    assert {s.defect for s in test} == {"good", "broken_large", "broken_small", "contamination"}
    assert all(s.mask_paths == () for s in test)

    mpdd = REAL_DATA / "mpdd"
    assert len(load_split("mpdd", mpdd, "metal_plate", "train")) == 54
    test = load_split("mpdd", mpdd, "metal_plate", "test")
    good = [s for s in test if s.label == 0]
    bad = [s for s in test if s.label == 1]
    assert (len(good), len(bad)) == (26, 71)
    assert all(len(s.mask_paths) == 1 and s.mask_paths[0].is_file() for s in bad)
    assert load_mask(bad[0], (64, 64)).any()
