"""Step-based schedule, synthetic defects, and choices made on them without any test image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ulsad import ULSAD, ULSADConfig, ULSADError
from ulsad.data import make_synthetic_dataset
from ulsad.synthetic_defects import KINDS, LOGICAL_KINDS, perlin_noise, synthetic_defects
from ulsad.validation import ValidationMaps, best_weight, f1_threshold, fusion_table


# ----------------------------------------------------------------------------- schedule
@pytest.mark.parametrize(
    ("n_train", "batch_size", "steps", "epochs"),
    [
        (31, 8, 160, 40),  # 3 full batches + one of 7: 4 steps an epoch
        (49, 8, 1000, 167),  # 6 full + one of 1 (dropped: BatchNorm needs 2): 6 an epoch
        (680, 8, 1000, 12),  # 85 an epoch: 11.76 -> 12
        (2, 8, 10, 10),  # one batch of 2
        (5000, 8, 10, 1),  # never fewer than one epoch
    ],
)
def test_step_budget_rounds_up_to_whole_epochs(n_train, batch_size, steps, epochs):
    config = ULSADConfig(epochs=None, steps=steps, batch_size=batch_size)
    assert config.training_epochs(n_train) == epochs


def test_explicit_epochs_override_the_step_budget():
    config = ULSADConfig(epochs=7, steps=100_000)
    assert config.training_epochs(10) == config.training_epochs(10_000) == 7
    assert ULSAD.from_preset("paper", pretrained_backbone=False).config.epochs == 200
    with pytest.raises(ULSADError, match="steps"):
        ULSADConfig(epochs=None, steps=0)


# ----------------------------------------------------------------------------- synthetic defects
@pytest.fixture(scope="module")
def good_images() -> torch.Tensor:
    """Four images of a dark object on a light, textured background (uint8, 64 x 64)."""
    rng = np.random.default_rng(0)
    images = rng.integers(180, 220, size=(4, 3, 64, 64)).astype(np.uint8)
    images[:, :, 16:48, 20:44] = 40
    return torch.from_numpy(images)


def test_synthetic_defects_are_deterministic_per_seed(good_images):
    a_images, a_masks, a_kinds = synthetic_defects(good_images, 12, seed=3)
    b_images, b_masks, b_kinds = synthetic_defects(good_images, 12, seed=3)
    _, c_masks, _ = synthetic_defects(good_images, 12, seed=4)
    assert torch.equal(a_images, b_images) and torch.equal(a_masks, b_masks)
    assert a_kinds == b_kinds == list(KINDS) * 2
    assert not torch.equal(a_masks, c_masks)
    # Each image depends only on (seed, index): asking for fewer gives the same first ones.
    fewer, fewer_masks, _ = synthetic_defects(good_images, 5, seed=3)
    assert torch.equal(fewer, a_images[:5]) and torch.equal(fewer_masks, a_masks[:5])


def test_synthetic_defect_masks_cover_exactly_the_changed_pixels(good_images):
    images, masks, kinds = synthetic_defects(good_images, 24, seed=0)
    assert images.dtype == torch.uint8 and masks.dtype == torch.bool
    sources = good_images.repeat(6, 1, 1, 1)  # image i is made from good image i % 4
    for image, mask, source, kind in zip(images, masks, sources, kinds, strict=True):
        changed = (image != source).any(dim=0)
        assert mask.any(), kind
        assert not (changed & ~mask).any(), f"{kind}: a pixel outside the mask changed"
        assert changed[mask].float().mean() > 0.3, f"{kind}: the mask is mostly unchanged"


def test_missing_part_is_painted_with_the_background_colour(good_images):
    index = KINDS.index("missing")
    images, masks, _ = synthetic_defects(good_images, index + 1, seed=0, kinds=KINDS)
    region = images[index].permute(1, 2, 0)[masks[index]].float()
    # The object is dark (40) and the background light (180-220): the hole must be light.
    assert region.mean() > 150
    assert "missing" in LOGICAL_KINDS
    with pytest.raises(ValueError, match="unknown"):
        synthetic_defects(good_images, 1, seed=0, kinds=("nonsense",))


def test_perlin_noise_is_smooth_and_bounded():
    noise = perlin_noise(64, (4, 4), np.random.default_rng(0))
    assert noise.shape == (64, 64) and np.abs(noise).max() <= 1.5
    assert np.abs(np.diff(noise, axis=1)).max() < 0.3  # neighbouring pixels are close
    assert noise.std() > 0.1


# ----------------------------------------------------------------------------- selection
def _maps(local_signal: float, global_signal: float, seed: int = 0) -> ValidationMaps:
    """Good maps are noise; defect maps add `signal` inside each mask (local and global)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(8, 32, 32, dtype=torch.bool)
    for i in range(8):
        masks[i, 4 * (i % 4) : 4 * (i % 4) + 8, 3 * i : 3 * i + 6] = True

    def noise(n: int) -> torch.Tensor:
        return torch.rand(n, 32, 32, generator=g)

    return ValidationMaps(
        good_local=noise(6),
        good_global=noise(6),
        defect_local=noise(8) + local_signal * masks,
        defect_global=noise(8) + global_signal * masks,
        masks=masks,
    )


