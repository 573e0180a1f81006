"""The network against the paper's description: shapes, parameter counts, losses and maps
recomputed directly from the formulas in ULSAD.md."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from ulsad import PRESETS, ULSAD, ULSADError, preset_config
from ulsad.backbones import FeatureExtractor, channel_pool_matrix, create_backbone, fold_batchnorm

LITE_SIZE = preset_config("lite").image_size


@pytest.fixture(scope="module")
def paper() -> ULSAD:
    return ULSAD.from_preset("paper", pretrained_backbone=False).eval()


@pytest.fixture(scope="module")
def lite() -> ULSAD:
    torch.manual_seed(0)
    model = ULSAD.from_preset("lite").eval()
    model.map_quantiles.copy_(torch.tensor([[0.5, 2.0], [0.3, 1.5]]))  # exercise normalisation
    return model


def count(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def test_paper_preset_shapes_and_sizes(paper):
    images = torch.rand(2, 3, 256, 256)
    normalized = paper.extractor.normalize(images)
    with torch.no_grad():
        features = paper.features(normalized)
        reconstruction, global_features = paper.branches(features, normalized)
        out = paper(images)
    assert features.shape == (2, 384, 32, 32)
    assert reconstruction.shape == (2, 768, 32, 32)
    assert global_features.shape == (2, 384, 32, 32)
    assert out.score.shape == (2,)
    for m in out[1:]:
        assert m.shape == (2, 256, 256)
    # Parameter counts documented in ULSAD.md (reference architecture).
    assert count(paper.featae) == pytest.approx(65.49, abs=0.01)
    assert count(paper.global_ae) == pytest.approx(1.03, abs=0.01)
    assert count(paper.extractor) == pytest.approx(24.86, abs=0.01)
    assert torch.allclose(out.score, out.anomaly_map.amax(dim=(1, 2)))


def test_channel_pool_matches_adaptive_avg_pool():
    x = torch.randn(2, 152, 5, 5)
    for out_channels in (384, 96, 152, 7):
        if out_channels > 152:
            x = torch.randn(2, 1536, 5, 5)
        weight = channel_pool_matrix(x.shape[1], out_channels)
        expected = F.adaptive_avg_pool1d(x.flatten(2).transpose(1, 2), out_channels)
        expected = expected.transpose(1, 2).reshape(2, out_channels, 5, 5)
        assert torch.allclose(torch.einsum("oc,bchw->bohw", weight, x), expected, atol=1e-5)


def test_lite_backbone_loads_offline_imagenet_weights_and_is_truncated():
    import timm

    pretrained = create_backbone("tf_efficientnet_lite0", (2, 3), pretrained=True)
    random = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(2, 3))
    assert len(pretrained.blocks) == 5  # blocks 5 and 6 are never used
    stem = pretrained.conv_stem.weight
    assert not torch.allclose(stem, random.conv_stem.weight)
    assert pretrained.bn1.running_var.std() > 0  # real BatchNorm statistics were loaded
    assert not pretrained.training and not any(p.requires_grad for p in pretrained.parameters())
    # Truncation does not change the outputs: compare with the full feature model.
    random.load_state_dict(pretrained.state_dict(), strict=False)
    random.eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        for a, b in zip(pretrained(x), random(x), strict=True):
            assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "resnet18"])
def test_folded_backbone_computes_the_same_features(name):
    """Inference runs the backbone with each BatchNorm folded into its convolution: the same
    maps (float rounding), every norm folded, and the checkpoint's state dict unchanged."""
    layers = (2, 4) if name.startswith("tf_") else (2, 3)
    extractor = FeatureExtractor(name, layers, 32, pretrained=name.startswith("tf_"), fold=True)
    extractor.eval()
    keys = set(extractor.state_dict())
    with torch.no_grad():
        x = extractor.normalize(torch.rand(2, 3, 128, 128))
        expected = [m.clone() for m in extractor.body(x)]
        features = extractor(x)
    folded = extractor.inference["body"]
    norms = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert folded is not extractor.body and not norms
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in extractor.body.modules())
    for a, b in zip(folded(x), expected, strict=True):
        assert torch.allclose(a, b, atol=1e-4 * float(b.abs().max()))
    assert features.shape == (2, 32, 16, 16) and set(extractor.state_dict()) == keys
    # A load without body weights (a compact checkpoint) keeps the folded copy; loading other
    # body weights refolds; moving the model moves both copies.
    extractor.load_state_dict({}, strict=False)
    assert extractor.inference["body"] is folded
    state = {k: v * 0.5 if k.endswith("weight") else v for k, v in extractor.state_dict().items()}
    extractor.load_state_dict(state)
    assert extractor.inference["body"] is not folded
    with torch.no_grad():
        changed = extractor(x)
        unfolded = [m.clone() for m in extractor.body(x)]
    assert not torch.allclose(changed, features)
    for a, b in zip(extractor.inference["body"](x), unfolded, strict=True):
        assert torch.allclose(a, b, atol=1e-4 * float(b.abs().max()))
    extractor.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in extractor.inference["body"].parameters())
    with torch.no_grad():
        assert extractor(x.double()).dtype == torch.float64


