"""The global branch reads the whole image when the local branch reads tiles (`global_whole_image`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ulsad import ULSAD
from ulsad.feature_cache import load_inputs, training_count, training_inputs
from ulsad.images import crop_regions, region_fractions, to_tensor, to_tiles
from ulsad.model import GlobalAE
from ulsad.presets import preset


def _elongated(count: int = 6) -> list[np.ndarray]:
    """192 x 64 portraits (3 tiles each): a smooth vertical ramp, so each tile and the whole
    image's square resize all differ, plus noise."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, 192)[:, None, None] * np.ones((1, 64, 3))
    return [np.clip(ramp + rng.normal(0, 10, ramp.shape), 0, 255).astype(np.uint8)
            for _ in range(count)]  # fmt: skip


def test_lite_sets_it_and_the_paper_keeps_it_off():
    assert preset("lite").config.global_whole_image and preset("lite").config.tile
    assert not preset("paper").config.global_whole_image


def test_crop_regions_is_the_identity_on_the_whole_and_cuts_a_half():
    maps = torch.arange(64.0).view(1, 8, 8)
    whole = crop_regions(maps, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    assert torch.equal(whole, maps)
    top = crop_regions(maps, torch.tensor([[0.0, 0.0, 1.0, 0.5]]))
    # The top half (rows 0-3, the continuous band [0, 4)) stretched to 8 rows: sampled at
    # rows 0.25 apart, from -0.25 (clamped to row 0) to 3.25, so within rows 0 and 4.
    assert top.shape == (1, 8, 8) and float(top.max()) < float(maps[0, 4].max())
    assert torch.allclose(top[0, 0], maps[0, 0]) and torch.allclose(top[0, -1], maps[0, 3] + 2)
    assert torch.allclose(top[0, 4], maps[0, 1] + 6)  # row 1.75


def test_whole_images_are_loaded_only_where_an_image_is_tiled():
    images = _elongated(2)
    inputs = load_inputs(images, 128, False, "", tile=True, whole=True)
    assert inputs.tiles.shape == (6, 3, 128, 128) and inputs.wholes.shape == (2, 3, 128, 128)
    assert inputs.source.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(inputs.regions[1], torch.tensor([0.0, 64 / 192, 1.0, 128 / 192]))
    expected = to_tensor(Image.fromarray(images[1]), 128).mul(255).round().to(torch.uint8)
    assert torch.equal(inputs.wholes[1], expected)
    train, masks = training_inputs(inputs)
    assert len(train) == 8  # six tiles (local loss), then two whole images (global losses)
    assert training_count(inputs) == 8  # counted without building them
    assert masks.tolist() == [[True, False]] * 6 + [[False, True]] * 2
    square = [np.zeros((64, 64, 3), np.uint8)] * 2
    square_inputs = load_inputs(square, 128, False, "", tile=True, whole=True)
    assert square_inputs.wholes is None and training_count(square_inputs) == 2


@pytest.fixture
def global_inputs(monkeypatch):
    """Every input the global autoencoder receives (a spy on `GlobalAE.forward`)."""
    seen: list[torch.Tensor] = []
    original = GlobalAE.forward

    def spy(self, normalized_images):
        seen.append(normalized_images.detach().float().clone())
        return original(self, normalized_images)

    monkeypatch.setattr(GlobalAE, "forward", spy)
    return seen


def _is_one_of(batch: torch.Tensor, references: torch.Tensor) -> bool:
    return all(bool((ref - x).abs().amax(dim=(1, 2, 3)).min() < 1e-4)
               for x in batch for ref in [references])  # fmt: skip


def test_the_global_branch_reads_the_whole_image_in_training_and_inference(tmp_path, global_inputs):
    images = _elongated()
    model = ULSAD.from_preset("lite", image_size=128, epochs=2, batch_size=4,
                              synthetic_defects=8, attention_queries=0)  # fmt: skip
    normalize = model.extractor.normalize
    wholes = normalize(torch.stack([to_tensor(Image.fromarray(i), 128) for i in images]))
    tiles = normalize(torch.cat([to_tiles(Image.fromarray(i), 128, True)[0] for i in images]))
    model.fit(images, out_dir=tmp_path, progress=False)
    training = json.loads((tmp_path / "training.json").read_text())
    assert training["n_train_tiles"] == 15 and training["n_train_inputs"] == 20
    trained_on = torch.cat(global_inputs)
    assert len(trained_on) > 0

    # Every input of the global branch in training and selection is a whole image, never a
    # tile: a good one, or one with a synthetic defect pasted in (most of its pixels unchanged).
    def changed(x: torch.Tensor, references: torch.Tensor) -> float:
        return float(((references - x).abs() > 1e-4).float().mean(dim=(1, 2, 3)).min())

    assert max(changed(x, wholes) for x in trained_on) < 0.3
    assert min(changed(x, tiles) for x in trained_on) > 0.5
    assert sum(changed(x, wholes) == 0 for x in trained_on) >= 8  # 2 epochs x a batch of 4

    global_inputs.clear()
    model.config = model.config.replace(local_weight=0.5)  # a model whose map uses the branch
    prediction = model.predict(images[0])
    assert prediction.anomaly_map.shape == (192, 64)
    assert torch.cat(global_inputs).shape[0] == 1  # once, on the whole image
    assert (global_inputs[0][0] - wholes[0]).abs().max() < 1e-4
    # Its map is the whole image's, cut to each tile: the stitched global map varies smoothly
    # along the image, and the score follows from the same fusion as `ULSADModel.combine`.
    assert prediction.global_map.any()

    # Without the field (the paper's behaviour), tiles are what the global branch reads.
    global_inputs.clear()
    model.config = model.config.replace(global_whole_image=False)
    model.predict(images[0])
    assert torch.cat(global_inputs).shape[0] == 3 and _is_one_of(torch.cat(global_inputs), tiles)


def test_square_images_score_as_before(global_inputs):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    model = ULSAD.from_preset("lite", image_size=128, local_weight=0.5)
    model.eval()
    on = model.predict(image)
    model.config = model.config.replace(global_whole_image=False)
    off = model.predict(image)
    assert on.score == off.score and np.array_equal(on.global_map, off.global_map)
    assert region_fractions([(0, 0, 64, 64)], 64, 64).tolist() == [[0.0, 0.0, 1.0, 1.0]]
