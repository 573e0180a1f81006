"""Image inputs: formats, modes, orientation, arrays and tensors, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ulsad import ULSAD, ULSADError
from ulsad.card import write_model_card
from ulsad.images import load_image, tile_boxes, to_tensor
from ulsad.inference import iter_predictions, predict_batches
from ulsad.model import AnomalyMaps

RGB = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)


def test_modes_become_upright_8bit_rgb(tmp_path):
    grey = Image.fromarray(RGB[..., 0])
    grey.save(tmp_path / "grey.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "grey.png"))[..., 1], RGB[..., 0])

    sixteen = RGB[..., 0].astype(np.uint16) * 257
    Image.fromarray(sixteen).save(tmp_path / "16bit.png")
    loaded = np.asarray(load_image(tmp_path / "16bit.png"))
    assert loaded.dtype == np.uint8 and np.abs(loaded[..., 0].astype(int) - RGB[..., 0]).max() <= 1

    rgba = Image.fromarray(np.dstack([RGB, np.full(RGB.shape[:2], 255, np.uint8)]))
    rgba.save(tmp_path / "rgba.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "rgba.png")), RGB)

    Image.fromarray(RGB).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert load_image(tmp_path / "cmyk.jpg").mode == "RGB"


def test_exif_rotation_is_applied(tmp_path):
    image = Image.fromarray(RGB)  # 60 wide, 40 high
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg").size == (40, 60)


def test_arrays_and_tensors_agree_with_files():
    expected = np.asarray(load_image(Image.fromarray(RGB)))
    as_float = RGB.astype(np.float32) / 255
    chw_tensor = torch.from_numpy(as_float).permute(2, 0, 1)
    for source in (RGB, as_float, chw_tensor, np.moveaxis(RGB, -1, 0)):
        assert np.array_equal(np.asarray(load_image(source)), expected)
    tensor = to_tensor(load_image(RGB), 64)
    assert tensor.shape == (3, 64, 64) and tensor.min() >= 0 and tensor.max() <= 1


def test_bad_inputs_raise_clear_errors(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ULSADError, match=r"Cannot read .*notes\.png"):
        load_image(tmp_path / "notes.png")
    Image.fromarray(RGB).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ULSADError, match="Cannot read"):
        load_image(tmp_path / "truncated.png")
    with pytest.raises(ULSADError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ULSADError, match="shape"):
        load_image(np.zeros((5, 5, 7), np.uint8))


def test_huge_images_are_refused_before_decoding(tmp_path, monkeypatch):
    import ulsad.images

    Image.fromarray(RGB).save(tmp_path / "big.png")
    monkeypatch.setattr(ulsad.images, "MAX_PIXELS", 1000)
    with pytest.raises(ULSADError, match="downscale"):
        load_image(tmp_path / "big.png")


def test_maps_come_back_at_the_original_size(trained_checkpoint):
    model = ULSAD.from_pretrained(trained_checkpoint)
    prediction = model.predict(RGB)
    assert prediction.anomaly_map.shape == (40, 60)
    assert prediction.local_map.shape == prediction.global_map.shape == (40, 60)
    assert prediction.anomaly_map.dtype == np.float32
    assert prediction.score == pytest.approx(model.predict([RGB, RGB])[1].score, abs=1e-5)


@pytest.mark.parametrize(
    ("size", "count"),
    [
        ((250, 630), 3),
        ((250, 624), 3),
        ((630, 250), 3),
        ((100, 200), 2),
        ((100, 199), 1),
        ((100, 201), 3),
        ((256, 300), 1),
    ],
)
def test_tiles_are_squares_that_cover_an_elongated_image(size, count):
    width, height = size
    boxes = tile_boxes(width, height)
    assert len(boxes) == count
    if count == 1:
        assert boxes == [(0, 0, width, height)]
        return
    short = min(width, height)
    covered = np.zeros((height, width), bool)
    for left, top, right, bottom in boxes:
        assert right - left == bottom - top == short
        assert min(left, top) >= 0 and right <= width and bottom <= height
        covered[top:bottom, left:right] = True
    assert covered.all()


def _constant_maps(images: torch.Tensor) -> AnomalyMaps:
    """A stand-in model: every map of a tile is the tile's mean intensity, and so is its score."""
    level = images.mean(dim=(1, 2, 3))
    maps = level[:, None, None].expand(-1, images.shape[-2], images.shape[-1])
    return AnomalyMaps(level, maps, maps, maps)