def test_only_lite_holds_a_folded_backbone_copy():
    """The copy costs the backbone's memory again: lite folds (small backbone, 0.75x its time);
    the paper preset runs its backbone as the paper does. Checkpoints match either way."""
    lite = ULSAD.from_preset("lite", pretrained_backbone=False)
    plain = ULSAD.from_preset("lite", pretrained_backbone=False, fold_batchnorm=False)
    assert "body" in lite.extractor.inference and not plain.extractor.inference
    assert plain.extractor.folded_body() is plain.extractor.body
    assert not preset_config("paper").fold_batchnorm
    assert PRESETS["lite"].matches(plain.config)
    plain.extractor.load_state_dict(plain.extractor.state_dict())  # a load does not fold it
    assert not plain.extractor.inference


def test_folding_that_changes_the_features_falls_back_to_the_body(caplog):
    """A norm registered after a convolution but applied elsewhere must not be folded in: the
    check against the body catches it, and the body runs as it is."""

    class Twisted(torch.nn.Module):  # registered conv, norm; applied norm first
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.norm = torch.nn.BatchNorm2d(3)
            self.norm.running_mean.fill_(0.7)

        def forward(self, x):
            return [self.conv(self.norm(x)), self.conv(self.norm(x))]

    body = Twisted().eval()
    with torch.no_grad():
        x = torch.rand(1, 3, 8, 8)
        assert not torch.allclose(fold_batchnorm(body)(x)[0], body(x)[0], atol=1e-3)
        extractor = FeatureExtractor("tf_efficientnet_lite0", (2, 4), 32, pretrained=False)
        extractor.body = body
        extractor.refold()
        assert extractor.folded_body() is body and not extractor.inference
    assert "not folded" in caplog.text


def distance(a, b, weight):
    """d(a, b) written out: mean over channels of squared error + weight * (1 - cosine)."""
    mse = ((a - b) ** 2).sum(1) / a.shape[1]
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)
    return mse + weight * (1 - cos)


def attention_explicit(q, f):
    b, c, h, w = f.shape
    q, f = q.reshape(b, c, -1).transpose(1, 2), f.reshape(b, c, -1).transpose(1, 2)
    weights = torch.softmax(q @ f.transpose(1, 2) / math.sqrt(c), dim=-1)
    return (weights @ f).transpose(1, 2).reshape(b, c, h, w)


def test_losses_match_formulas(lite):
    torch.manual_seed(1)
    images = torch.rand(2, 3, LITE_SIZE, LITE_SIZE)
    normalized = lite.extractor.normalize(images)
    features = lite.features(normalized)
    with torch.no_grad():
        losses = lite.losses(features, normalized)
        rec, glob = lite.branches(features, normalized)
    c = lite.config.channels
    local = distance(features, rec[:, :c], 0.5).mean()
    att = distance(
        attention_explicit(features, features), attention_explicit(glob, features), 0.5
    ).mean()
    global_local = distance(glob, rec[:, c:], 0.5).mean()
    assert losses.local == pytest.approx(local.item(), rel=1e-5)
    assert losses.attention == pytest.approx(att.item(), rel=1e-4, abs=1e-7)
    assert losses.global_local == pytest.approx(global_local.item(), rel=1e-5)
    assert losses.total == pytest.approx((local + att + global_local).item(), rel=1e-5)