def test_fusion_weight_follows_the_branch_that_sees_the_synthetic_defects():
    quantiles = (0.9, 0.995)
    local_table = fusion_table(_maps(local_signal=0.5, global_signal=0.0), quantiles)
    assert best_weight(local_table) == 1.0
    assert local_table[1.0]["pixel_auroc"] > 0.85 > 0.6 > local_table[0.0]["pixel_auroc"]
    global_table = fusion_table(_maps(local_signal=0.0, global_signal=0.5), quantiles)
    assert best_weight(global_table) == 0.0
    both = fusion_table(_maps(local_signal=0.5, global_signal=0.5), quantiles)
    assert best_weight(both) == 0.5  # two views with independent noise: their mean is best
    tie = {w: {"score": 0.8} for w in (0.0, 0.25, 0.5, 0.75, 1.0)}
    assert best_weight(tie) == 0.5  # ties go to the paper's weight
    no_global = _maps(0.5, 0.0)
    no_global.good_global = no_global.defect_global = None
    assert list(fusion_table(no_global, quantiles)) == [1.0]


def test_f1_threshold_separates_the_classes_weighted_equally():
    good = np.array([0.1, 0.2, 0.3])
    defects = np.array([0.25, 0.5, 0.6, 0.7, 0.8, 0.9])
    t = f1_threshold(good, defects)
    assert 0.3 < t < 0.5  # all good below; the one overlapping defect is given up
    assert f1_threshold(np.array([0.1]), np.array([0.9])) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_validation")
    make_synthetic_dataset(root, "tiny", n_train=12, n_test_good=3, n_test_defect=3, size=64)
    return root