def test_tiled_predictions_stitch_tile_maps_and_keep_the_highest_score():
    # 20 x 50: three 20 x 20 tiles at rows 0, 15 and 30, overlapping over rows 15-20 and 30-35.
    image = np.zeros((50, 20, 3), np.uint8)
    image[20:30], image[35:] = 60, 240
    kwargs = {"image_size": 128, "threshold": None}
    tiled = predict_batches(_constant_maps, image, tile=True, **kwargs)
    level = [float(to_tensor(Image.fromarray(image[t : t + 20]), 128).mean()) for t in (0, 15, 30)]
    assert tiled.anomaly_map.shape == (50, 20)
    assert tiled.score == pytest.approx(max(level), abs=1e-6)
    for rows, expected in [
        ((0, 14), level[0]),  # the first tile alone
        ((21, 29), level[1]),
        ((36, 50), level[2]),
        ((16, 19), (level[0] + level[1]) / 2),  # overlaps: the mean of both tiles
        ((31, 34), (level[1] + level[2]) / 2),
    ]:
        values = tiled.anomaly_map[rows[0] : rows[1]]
        assert np.allclose(values, expected, atol=1e-5)
    squashed = predict_batches(_constant_maps, image, tile=False, **kwargs)
    assert np.ptp(squashed.anomaly_map) < 1e-6 and squashed.score < tiled.score
    # At the model's scale (resize=False), each 20-pixel tile side becomes 128 pixels.
    *_, small = next(iter_predictions(_constant_maps, [image], resize=False, tile=True, **kwargs))
    assert small.anomaly_map.shape == (320, 128)


def test_training_on_elongated_images_trains_on_their_tiles(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (192, 64, 3), dtype=np.uint8) for _ in range(6)]
    config = {"image_size": 128, "epochs": 1, "batch_size": 4, "synthetic_defects": 0}
    for tile, per_image in ((True, 3), (False, 1)):
        model = ULSAD.from_preset("lite", tile=tile, local_weight=1.0, **config)
        model.fit(images, out_dir=tmp_path / str(tile), progress=False)
        training = json.loads((tmp_path / str(tile) / "training.json").read_text())
        assert training["n_train_tiles"] == per_image * training["n_train"]
        assert len(training["heldout_scores"]) == per_image * training["n_heldout"]
        assert model.predict(images[0]).anomaly_map.shape == (192, 64)
        write_model_card(tmp_path / str(tile))
        card = (tmp_path / str(tile) / "README.md").read_text()
        assert ("training images gave 15 tiles" in card) == tile  # 5 training images, 1 held out


@pytest.mark.parametrize("boxes", [[(0, 0, 30, 20)], [(0, 0, 20, 20), (10, 0, 30, 20)]])
def test_original_size_maps_stitch_each_distinct_map_once_with_the_same_values(boxes):
    from ulsad.inference import original_size_maps, stitch

    generator = torch.Generator().manual_seed(0)
    combined, other = torch.rand(2, len(boxes), 1, 16, 16, generator=generator)
    cases = {
        "all distinct": torch.cat([combined, other, other * 2], 1),
        "local-only model": torch.cat([combined, combined, torch.zeros_like(combined)], 1),
    }
    for name, tile_maps in cases.items():
        expected = stitch(tile_maps, boxes, (20, 30), (40, 60))
        maps = original_size_maps(tile_maps, boxes, (20, 30), (40, 60))
        for got, want in zip(maps, expected, strict=True):
            assert got.shape == (40, 60) and got.dtype == np.float32, name
            assert np.array_equal(got, want), name
        assert not np.shares_memory(maps[0], maps[1])  # a copy: editing one leaves the other
