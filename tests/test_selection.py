"""Step-based schedule, synthetic defects, and model selection on them without any test image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ulsad import ULSAD, ULSADError
from ulsad.data import make_layout_dataset, make_synthetic_dataset
from ulsad.data.synthetic import LAYOUT_DEFECTS
from ulsad.model import top_mean
from ulsad.presets import preset
from ulsad.recipe import TrainingRecipe
from ulsad.selection import EpochChoice, global_map_adds_nothing, pruned_after
from ulsad.selection.defects import (
    DIAGNOSTIC_KINDS,
    KINDS,
    LOGICAL_KINDS,
    STRUCTURAL_KINDS,
    parts,
    perlin_noise,
    synthetic_defects,
)
from ulsad.selection.scoring import (
    SelectionMaps,
    best_weight,
    defect_metrics,
    f1_threshold,
    fusion_table,
)


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
    config = TrainingRecipe(epochs=None, steps=steps, batch_size=batch_size)
    assert config.training_epochs(n_train) == epochs


@pytest.mark.parametrize(
    ("n_train", "min_epochs", "epochs"),
    [
        (49, 5, 34),  # 12 steps an epoch: 400 steps are 34 epochs, the floor does not bind
        (663, 5, 5),  # 166 an epoch: 400 steps would be 3 epochs (498 steps); 5 are 830
        (663, 1, 3),
        (5000, 5, 5),
    ],
)
def test_step_budget_trains_at_least_min_epochs(n_train, min_epochs, epochs):
    config = TrainingRecipe(epochs=None, steps=400, batch_size=4, min_epochs=min_epochs)
    assert config.training_epochs(n_train) == epochs


def test_explicit_epochs_override_the_step_budget():
    config = TrainingRecipe(epochs=7, steps=100_000)
    assert config.training_epochs(10) == config.training_epochs(10_000) == 7
    assert TrainingRecipe(epochs=2, min_epochs=5).training_epochs(663) == 2  # and the floor
    assert ULSAD.from_preset("paper", pretrained_backbone=False).recipe.epochs == 200
    with pytest.raises(ULSADError, match="steps"):
        TrainingRecipe(epochs=None, steps=0)
    with pytest.raises(ULSADError, match="min_epochs"):
        TrainingRecipe(min_epochs=0)


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
    assert a_kinds == b_kinds == (list(KINDS) * 2)[:12]
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


@pytest.fixture(scope="module")
def parts_scene() -> torch.Tensor:
    """Four 64 x 64 scenes of two separate discs (radius 6) on a noisy grey ground (uint8)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:64, 0:64]
    images = 120 + rng.normal(0, 4, size=(4, 64, 64, 3))
    colours = ([200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40])
    for image, colour in zip(images, colours, strict=True):
        for x in (16, 48):
            image[(yy - 32) ** 2 + (xx - x) ** 2 <= 36] = colour
    return torch.from_numpy(np.clip(images, 0, 255).astype(np.uint8)).permute(0, 3, 1, 2)


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy().astype(np.float32)


def test_parts_are_whole_separate_parts_on_a_plain_ground(parts_scene, good_images):
    found = parts(_hwc(parts_scene[0]))
    assert len(found) == 2
    found.sort(key=lambda part: np.nonzero(part)[1].mean())
    for part, x in zip(found, (16, 48), strict=True):
        ys, xs = np.nonzero(part)  # the whole disc and its 2-pixel rim, nothing else
        assert abs(xs.mean() - x) < 0.5 and abs(ys.mean() - 32) < 0.5
        assert xs.max() - xs.min() == 12 + 4
    # An object that fills a fifth of the frame on a textured ground has no parts.
    assert parts(_hwc(good_images[0])) == []
    assert parts(np.full((64, 64, 3), 100, np.float32)) == []