def test_maps_match_formulas(lite):
    torch.manual_seed(2)
    images = torch.rand(2, 3, LITE_SIZE, LITE_SIZE)
    with torch.no_grad():
        out = lite(images)
        normalized = lite.extractor.normalize(images)
        features = lite.features(normalized)
        rec, glob = lite.branches(features, normalized)
    c, q = lite.config.channels, lite.map_quantiles

    def post(raw, q_low, q_high):
        up = F.interpolate(
            raw[:, None], size=(LITE_SIZE, LITE_SIZE), mode="bilinear", align_corners=False
        )
        up = 0.1 * (up - q_low) / (q_high - q_low)  # normalise, then blur (sigma 4, 33 px)
        return gaussian_blur(up, kernel_size=[33, 33], sigma=[4.0, 4.0])[:, 0]

    local_map = post(distance(features, rec[:, :c], 0.5), q[0, 0], q[0, 1])
    global_map = post(distance(glob, rec[:, c:], 0.5), q[1, 0], q[1, 1])
    combined = 0.5 * local_map + 0.5 * global_map
    assert torch.allclose(out.local_map, local_map, atol=1e-4)
    assert torch.allclose(out.global_map, global_map, atol=1e-4)
    assert torch.allclose(out.anomaly_map, combined, atol=1e-4)
    # The image score: the mean of the highest 2% of the combined map's pixels (`lite`).
    top = round(lite.config.image_score_fraction * LITE_SIZE**2)
    assert top > 1 and lite.score_pixels == top
    expected = combined.flatten(1).sort(dim=1, descending=True).values[:, :top].mean(dim=1)
    assert torch.allclose(out.score, expected, atol=1e-4)


def test_local_only_fusion_skips_the_global_branch(lite):
    """With local_weight 1.0 the global map adds nothing, so inference never runs its branch;
    the local map and the scores stay what the fused model computes."""
    images = torch.rand(2, 3, LITE_SIZE, LITE_SIZE)
    calls = []
    handle = lite.global_ae.register_forward_hook(lambda *_: calls.append(1))
    config = lite.config
    try:
        with torch.no_grad():
            fused = lite(images)
        assert calls and lite.uses_global_map
        calls.clear()
        lite.config = config.replace(local_weight=1.0)
        with torch.no_grad():
            local_only = lite(images)
        assert not calls and not lite.uses_global_map
    finally:
        handle.remove()
        lite.config = config
    assert torch.allclose(local_only.local_map, fused.local_map, atol=1e-6)
    assert torch.allclose(local_only.anomaly_map, fused.local_map, atol=1e-6)
    assert torch.allclose(local_only.score, lite.image_score(fused.local_map), atol=1e-6)
    assert not local_only.global_map.any() and fused.global_map.any()


