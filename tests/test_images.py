"""Image inputs: formats, modes, orientation, arrays and tensors, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ulsad import ULSAD, ULSADError
from ulsad.images import load_image, to_tensor

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