def test_logical_defects_take_whole_parts_in_a_scene_of_parts(parts_scene):
    part_kinds = ("missing", "duplicate", "moved")  # the kinds that take whole parts
    assert set(part_kinds) <= set(LOGICAL_KINDS)
    count = 3 * len(part_kinds) * len(parts_scene)
    images, masks, kinds = synthetic_defects(parts_scene, count, seed=5, kinds=part_kinds)
    sources = parts_scene.repeat(count // len(parts_scene), 1, 1, 1)
    ground = torch.tensor([120.0, 120.0, 120.0])
    for image, mask, source, kind in zip(images, masks, sources, kinds, strict=True):
        before, after = parts(_hwc(source)), parts(_hwc(image))
        changed = (image != source).any(dim=0)
        assert not (changed & ~mask).any(), kind
        expected = {"missing": 1, "duplicate": 3, "moved": 2}[kind]
        assert len(after) == expected, kind
        if kind in ("missing", "moved"):  # a whole part became ground, with the ground's noise
            gone = next(m for m in before if (m & mask.numpy()).any())
            region = image.permute(1, 2, 0)[torch.from_numpy(gone)].float()
            assert (region.mean(0) - ground).abs().max() < 3
            assert 2 < region.std(0).mean() < 7
        if kind in ("duplicate", "moved"):  # the new part is a copy of an old one, on free ground
            new = next(m for m in after if not any((m & b).any() for b in before))
            assert mask.numpy()[new].all()
            colours = {tuple(_hwc(source)[m].mean(0).round(-1)) for m in before}
            assert tuple(_hwc(image)[new].mean(0).round(-1)) in colours


def test_a_lone_part_is_never_moved_whole(parts_scene):
    """A lone part's place may vary among good images, so moving it whole is no defect."""

    def crop(mask: np.ndarray) -> np.ndarray:
        rows, cols = np.nonzero(mask)
        return mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]

    lone = parts_scene.clone()
    lone[:, :, 20:45, 36:61] = lone[:, :, 0:25, 36:61]  # ground over the right disc
    (disc,) = parts(_hwc(lone[0]))
    images, _, _ = synthetic_defects(lone, 16, seed=0, kinds=("moved",))
    for image in images:
        after = parts(_hwc(image))
        whole_move = len(after) == 1 and not (after[0] & disc).any()
        assert not (whole_move and np.array_equal(crop(after[0]), crop(disc)))


def test_perlin_noise_is_smooth_and_bounded():
    noise = perlin_noise(64, (4, 4), np.random.default_rng(0))
    assert noise.shape == (64, 64) and np.abs(noise).max() <= 1.5
    assert np.abs(np.diff(noise, axis=1)).max() < 0.3  # neighbouring pixels are close
    assert noise.std() > 0.1


