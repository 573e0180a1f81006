"""Training: separation on synthetic defects, held-out calibration, exact resume, statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ulsad import ULSAD, ULSADError
from ulsad.config import LEGACY_TRAINING_FIELDS
from ulsad.data import load_split, make_synthetic_dataset
from ulsad.feature_cache import augmented_copies, channel_statistics
from ulsad.resume import STATE_NAME
from ulsad.train import split_holdout


def test_short_training_separates_synthetic_defects(trained_checkpoint, synthetic_root):
    model = ULSAD.from_pretrained(trained_checkpoint)
    test = load_split("mvtec_ad", synthetic_root, "synthetic", "test")
    predictions = model.predict([s.path for s in test])
    labels = [s.label for s in test]
    assert roc_auc_score(labels, [p.score for p in predictions]) >= 0.9
    # Calibrated on held-out good TRAINING images: quantiles set, threshold = max held-out score.
    summary = json.loads((trained_checkpoint / "training.json").read_text())
    assert model.calibrated
    assert summary["n_train"] + summary["n_heldout"] == 30 and summary["n_heldout"] == 3
    assert float(model.threshold) == pytest.approx(max(summary["heldout_scores"]))
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < 0.6 * losses[0]
    assert not (trained_checkpoint / STATE_NAME).exists()  # removed once training finished


def test_a_new_checkpoint_keeps_the_recipe_out_of_its_config(trained_checkpoint):
    """config.json: what building the network needs; training.json: how it was trained."""
    config = json.loads((trained_checkpoint / "config.json").read_text())
    assert not set(config) & LEGACY_TRAINING_FIELDS  # no schedule, precision or augmentation
    assert isinstance(config["local_weight"], float)  # chosen in training, written as a value
    recipe = json.loads((trained_checkpoint / "training.json").read_text())["recipe"]
    assert (recipe["epochs"], recipe["lr"], recipe["batch_size"]) == (10, 1e-3, 4)


def test_train_takes_images_and_held_out_images_not_folders(tmp_path):
    from ulsad.recipe import TrainingRecipe
    from ulsad.train import train

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(8)]
    model = ULSAD.from_preset("lite", image_size=128, local_weight=0.5, pretrained_backbone=False)
    recipe = TrainingRecipe(epochs=1, batch_size=4, synthetic_defects=0)
    train(model, np.stack(images[:6]), images[6:], recipe=recipe, out_dir=tmp_path,
          progress=False)  # fmt: skip
    summary = json.loads((tmp_path / "training.json").read_text())
    assert (summary["n_train"], summary["n_heldout"], summary["epochs"]) == (6, 2, 1)
    with pytest.raises(ULSADError, match="must be images"):
        train(model, tmp_path, recipe=recipe, progress=False)


def test_defect_pixels_score_higher_than_background(trained_checkpoint, synthetic_root):
    from ulsad.data import load_mask

    model = ULSAD.from_pretrained(trained_checkpoint)
    defective = [s for s in load_split("mvtec_ad", synthetic_root, "synthetic", "test") if s.label]
    inside, outside = [], []
    for sample, prediction in zip(
        defective, model.predict([s.path for s in defective]), strict=True
    ):
        mask = load_mask(sample, prediction.anomaly_map.shape)
        inside.append(prediction.anomaly_map[mask].mean())
        outside.append(prediction.anomaly_map[~mask].mean())
    assert np.mean(np.array(inside) > np.array(outside)) >= 0.75


def test_split_holdout_is_deterministic_and_disjoint():
    items = list(range(50))
    train, held = split_holdout(items, 0.1, seed=40)
    assert (train, held) == split_holdout(items, 0.1, seed=40)
    assert len(held) == 5 and not set(train) & set(held) and sorted(train + held) == items
    assert split_holdout(items, 0.1, seed=41)[1] != held
    with pytest.raises(ULSADError, match="at least 2"):
        split_holdout([1], 0.1, seed=0)


def test_channel_statistics_match_torch():
    x = torch.randn(6, 5, 4, 4) * torch.arange(1, 6).view(1, 5, 1, 1) + 3
    mean, std = channel_statistics(x)
    flat = x.transpose(0, 1).reshape(5, -1)
    assert torch.allclose(mean.flatten(), flat.mean(1), atol=1e-5)
    assert torch.allclose(std.flatten(), flat.std(1, unbiased=False), atol=1e-4)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    make_synthetic_dataset(root, "tiny", n_train=10, n_test_good=2, n_test_defect=2, size=64)
    return root


def _fit(root, out, **kwargs):
    model = ULSAD.from_preset("lite", epochs=4, lr_milestones=(2,), batch_size=4)
    return model.fit(root, category="tiny", out_dir=out, save_every=1, progress=False, **kwargs)


def test_resume_after_interruption_continues_where_it_stopped(small_root, tmp_path):
    straight = _fit(small_root, tmp_path / "straight")

    class Crash(RuntimeError):
        pass

    def crash_at_epoch_3(epoch, epochs, train_loss, val_loss):
        if epoch == 3:
            raise Crash

    with pytest.raises(Crash):
        _fit(small_root, tmp_path / "resumed", callback=crash_at_epoch_3)
    state = torch.load(tmp_path / "resumed" / STATE_NAME, weights_only=True)
    assert state["epoch"] == 3
    assert not (tmp_path / "resumed" / "model.safetensors").exists()

    epochs_run = []
    resumed = _fit(small_root, tmp_path / "resumed", callback=lambda e, *_: epochs_run.append(e))
    assert epochs_run == [4]  # only the missing epoch ran
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    history = json.loads((tmp_path / "resumed" / "training.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_resume_refuses_a_state_from_another_run(small_root, tmp_path):
    def crash(epoch, *_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(small_root, tmp_path, callback=crash)
    model = ULSAD.from_preset("lite", epochs=4, lr_milestones=(2,), batch_size=4, lr=2e-3)
    with pytest.raises(ULSADError, match="different training run"):
        model.fit(small_root, category="tiny", out_dir=tmp_path, progress=False)
    # --restart (resume=False) discards it.
    model.fit(small_root, category="tiny", out_dir=tmp_path, progress=False, resume=False)
    assert (tmp_path / "model.safetensors").exists()


def test_fit_on_a_list_of_images(small_root):
    paths = sorted((small_root / "tiny" / "train" / "good").glob("*.png"))
    model = ULSAD.from_preset("lite", epochs=1, batch_size=4).fit(paths, progress=False)
    assert model.calibrated and not model.training
    with pytest.raises(ULSADError, match="at least 2"):
        ULSAD.from_preset("lite", epochs=1).fit(paths[:1], progress=False)


def test_augmented_copies_are_seeded_rotations_and_mirrors():
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    recipe = ULSAD.from_preset("lite").recipe
    mirrors = augmented_copies(images, recipe.replace(augment_copies=4, augment_flip=True), 0)
    assert mirrors.shape == (12, 3, 64, 64) and mirrors.dtype == torch.uint8
    for copy, original in zip(mirrors, images.repeat(4, 1, 1, 1), strict=True):
        assert torch.equal(copy, original) or torch.equal(copy, original.flip(-1))
    assert not torch.equal(mirrors, images.repeat(4, 1, 1, 1))  # some are mirrored
    rotated = recipe.replace(augment_copies=2, augment_rotation=30.0)
    first, again = augmented_copies(images, rotated, 1), augmented_copies(images, rotated, 1)
    assert torch.equal(first, again) and not torch.equal(first, images.repeat(2, 1, 1, 1))
    # A constant image stays constant: reflect padding leaves no blank corners.
    flat = torch.full((1, 3, 64, 64), 77, dtype=torch.uint8)
    assert torch.equal(augmented_copies(flat, rotated, 2), flat.repeat(2, 1, 1, 1))


def test_training_with_augmented_copies_runs_and_resumes_with_them(small_root, tmp_path):
    model = ULSAD.from_preset(
        "lite", epochs=2, batch_size=4, augment_copies=2, augment_rotation=20.0, augment_flip=True
    )
    model.fit(small_root, category="tiny", out_dir=tmp_path, progress=False)
    assert model.calibrated
    saved = json.loads((tmp_path / "training.json").read_text())["recipe"]  # not config.json
    assert (saved["augment_copies"], saved["augment_rotation"], saved["augment_flip"]) == (
        2,
        20.0,
        True,
    )
    with pytest.raises(ULSADError, match="augment_copies"):
        ULSAD.from_preset("lite", augment_copies=-1)


def test_local_only_model_is_calibrated_on_its_local_map(small_root, tmp_path):
    model = ULSAD.from_preset("lite", epochs=1, batch_size=4, global_branch=False,
                              attention_loss=False)  # fmt: skip
    model.fit(small_root, category="tiny", out_dir=tmp_path, progress=False)
    assert model.calibrated and torch.isnan(model.map_quantiles[1]).all()
    summary = json.loads((tmp_path / "training.json").read_text())
    assert float(model.threshold) == pytest.approx(max(summary["heldout_scores"]))
    # Normalised: the held-out maps' high quantile maps to 0.1, so scores sit near it, not at
    # the raw distance scale.
    assert all(0.0 < s < 1.0 for s in summary["heldout_scores"]), summary["heldout_scores"]


@pytest.mark.parametrize("local_only", [False, True])
def test_bfloat16_training_steps_compute_in_bf16_and_keep_float32_weights(local_only):
    import copy

    from ulsad.devices import native_bfloat16
    from ulsad.model import attention
    from ulsad.train import make_optimizer, train_step

    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    base = ULSAD.from_preset("lite", pretrained_backbone=False, image_size=128).train()
    normalized = base.extractor.normalize(images)
    features = base.features(normalized)
    target = attention(features, features)
    losses = {}
    for precision in ("float32", "bfloat16"):
        model = copy.deepcopy(base)
        optimizer, _ = make_optimizer(model, base.recipe, 1)
        losses[precision] = train_step(
            model, optimizer, features, normalized, target, local_only=local_only,
            precision=precision,
        )  # fmt: skip
        assert all(p.dtype == torch.float32 for p in model.parameters())
    # Same weights and batch: bf16 arithmetic moves the loss, but only by its rounding (~1%).
    assert losses["bfloat16"] != losses["float32"]
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.05)
    assert not native_bfloat16(torch.device("meta"))


def test_attention_queries_are_drawn_per_step_from_the_seed_so_an_epoch_repeats_exactly():
    import copy

    from ulsad.train import make_optimizer, prepare_sets, run_epoch

    images = torch.rand(10, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    images = images.mul(255).to(torch.uint8)
    config = {"image_size": 128, "synthetic_defects": 0, "local_weight": 0.5, "batch_size": 4}
    base = ULSAD.from_preset("lite", pretrained_backbone=False, attention_queries=32, **config)
    sets = prepare_sets(base, base.recipe, images[:8], images[8:], torch.device("cpu"), False)
    trained = {}
    for name, queries in (("first", 32), ("again", 32), ("all", 0)):
        model = copy.deepcopy(base)
        recipe = base.recipe.replace(attention_queries=queries)
        optimizer, _ = make_optimizer(model, recipe, 1)
        run_epoch(model, recipe, optimizer, sets, epoch=0, device=torch.device("cpu"))
        trained[name] = model.global_ae.head[-1].weight.detach()
    assert torch.equal(trained["first"], trained["again"])
    assert not torch.allclose(trained["first"], trained["all"], atol=1e-7)
