"""Our inference path (channels-last on CPU, the backbone's BatchNorms folded, fused BatchNorm in
ONNX Runtime) gives the maps of a plain eager reimplementation of the reference forward pass
(`tests/reference.py`), on the same weights, within 1e-4; so the speed-ups measured in
`benchmarks/` change no output."""

from __future__ import annotations

import pytest
import torch
from reference import reference_from_ulsad, set_statistics

from ulsad import ULSAD

TOLERANCE = 1e-4


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("preset", "overrides", "pretrained"),
    [
        ("lite", {}, True),
        # The paper's architecture and widths; 128 px and a random backbone keep the test short.
        ("paper", {"image_size": 128}, False),
    ],
)
def test_forward_equals_reference_implementation(preset, overrides, pretrained):
    model = ULSAD.from_preset(preset, pretrained_backbone=pretrained, **overrides)
    # Maps are compared on the images the statistics come from, where they have a trained model's
    # scale (about 0.1 at the 99.5% quantile). Far from them, an untrained model's maps reach tens,
    # and fp32 rounding alone (the reference's own error against fp64) approaches 1e-4.
    images = _images(3, model.config.image_size, seed=0)
    model = set_statistics(model, images)
    reference = reference_from_ulsad(model)
    with torch.inference_mode():
        ours, theirs = model(images), reference(images)
    for name, a, b in zip(ours._fields, ours, theirs, strict=True):
        assert a.shape == b.shape, name
        assert float((a - b).abs().max()) <= TOLERANCE, name
    # The comparison is not vacuous: maps are on the calibrated scale and differ between branches.
    assert float(ours.anomaly_map.max() - ours.anomaly_map.min()) > 0.05
    assert float((ours.local_map - ours.global_map).abs().max()) > 0.01


def test_reference_disagrees_when_weights_differ():
    """The check above can fail: one changed layer moves the maps far beyond the tolerance."""
    model = ULSAD.from_preset("lite", channels=32, featae_width=64, global_width=16)
    size = model.config.image_size
    model = set_statistics(model, _images(4, size, seed=0))
    reference = reference_from_ulsad(model)
    with torch.no_grad():
        reference.featae.conv3.weight.mul_(1.1)
    images = _images(1, size, seed=1)
    with torch.inference_mode():
        difference = (model(images).local_map - reference(images)[2]).abs().max()
    assert float(difference) > 100 * TOLERANCE