# ----------------------------------------------------------------------------- selection
def _maps(local_signal: float, global_signal: float, seed: int = 0) -> SelectionMaps:
    """Good maps are noise; defect maps add `signal` inside each mask (local and global)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(8, 32, 32, dtype=torch.bool)
    for i in range(8):
        masks[i, 4 * (i % 4) : 4 * (i % 4) + 8, 3 * i : 3 * i + 6] = True

    def noise(n: int) -> torch.Tensor:
        return torch.rand(n, 32, 32, generator=g)

    return SelectionMaps(
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


def test_the_global_map_keeps_its_share_when_the_local_weight_is_capped():
    """`max_local_weight` (e.g. 0.75): the local map's best weight on synthetic defects is the
    cap, never 1.0; a weight below the cap still wins where it is best; a table with no weight
    under the cap (no global branch) keeps its own."""
    quantiles = (0.9, 0.995)
    local_table = fusion_table(_maps(local_signal=0.5, global_signal=0.0), quantiles)
    assert best_weight(local_table) == 1.0
    assert best_weight(local_table, most_local=0.75) == 0.75
    global_table = fusion_table(_maps(local_signal=0.0, global_signal=0.5), quantiles)
    assert best_weight(global_table, most_local=0.75) == 0.0
    assert best_weight({1.0: {"score": 0.9}}, most_local=0.75) == 1.0
    # an option, not a default: it costs structural categories (docs/presets.md)
    assert preset("lite").recipe.max_local_weight == preset("paper").recipe.max_local_weight == 1
    assert preset("lite", max_local_weight=0.75).recipe.max_local_weight == 0.75
    choice = EpochChoice()
    record = choice.consider(ULSAD.from_preset("lite", pretrained_backbone=False), 3,
                             local_table, 0.75)  # fmt: skip
    assert record["local_weight"] == 0.75 and choice.state["local_weight"] == 0.75
    assert record["local_only_score"] == local_table[1.0]["score"]  # still compared


def test_each_defect_kind_counts_the_same_whatever_its_number_of_regions():
    """AUPRO averages over connected regions: pooled, a kind whose masks are many small islands
    (Perlin blobs) outweighs the others. The table is the mean over kinds of each kind's metrics
    (`defect_metrics`), so a map that finds only the islands no longer scores as if it found
    most defects."""
    good = 0.1 * torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(0))
    defect = 0.1 * torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(1))
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[:2, 2:30:4, 2:30:4] = True  # "islands": 49 one-pixel regions each, all seen
    defect[:2][masks[:2]] = 1.0
    masks[2:, 8:24, 8:24] = True  # "blocks": one region each, missed by the map
    maps = SelectionMaps(good, None, defect, None, masks, ["islands"] * 2 + ["blocks"] * 2)
    row = fusion_table(maps, (0.9, 0.995))[1.0]
    per_kind = [defect_metrics(good, defect[i], masks[i], lambda m: m.amax(dim=(1, 2)))
                for i in (slice(0, 2), slice(2, 4))]  # fmt: skip
    for key in ("image_auroc", "pixel_auroc", "aupro", "score"):
        assert row[key] == pytest.approx(np.mean([k[key] for k in per_kind]), abs=1e-4)
    assert per_kind[0]["aupro"] > 0.95 and per_kind[1]["aupro"] < 0.4
    maps.kinds = None  # pooled: 98 island regions against 2 blocks
    assert fusion_table(maps, (0.9, 0.995))[1.0]["aupro"] > row["aupro"] + 0.25
    # A kind whose masks came out empty has no pixel metrics: left out, not an error.
    empty = SelectionMaps(good, None, torch.cat([defect, good[:1]]), None,
                           torch.cat([masks, torch.zeros_like(masks[:1])]),
                           ["islands"] * 2 + ["blocks"] * 2 + ["empty"])  # fmt: skip
    assert fusion_table(empty, (0.9, 0.995))[1.0] == pytest.approx(row)


def test_image_score_rule_is_the_models_in_validation_too():
    """A good map with one bright pixel and a defect map with a dimmer patch: the maximum ranks
    the good image higher, the mean of the top 2% (20 of 1,024 pixels) the defect; the
    synthetic-defect image AUROC follows the rule it is given (the model's), as scoring does."""
    g = torch.Generator().manual_seed(0)
    good = 0.01 * torch.rand(4, 32, 32, generator=g)
    good[:, 5, 5] = 1.0
    defect = 0.01 * torch.rand(4, 32, 32, generator=g)
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[:, 10:18, 10:18] = True  # 64 pixels, 6% of the map
    defect[masks] = 0.5
    assert (top_mean(good, 1) > top_mean(defect, 1)).all()
    assert (top_mean(good, 20) < top_mean(defect, 20)).all()
    assert torch.equal(top_mean(defect, 1), defect.amax(dim=(1, 2)))
    assert torch.allclose(
        top_mean(good, 20), (1.0 + good.flatten(1).sort(1).values[:, -20:-1].sum(1)) / 20
    )
    maps = SelectionMaps(good, None, defect, None, masks)
    by_max = fusion_table(maps, (0.9, 0.995))[1.0]["image_auroc"]
    by_top = fusion_table(maps, (0.9, 0.995), image_score=lambda m: top_mean(m, 20))
    assert by_max == 0.0 and by_top[1.0]["image_auroc"] == 1.0


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
    import ulsad.feature_cache

    read = []
    real_load = ulsad.feature_cache.load_image
    monkeypatch.setattr(
        ulsad.feature_cache, "load_image", lambda item: read.append(item) or real_load(item)
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
    with pytest.raises(ULSADError, match="synthetic_defects"):
        ULSAD.from_preset("lite", synthetic_defects=0)  # lite chooses its fusion weight


# ----------------------------------------------------------------------------- pruning
def test_training_with_a_capped_local_weight_records_the_cap(tiny_root, tmp_path):
    """`max_local_weight` reaches the choice in training: the weight written to the config is
    the best of the recorded table's weights up to the cap, and training.json's rule says so."""
    model = ULSAD.from_preset("lite", pretrained_backbone=False, epochs=2, batch_size=4,
                              synthetic_defects=6, max_local_weight=0.25)  # fmt: skip
    model.fit(tiny_root, category="tiny", out_dir=tmp_path, progress=False)
    summary = json.loads((tmp_path / "training.json").read_text())
    chosen = summary["synthetic_validation"]
    table = {float(w): row for w, row in chosen["fusion_table"].items()}
    assert set(table) == {0.0, 0.25, 0.5, 0.75, 1.0}  # all still compared
    assert chosen["local_weight"] == best_weight(table, most_local=0.25)
    assert chosen["local_weight"] <= 0.25 and model.config.local_weight == chosen["local_weight"]
    assert chosen["rule"].endswith("local weight at most 0.25")


def test_pruning_starts_at_the_first_selection_point_that_drops_the_global_branch():
    recipe = TrainingRecipe(synthetic_defects=8, prune_global=True)
    model = ULSAD.from_preset("lite", pretrained_backbone=False)
    no_global = ULSAD.from_preset("lite", pretrained_backbone=False, global_branch=False,
                                  attention_loss=False)  # fmt: skip
    history = [{"epoch": 1},
               {"epoch": 2, "synthetic": {"local_weight": 0.75, "score": 0.9, "local_only_score": 0.8}},
               {"epoch": 3}, {"epoch": 4, "synthetic": {"local_weight": 1.0, "score": 0.9}},
               {"epoch": 6, "synthetic": {"local_weight": 0.5, "score": 0.9}}]  # fmt: skip
    assert pruned_after(recipe, model, history) == 4
    assert pruned_after(recipe, model, history[:3]) is None
    assert pruned_after(recipe.replace(prune_global=False), model, history) is None
    assert pruned_after(recipe, no_global, history) is None  # nothing to prune
    # A weight on the global map that ties with the local map alone (within 0.001): pruned. A
    # small but real gain (the layout set's 0.0049 at one point) keeps the global branch training.
    near = {"local_weight": 0.75, "score": 0.9642, "local_only_score": 0.9640}
    small = {**near, "local_only_score": 0.9593}
    far = {**near, "local_only_score": 0.9500}
    assert pruned_after(recipe, model, [{"epoch": 2, "synthetic": near}]) == 2
    assert pruned_after(recipe, model, [{"epoch": 2, "synthetic": small}]) is None
    assert pruned_after(recipe, model, [{"epoch": 2, "synthetic": far}]) is None


def test_local_only_loss_leaves_the_global_branch_untouched():
    model = ULSAD.from_preset("lite", pretrained_backbone=False).train()
    size = model.config.image_size
    images = torch.rand(2, 3, size, size)
    normalized = model.extractor.normalize(images)
    features = model.features(normalized)
    full = model.losses(features, normalized)
    local = model.losses(features, normalized, local_only=True)
    assert local.total.item() == local.local.item() == pytest.approx(full.local.item(), rel=1e-5)
    assert local.attention.item() == local.global_local.item() == 0
    assert full.global_local.item() > 0
    local.total.backward()
    assert all(p.grad is None for p in model.global_ae.parameters())
    assert model.featae.encoder[0].weight.grad.abs().sum() > 0


def test_pruned_global_branch_stops_changing(tiny_root, tmp_path):
    """With the local map alone chosen at the first selection point, the global autoencoder's
    weights change until then and never after; the checkpoint records when."""
    model = ULSAD.from_preset("lite", epochs=4, batch_size=4, local_weight=1.0,
                              synthetic_defects=6, validation_points=2)  # fmt: skip
    assert model.recipe.prune_global  # the lite default

    def global_state():
        return {k: v.clone() for k, v in model.global_ae.state_dict().items()}

    snapshots = [global_state()]

    def snapshot(epoch, epochs, train_loss, val_loss):
        snapshots.append(global_state())

    model.fit(tiny_root, category="tiny", out_dir=tmp_path, progress=False, callback=snapshot)
    summary = json.loads((tmp_path / "training.json").read_text())
    assert summary["synthetic_validation"]["global_pruned_after"] == 2

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    assert not same(snapshots[0], snapshots[1]) and not same(snapshots[1], snapshots[2])
    assert same(snapshots[2], snapshots[3]) and same(snapshots[3], snapshots[4])


# ----------------------------------------------------------------------------- logical defects
def _layout_aurocs(root: Path, out_dir: Path, **overrides) -> dict[str, float]:
    """Test image AUROC on the layout set (all, and per defect kind) of a `lite` model trained
    with 200 steps and `overrides`."""
    from ulsad.data import load_split
    from ulsad.metrics import image_auroc

    test = load_split("mvtec_ad", root, "layout", "test")
    paths, labels = [s.path for s in test], np.array([s.label for s in test])
    kinds = np.array([s.defect for s in test])
    model = ULSAD.from_preset("lite", steps=200, **overrides)
    model.fit(root, category="layout", progress=False, out_dir=out_dir)
    scores = np.array([p.score for p in model.predict(paths)])
    aurocs = {"all": image_auroc(labels, scores)}
    for kind in LAYOUT_DEFECTS:
        keep = (kinds == kind) | (labels == 0)
        aurocs[kind] = image_auroc(labels[keep], scores[keep])
    return aurocs


@pytest.fixture(scope="module")
def layout_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layout")
    make_layout_dataset(root)  # 40 training, 9 good and 18 defective test images
    return root


@pytest.fixture(scope="module")
def local_only_aurocs(layout_root) -> dict[str, float]:
    """The local-only model (`global_branch=False`): every patch of a defective image is normal."""
    overrides = {"global_branch": False, "attention_loss": False}
    return _layout_aurocs(layout_root, layout_root / "local", **overrides)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [40, 41, 42])
def test_global_branch_finds_logical_defects_that_the_local_branch_misses(
    seed, layout_root, local_only_aurocs
):
    """Same training, same budget: the full model, as the defaults train it, separates a wrong
    colour pairing and a missing part from good images; the local-only model does not. At every
    seed (other held-out images, other synthetic defects), the synthetic-defect validation gives
    the global map weight and keeps its branch training: in a scene of separate parts, the
    synthetic logical defects take whole parts and leave no local trace.

    (Measured: the defaults choose the local weight 0.75 at every seed and score 0.90 / 0.81 /
    0.88 image AUROC (mismatched 0.80 / 0.63 / 0.77, missing 1.00); the local-only model 0.41
    (0.35, 0.47). When the logical kinds cut regions out of the discs, seed 42 chose the local
    map alone and scored 0.34.)"""
    full = _layout_aurocs(layout_root, layout_root / f"full-{seed}", seed=seed)
    record = json.loads((layout_root / f"full-{seed}" / "training.json").read_text())
    chosen = record["synthetic_validation"]
    assert chosen["local_weight"] < 1.0 and chosen["global_pruned_after"] is None, chosen
    assert chosen["part_scenes"] == chosen["heldout_inputs"] == 4, chosen  # two discs each
    assert full["all"] >= 0.8, full
    assert local_only_aurocs["all"] <= 0.65, local_only_aurocs
    for kind in LAYOUT_DEFECTS:  # the global branch adds each kind, not just one
        assert full[kind] >= local_only_aurocs[kind] + 0.2, (kind, full, local_only_aurocs)


# ----------------------------------------------------------------------------- logical kinds
NEW_LOGICAL = ("swap", "recolour", "erase", "fill_level", "transplant")


@pytest.fixture(scope="module")
def product_photos() -> torch.Tensor:
    """Three 128 x 128 "bottles" on a dark ground: a yellow body filled to a level, a white
    label with dark print, a fruit icon; noisy, as a photo (uint8)."""
    rng = np.random.default_rng(2)
    images = []
    for shift in (0, 3, -2):
        image = 20 + rng.normal(0, 3, size=(128, 128, 3))
        image[20 + shift : 120, 34:94] = (220, 190, 60)  # the body, filled
        image[20 + shift : 40 + shift, 34:94] = (200, 200, 210)  # the empty part above the level
        image[70:100, 40:88] = (245, 240, 230)  # the label
        image[80:84, 46:82] = (30, 30, 30)  # its print
        image[50:62, 58:70] = (200, 60, 40)  # the icon
        image += rng.normal(0, 4, size=image.shape)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("kind", NEW_LOGICAL)
def test_each_new_logical_kind_is_seeded_and_masks_exactly_what_it_changed(kind, product_photos):
    assert kind in LOGICAL_KINDS + DIAGNOSTIC_KINDS and kind not in STRUCTURAL_KINDS
    images, masks, kinds = synthetic_defects(product_photos, 6, seed=5, kinds=(kind,))
    again, again_masks, _ = synthetic_defects(product_photos, 6, seed=5, kinds=(kind,))
    other, other_masks, _ = synthetic_defects(product_photos, 6, seed=6, kinds=(kind,))
    assert torch.equal(images, again) and torch.equal(masks, again_masks) and kinds == [kind] * 6
    assert not (torch.equal(images, other) and torch.equal(masks, other_masks))
    sources = product_photos.repeat(2, 1, 1, 1)
    for image, mask, source in zip(images, masks, sources, strict=True):
        changed = (image.int() - source.int()).abs().amax(dim=0) > 0
        assert mask.any()
        assert torch.equal(image[:, ~mask], source[:, ~mask])  # unchanged where the mask is 0
        # the mask is where the image changed: most of its pixels did (a swap of two similar
        # regions or a band copied over a similar one leaves the odd pixel as it was)
        assert changed[mask].float().mean() > 0.5, kind
        assert 0.002 < mask.float().mean() < 0.35, kind


def test_recolour_changes_the_colour_of_one_coherent_area(product_photos):
    images, masks, _ = synthetic_defects(product_photos, 3, seed=0, kinds=("recolour",))
    for image, mask, source in zip(images, masks, product_photos, strict=True):
        before = source.permute(1, 2, 0)[mask].float()
        after = image.permute(1, 2, 0)[mask].float()
        assert (after.mean(0) - before.mean(0)).abs().sum() > 100  # another colour
        # its texture is kept: the spread about the mean changes little (clipping aside)
        assert (after - after.mean(0)).std() < (before - before.mean(0)).std() + 5
        from scipy import ndimage

        assert ndimage.label(mask.numpy())[1] <= 3  # one coherent area, not scattered pixels


def test_fill_level_moves_a_horizontal_boundary(product_photos):
    _, masks, _ = synthetic_defects(product_photos, 6, seed=1, kinds=("fill_level",))
    for mask in masks:
        rows, cols = torch.nonzero(mask, as_tuple=True)
        # a band of whole rows across the boundary's width: a rectangle
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(mask.sum()) == height * width and width > height


def test_transplant_takes_another_good_images_content_registered_to_this_one(product_photos):
    """The region comes from another image (never the same one), shifted to lie over this one:
    inside the feathered edge, the pixels are the other image's at the registered place."""
    assert "transplant" in DIAGNOSTIC_KINDS and "transplant" not in KINDS
    base = product_photos[0]
    # the same photo, shifted, its colour channels permuted (grey levels kept: registrable)
    offsets, orders = [(0, 0), (5, -3), (-4, 2)], [[0, 1, 2], [2, 1, 0], [1, 2, 0]]
    photos = torch.stack([torch.roll(base[order], offset, dims=(1, 2))
                          for offset, order in zip(offsets, orders, strict=True)])  # fmt: skip
    images, masks, _ = synthetic_defects(photos, 6, seed=3, kinds=("transplant",))
    again, _, _ = synthetic_defects(photos, 6, seed=3, kinds=("transplant",))
    assert torch.equal(images, again)
    for index, (image, mask) in enumerate(zip(images.int(), masks, strict=True)):
        mine = index % 3
        source = photos[mine].int()
        assert torch.equal(image[:, ~mask], source[:, ~mask]) and mask.any()
        rows, cols = torch.nonzero(mask, as_tuple=True)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        h, w = int(bottom - top), int(right - left)
        core = (slice(None), slice(top + h // 4 + 1, bottom - h // 4 - 1),
                slice(left + w // 4 + 1, right - w // 4 - 1))  # fmt: skip
        # another photo, brought to this one's place: its channels over this one's geometry
        registered = [torch.roll(base[orders[j]], offsets[mine], dims=(1, 2)).int()
                      for j in range(3) if j != mine]  # fmt: skip
        assert any((image[core] - r[core]).abs().max() <= 1 for r in registered), index
        assert (image[core] - source[core]).abs().max() > 20, index  # not itself


# ----------------------------------------------------------------------------- families
def _family_maps() -> SelectionMaps:
    """Structural defects only the local map sees, logical ones only the global map sees."""
    g = torch.Generator().manual_seed(0)
    structural, logical = ["cutpaste", "perlin", "scratch"], ["swap", "recolour", "fill_level"]
    kinds = (structural + logical) * 2
    masks = torch.zeros(len(kinds), 32, 32, dtype=torch.bool)
    for i in range(len(kinds)):
        masks[i, 4 * (i % 6) : 4 * (i % 6) + 8, 2 * i : 2 * i + 8] = True
    is_logical = torch.tensor([k in logical for k in kinds])[:, None, None]

    def noise(n: int) -> torch.Tensor:
        return torch.rand(n, 32, 32, generator=g)

    return SelectionMaps(
        good_local=noise(6),
        good_global=noise(6),
        defect_local=noise(len(kinds)) + 0.8 * (masks & ~is_logical),
        defect_global=noise(len(kinds)) + 0.4 * (masks & is_logical),
        masks=masks,
        kinds=kinds,
    )


def test_a_weight_the_structural_family_alone_would_pick_is_not_chosen_if_logic_needs_global():
    from ulsad.selection import family_regret

    maps = _family_maps()
    table = fusion_table(maps, (0.9, 0.995))
    families = table[1.0]["families"]
    assert set(families) == {"structural", "logical"}
    structural = {w: {"score": row["families"]["structural"]["score"]} for w, row in table.items()}
    assert best_weight(structural) == 1.0  # the structural family alone: the local map only
    chosen = best_weight(table)
    assert chosen < 1.0  # the logical family keeps a weight on the global map
    assert family_regret(table, chosen) < family_regret(table, 1.0)
    # The overall score is the mean of the two families', whatever their numbers of kinds.
    for row in table.values():
        mean = np.mean([f["score"] for f in row["families"].values()])
        assert row["score"] == pytest.approx(mean)
    # One family only: the highest score, as before.
    only = {w: {"score": s} for w, s in ((0.5, 0.8), (1.0, 0.9))}
    assert best_weight(only) == 1.0


def test_the_global_branch_is_not_pruned_while_it_helps_the_logical_family():
    model = ULSAD.from_preset("lite", pretrained_backbone=False)
    table = fusion_table(_family_maps(), (0.9, 0.995))
    point = EpochChoice().consider(model, 2, table)
    assert point["logical_gain"] > 0.05
    assert not global_map_adds_nothing(point)
    # Even a point whose overall choice is the local map alone keeps training the global branch
    # while the logical family gains from it; without that gain it is pruned, as before.
    assert not global_map_adds_nothing({**point, "local_weight": 1.0})
    assert global_map_adds_nothing({**point, "local_weight": 1.0, "logical_gain": 0.0})
    recipe = TrainingRecipe(synthetic_defects=8, prune_global=True)
    history = [{"epoch": 2, "synthetic": {**point, "local_weight": 1.0}}]
    assert pruned_after(recipe, model, history) is None
