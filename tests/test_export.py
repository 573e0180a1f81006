"""ONNX export: the graph equals the PyTorch forward pass (random and real images), the ONNX Runtime
predictor equals `ULSAD.predict`, and `ulsad export` / `ulsad predict --backend onnx` work."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from reference import set_statistics
from torch import nn

from ulsad import ULSAD, ULSADError, preset_config
from ulsad.cli import main
from ulsad.data import load_split
from ulsad.export import OnnxPredictor, export_onnx, max_abs_difference, transposed_as_conv

pytest.importorskip("onnxruntime")
TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| over score and maps
SIZE = preset_config("lite").image_size


@pytest.fixture(scope="module")
def model() -> ULSAD:
    images = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    return set_statistics(ULSAD.from_preset("lite").eval(), images)


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def predictor(onnx_path) -> OnnxPredictor:
    return OnnxPredictor(onnx_path, threads=1)


def test_transposed_convolutions_become_equal_convolutions():
    torch.manual_seed(0)
    block = nn.Sequential(
        nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1),  # strided: kept
        nn.ConvTranspose2d(6, 5, 5, padding=2),
        nn.ConvTranspose2d(5, 3, (3, 5), padding=(0, 1), bias=False),
    )
    x = torch.randn(2, 8, 7, 9)
    converted = transposed_as_conv(nn.Sequential(*[m for m in block]))
    kinds = [type(m) for m in converted]
    assert kinds == [nn.ConvTranspose2d, nn.Conv2d, nn.Conv2d]
    with torch.no_grad():
        expected = block(x)
        torch.testing.assert_close(converted(x), expected, atol=1e-5, rtol=1e-5)


def test_onnx_matches_pytorch_on_random_images(model, predictor):
    assert model.calibrated  # normalisation by the map quantiles is part of the graph
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    assert max_abs_difference(model, predictor, images) <= TOLERANCE
    out = predictor(images)
    assert out.score.shape == (3,) and out.anomaly_map.shape == (3, SIZE, SIZE)
    # Maps are on the calibrated scale (about 0.1 at the calibration images' 99.5% quantile), far
    # from zero, so the tolerance above is a real test.
    assert float(out.anomaly_map.max()) > 0.1
    # The graph's score is the model's rule (lite: the mean of the highest 2% of the pixels).
    top = out.anomaly_map.flatten(1).sort(dim=1, descending=True).values[:, : model.score_pixels]
    assert model.score_pixels > 1
    torch.testing.assert_close(out.score, top.mean(dim=1))
    assert not torch.equal(out.local_map, out.global_map)


def test_onnx_of_a_local_only_model_matches_pytorch(model, tmp_path):
    """A model whose chosen fusion gives the global map no weight (the embedded checkpoints)
    exports its local-only path: the global branch skipped, the FeatAE's local half alone."""
    import copy

    local_only = copy.deepcopy(model)
    local_only.config = local_only.config.replace(local_weight=1.0)
    assert not local_only.uses_global_map
    predictor = OnnxPredictor(export_onnx(local_only, tmp_path / "local.onnx"), threads=1)
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    assert max_abs_difference(local_only, predictor, images) <= TOLERANCE
    out = predictor(images)
    assert not out.global_map.any() and float(out.local_map.max()) > 0.1


def test_onnx_batch_size_is_dynamic(predictor):
    images = torch.rand(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    together = predictor(images).anomaly_map
    alone = torch.cat([predictor(images[i : i + 1]).anomaly_map for i in range(5)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_onnx_predictor_matches_predict(model, predictor):
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for h, w in ((300, 420), (256, 256), (520, 200))
    ]
    ours, theirs = model.predict(images), predictor.predict(images)
    for a, b in zip(ours, theirs, strict=True):
        assert b.anomaly_map.shape == a.anomaly_map.shape
        assert abs(a.score - b.score) <= TOLERANCE
        for name in ("anomaly_map", "local_map", "global_map"):
            assert np.abs(getattr(a, name) - getattr(b, name)).max() <= TOLERANCE
        assert b.threshold == pytest.approx(0.25) and b.is_anomalous == a.is_anomalous
    assert predictor.calibrated and predictor.image_size == SIZE and predictor.tile


def _small_model() -> ULSAD:
    """A 128-pixel lite model with narrow heads, quick to export."""
    return ULSAD.from_preset("lite", image_size=128, channels=32, featae_width=64, global_width=16)


def test_uncalibrated_export_keeps_raw_maps(tmp_path):
    model = _small_model().eval()
    assert not model.calibrated
    predictor = OnnxPredictor(export_onnx(model, tmp_path / "raw.onnx"))
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    assert max_abs_difference(model, predictor, images) <= TOLERANCE
    assert predictor.threshold != predictor.threshold  # NaN: no threshold
    assert predictor.predict(images[0]).threshold is None


def test_onnx_matches_pytorch_on_real_images(model, predictor, real_data):
    samples = load_split("mvtec_ad", real_data / "mvtec_ad", "bottle", "test")
    paths = [s.path for s in samples if s.defect in ("good", "broken_large")][::8][:4]
    assert len(paths) >= 3
    ours, theirs = model.predict(paths), predictor.predict(paths)
    for a, b in zip(ours, theirs, strict=True):
        assert a.anomaly_map.shape == (512, 512)
        assert abs(a.score - b.score) <= TOLERANCE
        assert np.abs(a.anomaly_map - b.anomaly_map).max() <= TOLERANCE


def test_not_an_ulsad_onnx_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ULSADError, match="not a readable ONNX model"):
        OnnxPredictor(bad)
    with pytest.raises(ULSADError, match="not found"):
        OnnxPredictor(tmp_path / "missing.onnx")


def test_cli_export_and_predict_with_onnx_backend(tmp_path, capsys):
    model = set_statistics(_small_model().eval(), torch.rand(4, 3, 128, 128))
    checkpoint = model.save_pretrained(tmp_path / "checkpoint")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        pixels = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.png")
    onnx_file = tmp_path / "model.onnx"
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(onnx_file)]
    assert main(argv) == 0
    assert "max |ONNX Runtime - PyTorch|" in capsys.readouterr().out
    scores = {}
    for backend, source in (("torch", checkpoint), ("onnx", onnx_file), ("onnx", checkpoint)):
        out = tmp_path / f"out_{backend}_{Path(source).suffix or 'dir'}"
        argv = ["predict", "--backend", backend, "--checkpoint", str(source), "--out", str(out)]
        assert main([*argv, str(images)]) == 0
        with open(out / "scores.csv") as f:
            scores[out.name] = {row["path"]: float(row["score"]) for row in csv.DictReader(f)}
    reference, *others = scores.values()
    assert len(reference) == 3
    for other in others:
        assert other.keys() == reference.keys()
        assert max(abs(other[k] - reference[k]) for k in reference) <= TOLERANCE
    # An ONNX file with the default (torch) backend: one clear line, exit code 2.
    capsys.readouterr()
    argv = ["predict", "--checkpoint", str(onnx_file), "--out", str(tmp_path / "x"), str(images)]
    assert main(argv) == 2
    assert "--backend onnx" in capsys.readouterr().err
