"""The baseline: a plain eager fp32 reimplementation of the reference ULSAD forward pass.

Written after the structure of the authors' code (github.com/sukanyapatra1997/ULSAD-2024,
`anomalib/models/ulsad/torch_model.py`): the same layers in the same order, explicit
`relu(bn(conv(x)))` calls, channel pooling with `adaptive_avg_pool1d`, maps upsampled, normalised
and then blurred with a full 2-D Gaussian kernel, and none of our optimisations. Widths come from an
`ULSADConfig` (the `paper` preset is the reference's own configuration), so `load_from_ulsad` can
copy the weights of any ULSAD model and the benchmarks can check that both give the same maps.
"""

from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulsad.config import ULSADConfig
from ulsad.feature_cache import channel_statistics
from ulsad.model import ULSADModel


class ReferenceFeatAE(nn.Module):
    """The reference FeatAE (`double_channel=True`): conv encoder, transposed-conv decoder."""

    def __init__(self, in_dim: int, out_dim: int, output_relu: bool = True):
        super().__init__()
        self.output_relu = output_relu
        self.conv1 = nn.Conv2d(in_dim, out_dim // 2, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(out_dim // 2)
        self.conv2 = nn.Conv2d(out_dim // 2, out_dim, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(out_dim)
        self.conv3 = nn.Conv2d(out_dim, out_dim, 3, stride=1, padding=1)
        self.bn3 = nn.BatchNorm2d(out_dim)
        self.deconv1 = nn.ConvTranspose2d(out_dim, out_dim // 2, 4, stride=2, padding=1)
        self.bn4 = nn.BatchNorm2d(out_dim // 2)
        self.deconv2 = nn.ConvTranspose2d(out_dim // 2, out_dim // 4, 4, stride=2, padding=1)
        self.bn5 = nn.BatchNorm2d(out_dim // 4)
        self.deconv3 = nn.ConvTranspose2d(out_dim // 4, 2 * in_dim, 5, stride=1, padding=2)
        self.bn6 = nn.BatchNorm2d(2 * in_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        x = F.relu(self.bn4(self.deconv1(x)))
        x = F.relu(self.bn5(self.deconv2(x)))
        x = self.bn6(self.deconv3(x))
        return F.relu(x) if self.output_relu else x


class ReferenceConvAutoEncoder(nn.Module):
    """The reference global branch (EfficientAD-style autoencoder with non-affine BatchNorm)."""

    def __init__(self, out_channels: int, width: int, img_size: int):
        super().__init__()
        half = width // 2
        self.img_size = img_size

        def bn(channels: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(channels, eps=1e-04, affine=False)

        self.enconv1, self.bn2d1 = nn.Conv2d(3, half, 4, stride=2, padding=1), bn(half)
        self.enconv2, self.bn2d2 = nn.Conv2d(half, half, 4, stride=2, padding=1), bn(half)
        self.enconv3, self.bn2d3 = nn.Conv2d(half, width, 4, stride=2, padding=1), bn(width)
        self.enconv4, self.bn2d4 = nn.Conv2d(width, width, 4, stride=2, padding=1), bn(width)
        self.enconv5, self.bn2d5 = nn.Conv2d(width, width, 4, stride=2, padding=1), bn(width)
        self.enconv6, self.bn2d6 = nn.Conv2d(width, width, img_size // 32), bn(width)
        self.deconv1, self.bn2d7 = nn.Conv2d(width, width, 4, padding=2), bn(width)
        self.deconv2, self.bn2d8 = nn.Conv2d(width, width, 4, padding=2), bn(width)
        self.deconv3, self.bn2d9 = nn.Conv2d(width, width, 4, padding=2), bn(width)
        self.deconv4, self.bn2d10 = nn.Conv2d(width, width, 4, padding=2), bn(width)
        self.deconv5, self.bn2d11 = nn.Conv2d(width, width, 4, padding=2), bn(width)
        self.deconv7, self.bn2d12 = nn.Conv2d(width, width, 3, padding=1), bn(width)
        self.deconv8 = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.img_size
        x = F.relu(self.bn2d1(self.enconv1(x)))
        x = F.relu(self.bn2d2(self.enconv2(x)))
        x = F.relu(self.bn2d3(self.enconv3(x)))
        x = F.relu(self.bn2d4(self.enconv4(x)))
        x = F.relu(self.bn2d5(self.enconv5(x)))
        x = F.relu(self.bn2d6(self.enconv6(x)))
        x = F.interpolate(x, size=(s // 64 - 1, s // 64 - 1), mode="bilinear")
        x = F.relu(self.bn2d7(self.deconv1(x)))
        x = F.interpolate(x, size=(s // 32, s // 32), mode="bilinear")
        x = F.relu(self.bn2d8(self.deconv2(x)))
        x = F.interpolate(x, size=s // 16 - 1, mode="bilinear")
        x = F.relu(self.bn2d9(self.deconv3(x)))
        x = F.interpolate(x, size=s // 8 - 1, mode="bilinear")
        x = F.relu(self.bn2d10(self.deconv4(x)))
        x = F.interpolate(x, size=s // 4 - 1, mode="bilinear")
        x = F.relu(self.bn2d11(self.deconv5(x)))
        x = F.interpolate(x, size=s // 8, mode="bilinear")
        x = F.relu(self.bn2d12(self.deconv7(x)))
        return self.deconv8(x)


def gaussian_kernel2d(sigma: float) -> Tensor:
    """The (1, 1, k, k) kernel of anomalib's `GaussianBlur2d` (k = 2 * int(4 sigma + 0.5) + 1)."""
    size = 2 * int(4.0 * sigma + 0.5) + 1
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)[None, None]


class ReferenceULSAD(nn.Module):
    """The reference `UlsadModel` inference pass: images -> (score, combined, local, global).

    Maps are (B, S, S); the score is the maximum of the combined map, as anomalib computes it,
    or, with `image_score_fraction` (ulsad's `lite`), the mean of that share of its highest pixels.
    """

    def __init__(self, config: ULSADConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.backbone = timm.create_model(
            config.backbone, pretrained=False, features_only=True, out_indices=config.layers
        )
        cfg = self.backbone.pretrained_cfg  # ImageNet mean and std for wide_resnet50_2
        self.register_buffer("mean", torch.tensor(cfg["mean"])[None, :, None, None])
        self.register_buffer("std", torch.tensor(cfg["std"])[None, :, None, None])
        self.featae = ReferenceFeatAE(c, config.featae_width, config.featae_output_relu)
        self.img_encoder = ReferenceConvAutoEncoder(c, config.global_width, config.image_size)
        self.register_buffer("feature_mean", torch.zeros(1, c, 1, 1))
        self.register_buffer("feature_std", torch.ones(1, c, 1, 1))
        self.register_buffer("quantiles", torch.full((2, 2), float("nan")))
        self.register_buffer("blur_kernel", gaussian_kernel2d(config.blur_sigma))

    @staticmethod
    def neighbourhood_mean(x: Tensor, k: int) -> Tensor:
        """Mean over the k x k neighbours inside the map (`feature_aggregation`, per map), as a box
        sum divided by the number of neighbours that exist."""
        if k == 1:
            return x
        box = torch.ones(x.shape[1], 1, k, k, dtype=x.dtype, device=x.device)
        sums = F.conv2d(x, box, padding=k // 2, groups=x.shape[1])
        counts = F.conv2d(torch.ones_like(x[:, :1]), box[:1], padding=k // 2)
        return sums / counts

    def pretrain(self, images: Tensor) -> Tensor:
        maps, sizes = self.backbone(images), self.config.feature_aggregation
        x1, x2 = (self.neighbourhood_mean(x, k) for x, k in zip(maps, sizes, strict=True))
        b, _, h, w = x1.shape
        x2 = F.interpolate(x2, size=(h, w), mode="bilinear", align_corners=False)
        features = torch.cat([x1, x2], dim=1)
        features = features.reshape(b, features.shape[1], h * w).transpose(1, 2)
        pooled = F.adaptive_avg_pool1d(features, self.config.channels).transpose(1, 2)
        return pooled.reshape(b, self.config.channels, h, w)

    def blur(self, maps: Tensor) -> Tensor:
        pad = self.blur_kernel.shape[-1] // 2
        return F.conv2d(F.pad(maps, (pad, pad, pad, pad), mode="reflect"), self.blur_kernel)

    def distance(self, a: Tensor, b: Tensor, weight: float) -> Tensor:
        d = torch.mean(torch.pow(a - b, 2), dim=1)
        return d + weight * (1 - F.cosine_similarity(a, b))

    @staticmethod
    def attention(features: Tensor, queries: Tensor) -> Tensor:
        """The reference's `compute_crossattn` (and, with queries = features, `compute_selfattn`)."""
        n, c, h, w = features.shape
        key = value = features.reshape(n, c, -1).permute(0, 2, 1)
        query = queries.reshape(n, c, -1).permute(0, 2, 1)
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(c)
        out = torch.matmul(F.softmax(scores, dim=-1), value)
        return out.permute(0, 2, 1).reshape(n, c, h, w)

    def loss(self, images: Tensor) -> Tensor:
        """The reference's training-mode forward: local + attention + global-local loss, with the
        backbone run on every batch (no feature cache) and the self-attention target recomputed."""
        cfg, c = self.config, self.config.channels
        images = (images - self.mean) / (self.std + 1e-11)
        with torch.no_grad():
            img_feats = (self.pretrain(images) - self.feature_mean) / self.feature_std
        ae_output = self.img_encoder(images)
        local_recons = self.featae(img_feats)
        loss_pl = self.distance(img_feats, local_recons[:, :c], cfg.lambda_local).mean()
        teacher_attn = self.attention(img_feats, img_feats)
        global_attn = self.attention(img_feats, ae_output)
        loss_pg = self.distance(teacher_attn, global_attn, cfg.lambda_attention).mean()
        loss_lg = self.distance(ae_output, local_recons[:, c:], cfg.lambda_global).mean()
        return loss_pl + loss_pg + loss_lg

    def train(self, mode: bool = True) -> ReferenceULSAD:
        super().train(mode)
        self.backbone.eval()  # frozen, as in the paper
        return self

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cfg, c = self.config, self.config.channels
        images = (images - self.mean) / (self.std + 1e-11)
        with torch.no_grad():
            img_feats = self.pretrain(images)
            img_feats = (img_feats - self.feature_mean) / self.feature_std
        ae_output = self.img_encoder(images)
        local_recons = self.featae(img_feats)
        map_local = self.distance(img_feats, local_recons[:, :c], cfg.lambda_local)[:, None]
        map_global = self.distance(ae_output, local_recons[:, c:], cfg.lambda_global)[:, None]
        size = (cfg.image_size, cfg.image_size)
        map_local = F.interpolate(map_local, size=size, mode="bilinear")
        map_global = F.interpolate(map_global, size=size, mode="bilinear")
        if not math.isnan(float(self.quantiles[0, 0])):
            q = self.quantiles
            map_local = 0.1 * (map_local - q[0, 0]) / (q[0, 1] - q[0, 0])
            map_global = 0.1 * (map_global - q[1, 0]) / (q[1, 1] - q[1, 0])
        map_local, map_global = self.blur(map_local)[:, 0], self.blur(map_global)[:, 0]
        w = 0.5 if cfg.local_weight is None else cfg.local_weight  # as the model, until chosen
        combined = w * map_local + (1 - w) * map_global
        # Image score: the mean of the highest `image_score_fraction` of the pixels (0: the max).
        top = max(1, round(cfg.image_score_fraction * combined[0].numel()))
        score = combined.flatten(1).sort(dim=1, descending=True).values[:, :top].mean(dim=1)
        return score, combined, map_local, map_global


def _in_order(module: nn.Module, kinds: tuple[type, ...]) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kinds)]


@torch.no_grad()
def load_from_ulsad(reference: ReferenceULSAD, model: ULSADModel) -> ReferenceULSAD:
    """Copy an ULSAD model's weights and buffers into `reference` (layer by layer, in order)."""
    cfg = model.config
    if not (cfg.global_branch and cfg.cosine_loss):
        raise ValueError("the reference architecture has the global branch and the cosine loss")
    missing, unexpected = reference.backbone.load_state_dict(
        model.extractor.body.state_dict(), strict=False
    )
    if unexpected or any(not k.startswith("blocks.") for k in missing):  # ours drops unused blocks
        raise ValueError(f"backbone mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    convs = (nn.Conv2d, nn.ConvTranspose2d)
    branches = ((model.featae, reference.featae), (model.global_ae, reference.img_encoder))
    for ours, theirs in branches:
        for kinds in (convs, (nn.BatchNorm2d,)):
            pairs = list(zip(_in_order(ours, kinds), _in_order(theirs, kinds), strict=True))
            for a, b in pairs:
                b.load_state_dict(a.state_dict())
    reference.feature_mean.copy_(model.feature_mean)
    reference.feature_std.copy_(model.feature_std)
    reference.quantiles.copy_(model.map_quantiles)
    return reference.to(model.device).eval()


def reference_from_ulsad(model: ULSADModel) -> ReferenceULSAD:
    """A `ReferenceULSAD` with the same configuration and weights as `model`."""
    return load_from_ulsad(ReferenceULSAD(model.config), model)


@torch.no_grad()
def set_statistics(model: ULSADModel, images: Tensor, threshold: float = 0.25) -> ULSADModel:
    """Give an untrained model what training would set, from `images`: feature statistics,
    BatchNorm running statistics (one training-mode pass) and map quantiles. Every normalisation
    then does something and the maps have a trained model's scale, so comparisons of maps at a
    fixed tolerance (1e-4) are meaningful."""
    normalized = model.extractor.normalize(images)
    mean, std = channel_statistics(model.extractor(normalized))
    model.feature_mean.copy_(mean)
    model.feature_std.copy_(std)
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in batch_norms]
    for bn in batch_norms:
        bn.momentum = 1.0  # running statistics := this batch's
    model.train().branches(model.features(normalized), normalized)
    for bn, momentum in zip(batch_norms, momenta, strict=True):
        bn.momentum = momentum
    model.eval()
    model.map_quantiles.fill_(float("nan"))
    local_map, global_map = model.unnormalized_maps(images)
    q = torch.tensor(model.config.quantiles, device=images.device)
    for row, maps in enumerate((local_map, global_map)):
        model.map_quantiles[row] = torch.quantile(maps.flatten(), q)
    model.threshold.fill_(threshold)
    return model