@pytest.mark.parametrize("output_relu", [False, True])
def test_featae_local_half_is_the_full_outputs_first_channels(output_relu):
    """`FeatAE(features, C)` computes only the local half: the same values, gradients and
    BatchNorm statistics as the first C channels of the full output, in training and eval."""
    from ulsad.model import FeatAE

    torch.manual_seed(0)
    full = FeatAE(8, 32, 16, output_relu).train()
    half = FeatAE(8, 32, 16, output_relu).train()
    half.load_state_dict(full.state_dict())
    features = torch.randn(3, 8, 16, 16)
    expected, got = full(features)[:, :8], half(features, 8)
    assert got.shape == (3, 8, 16, 16)
    assert torch.allclose(got, expected, atol=1e-6)
    expected.pow(2).mean().backward()
    got.pow(2).mean().backward()
    for (name, a), b in zip(full.named_parameters(), half.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    norm_full, norm_half = full.decoder[7], half.decoder[7]
    assert torch.allclose(norm_half.running_mean[:8], norm_full.running_mean[:8])
    assert torch.equal(norm_half.running_mean[8:], torch.zeros(8))  # the global half: untouched
    assert not torch.equal(norm_full.running_mean[8:], torch.zeros(8))
    full.eval(), half.eval()
    with torch.no_grad():
        assert torch.allclose(half(features, 8), full(features)[:, :8], atol=1e-6)


def test_ablation_switches():
    dfr = ULSAD.from_preset(
        "lite", global_branch=False, attention_loss=False, cosine_loss=False
    ).eval()
    assert dfr.global_ae is None
    images = torch.rand(1, 3, LITE_SIZE, LITE_SIZE)
    normalized = dfr.extractor.normalize(images)
    features = dfr.features(normalized)
    with torch.no_grad():
        losses = dfr.losses(features, normalized)
        rec = dfr.featae(features)
        out = dfr(images)
    assert rec.shape[1] == dfr.config.channels
    assert losses.local == pytest.approx(((features - rec) ** 2).mean().item(), rel=1e-5)
    assert losses.attention == 0 and losses.global_local == 0
    assert torch.equal(out.anomaly_map, out.local_map)
    assert not out.global_map.any()

    no_attention = ULSAD.from_preset("lite", attention_loss=False).eval()
    with torch.no_grad():
        f = no_attention.features(normalized)
        assert no_attention.losses(f, normalized).attention == 0
    with pytest.raises(ULSADError, match="global_branch"):
        preset_config("lite", global_branch=False)


def test_backbone_stays_frozen_in_train_mode(lite):
    lite.train()
    try:
        assert not lite.extractor.training and lite.featae.training
        assert not any(p.requires_grad for p in lite.extractor.parameters())
    finally:
        lite.eval()


def test_heads_are_reproducible_from_the_seed():
    a, b = ULSAD.from_preset("lite"), ULSAD.from_preset("lite")
    c = ULSAD.from_preset("lite", seed=1)
    assert torch.equal(a.featae.encoder[0].weight, b.featae.encoder[0].weight)
    assert not torch.equal(a.featae.encoder[0].weight, c.featae.encoder[0].weight)


def test_config_errors():
    with pytest.raises(ULSADError, match="Unknown preset"):
        ULSAD.from_preset("huge")
    with pytest.raises(ULSADError, match="multiple of 64"):
        preset_config("lite", image_size=200)
    with pytest.raises(ULSADError, match="Unknown config"):
        preset_config("lite", chanels=3)


def test_attention_over_a_subset_of_queries_is_those_positions_of_the_full_attention():
    from ulsad.model import attention

    generator = torch.Generator().manual_seed(0)
    queries, features = torch.randn(2, 2, 8, 5, 6, generator=generator)
    index = torch.tensor([0, 7, 29, 13])
    full = attention(queries, features)
    subset = attention(queries.flatten(2)[:, :, index], features)
    assert subset.shape == (2, 8, 4)
    assert torch.allclose(subset, full.flatten(2)[:, :, index], atol=1e-6)


def test_attention_loss_over_every_query_in_any_order_is_the_full_loss():
    model = ULSAD.from_preset("lite", pretrained_backbone=False, image_size=128).eval()
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    normalized = model.extractor.normalize(images)
    features = model.features(normalized)
    with torch.no_grad():
        full = model.losses(features, normalized)
        shuffled = model.losses(features, normalized, query_index=torch.randperm(16 * 16))
        some = model.losses(features, normalized, query_index=torch.arange(10))
    assert float(full.attention) > 0
    assert shuffled.attention.item() == pytest.approx(full.attention.item(), rel=1e-5)
    assert some.attention.item() != pytest.approx(full.attention.item(), rel=1e-5)
    assert some.local.item() == full.local.item()  # only the attention term is subsampled