def test_choices_use_training_images_only(tiny_root, tmp_path, monkeypatch):
    """Fusion weight, stopping epoch and thresholds come from the training folder alone: no test
    image is ever read while training, and the choices are recorded."""
    import ulsad.train

    read = []
    real_load = ulsad.train.load_image
    monkeypatch.setattr(
        ulsad.train, "load_image", lambda item: read.append(item) or real_load(item)
    )
    model = ULSAD.from_preset(
        "lite", epochs=3, batch_size=4, local_weight=None, synthetic_defects=6, validation_points=3
    )
    model.fit(tiny_root, category="tiny", out_dir=tmp_path, progress=False)
    assert read and all("train" in Path(p).parts for p in read), read
    assert not any("test" in Path(p).parts for p in read)
    summary = json.loads((tmp_path / "training.json").read_text())
    choice = summary["synthetic_validation"]
    assert choice["epochs_compared"] == [1, 2, 3]
    assert choice["chosen_epoch"] in (1, 2, 3)
    assert set(choice["fusion_table"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
    table = {float(w): row for w, row in choice["fusion_table"].items()}
    assert choice["local_weight"] == best_weight(table)
    saved = ULSAD.from_pretrained(tmp_path)
    assert saved.config.local_weight == choice["local_weight"] == saved.fusion_weight
    assert np.isfinite(float(saved.threshold_f1))
    assert summary["threshold_f1"] == pytest.approx(float(saved.threshold_f1))
    with pytest.raises(ULSADError, match="synthetic_defects"):
        ULSAD.from_preset("lite", local_weight=None, synthetic_defects=0)


# ----------------------------------------------------------------------------- logical defects
def _layout_image(rng: np.random.Generator, defect: str | None) -> tuple[np.ndarray, np.ndarray]:
    """256 px: a yellow disc on the left and a blue one on the right, on a noisy grey ground.
    Logical defects keep every disc intact, so each patch still looks like a normal patch:
    ``swapped`` (the colours trade places), ``missing`` (the blue disc is gone) and ``duplicated``
    (two yellow discs)."""
    size, radius = 256, 22
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.full((size, size, 3), 120.0) + rng.normal(0, 6, size=(size, size, 3))
    mask = np.zeros((size, size), dtype=bool)
    yellow, blue = np.array([220.0, 190.0, 40.0]), np.array([40.0, 70.0, 210.0])
    left, right = (96 + rng.integers(-3, 4), 128), (160 + rng.integers(-3, 4), 128)
    colours = {"swapped": (blue, yellow), "duplicated": (yellow, yellow)}.get(
        defect, (yellow, blue)
    )
    for (x, y), colour, name in zip((left, right), colours, ("left", "right"), strict=True):
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
        if defect == "missing" and name == "right":
            mask |= disc
            continue
        image[disc] = colour
        if defect == "swapped" or (defect == "duplicated" and name == "right"):
            mask |= disc
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _write_layout_set(root: Path, n_train: int, n_good: int, n_defect: int) -> None:
    from PIL import Image

    kinds = ("swapped", "missing", "duplicated")
    jobs = [("train/good", None, i) for i in range(n_train)]
    jobs += [("test/good", None, i) for i in range(n_good)]
    jobs += [(f"test/{kinds[i % 3]}", kinds[i % 3], i) for i in range(n_defect)]
    for folder, defect, i in jobs:
        split = ("train/good", "test/good").index(folder) if defect is None else 2
        image, mask = _layout_image(np.random.default_rng((split, i)), defect)
        (root / "layout" / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "layout" / folder / f"{i:03d}.png")
        if defect is not None:
            gt = root / "layout" / "ground_truth" / defect
            gt.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save(gt / f"{i:03d}_mask.png")


@pytest.mark.slow
def test_full_model_finds_logical_layout_defects(tmp_path):
    """Colours swapped, a part missing or duplicated: each disc is intact, only the layout is
    wrong. The full model, fused as the paper fuses, separates them from good images.

    (A local-only model found them too here, at 0.98: its FeatAE sees about 120 px of the 256 px
    image, so two discs 64 px apart are within its view.)"""
    from ulsad.data import load_split
    from ulsad.metrics import image_auroc

    _write_layout_set(tmp_path, n_train=40, n_good=9, n_defect=18)
    test = load_split("mvtec_ad", tmp_path, "layout", "test")
    labels = [s.label for s in test]
    model = ULSAD.from_preset(
        "lite", epochs=None, steps=200, lr=1e-3, lr_schedule="cosine", local_weight=0.5
    )
    model.fit(tmp_path, category="layout", progress=False)
    scores = [p.score for p in model.predict([s.path for s in test])]
    assert image_auroc(labels, scores) >= 0.9
    by_kind = {}
    for sample, score in zip(test, scores, strict=True):
        by_kind.setdefault(sample.defect, []).append(score)
    good = max(by_kind.pop("good"))
    for kind, values in by_kind.items():  # most of each kind score above every good image
        assert np.mean(np.array(values) > good) >= 0.5, kind
