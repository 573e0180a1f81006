"""Checkpoints: identical round trip, half precision, clear errors, atomic writes, no pickle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import ulsad.checkpoint as ckpt
from ulsad import ULSAD, ULSADError

IMAGES = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def model(trained_checkpoint):
    return ULSAD.from_pretrained(trained_checkpoint)


def test_round_trip_gives_identical_outputs(model, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("pickle on the loading path"))
    loaded = ULSAD.from_pretrained(tmp_path)
    assert loaded.config == model.config
    with torch.no_grad():
        for a, b in zip(model(IMAGES), loaded(IMAGES), strict=True):
            assert torch.equal(a, b)


def test_half_precision_on_disk_stays_within_0_2_percent(model, tmp_path, synthetic_root):
    ckpt.save_pretrained(model, tmp_path, dtype=torch.float16)
    full = (tmp_path / "model.safetensors").stat().st_size
    loaded = ULSAD.from_pretrained(tmp_path)
    assert loaded.featae.encoder[0].weight.dtype == torch.float32
    images = sorted((synthetic_root / "synthetic" / "test").rglob("*.png"))[::4]
    for a, b in zip(model.predict(images), loaded.predict(images), strict=True):
        scale = max(1.0, abs(a.score))  # fp16 weights: about 0.1% relative deviation
        assert abs(a.score - b.score) <= 2e-3 * scale
        assert np.abs(a.anomaly_map - b.anomaly_map).max() <= 2e-3 * scale
    model.save_pretrained(tmp_path / "fp32")
    assert full < 0.6 * (tmp_path / "fp32" / "model.safetensors").stat().st_size


def test_corrupt_and_wrong_checkpoints_give_clear_errors(model, tmp_path):
    model.save_pretrained(tmp_path / "good")
    truncated = tmp_path / "truncated"
    shutil.copytree(tmp_path / "good", truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ULSADError, match="corrupt or truncated"):
        ULSAD.from_pretrained(truncated)

    other = tmp_path / "other"
    shutil.copytree(tmp_path / "good", other)
    config = json.loads((other / "config.json").read_text())
    config["channels"] = 64
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ULSADError, match=r"does not match its config\.json"):
        ULSAD.from_pretrained(other)

    (other / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ULSADError, match="not an ULSAD config"):
        ULSAD.from_pretrained(other)
    (other / "config.json").unlink()
    with pytest.raises(ULSADError, match=r"config\.json is missing"):
        ULSAD.from_pretrained(other)
    with pytest.raises(ULSADError, match="not found"):
        ULSAD.from_pretrained(tmp_path / "nothing-here")


def test_hub_unreachable_offline_gives_clear_error():
    with pytest.raises(ULSADError, match=r"connection|cache"):
        ULSAD.from_pretrained("nobody/no-such-ulsad-checkpoint")


def test_failed_save_leaves_previous_checkpoint_intact(model, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def broken_save(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
