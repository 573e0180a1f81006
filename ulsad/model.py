"""The ULSAD network: frozen features, a local feature autoencoder, a global image autoencoder.

`ULSADModel` is a plain `nn.Module` (forward: images -> anomaly maps) and knows nothing of
training, files or the Hub. Those layers (`train`, `inference`, `checkpoint`, `hub`) take a
`ULSADModel`; `ulsad.detector.ULSAD`, the object users hold, is a subclass that adds `fit`,
`predict`, `save_pretrained` and `from_pretrained` on top of them, so no import points back here.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ulsad.backbones import FeatureExtractor
from ulsad.config import DEFAULT_SEED, ULSADConfig

__all__ = [
    "AnomalyMaps",
    "FeatAE",
    "GlobalAE",
    "Losses",
    "ULSADModel",
    "attention",
    "feature_distance",
    "gaussian_blur",
    "gaussian_kernel1d",
    "masked_mean",
    "top_count",
    "top_mean",
]


def feature_distance(a: Tensor, b: Tensor, cosine_weight: float) -> Tensor:
    """d(a, b) per position: mean_c (a - b)^2 + cosine_weight * (1 - cos_c(a, b)); (B,C,H,W) -> (B,H,W)."""
    distance = (a - b).pow(2).mean(dim=1)
    if cosine_weight:
        distance = distance + cosine_weight * (1 - F.cosine_similarity(a, b, dim=1))
    return distance


def masked_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    """Mean of per-input values (B, ...); with `weights` (B,), of the inputs weighted by them
    (zero without any weight)."""
    if weights is None:
        return values.mean()
    per_input = values.flatten(1).mean(dim=1)
    return (per_input * weights).sum() / weights.sum().clamp_min(1.0)


def attention(queries: Tensor, features: Tensor) -> Tensor:
    """softmax(Q F^T / sqrt(C)) F over all positions of the (B, C, H, W) map F, for queries Q
    of shape (B, C, H, W) or (B, C, N) (a subset of positions); returns Q's shape."""
    q = queries.flatten(2).transpose(1, 2)
    kv = features.flatten(2).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, kv, kv, scale=1.0 / math.sqrt(features.shape[1]))
    return out.transpose(1, 2).reshape(queries.shape)


def _xavier(module: nn.Module) -> nn.Module:
    nn.init.xavier_uniform_(module.weight, gain=nn.init.calculate_gain("leaky_relu"))
    return module


class FeatAE(nn.Module):
    """Local branch: a conv autoencoder on the feature map (deep feature reconstruction).

    Output channels: the first C reconstruct the features, the last C (if any) match the global branch.
    """

    def __init__(self, channels: int, width: int, out_channels: int, output_relu: bool = True):
        super().__init__()
        half, quarter = width // 2, width // 4

        def block(conv: nn.Module, out: int, relu: bool = True) -> list[nn.Module]:
            return [_xavier(conv), nn.BatchNorm2d(out), *([nn.ReLU(inplace=True)] if relu else [])]

        self.encoder = nn.Sequential(
            *block(nn.Conv2d(channels, half, 3, stride=2, padding=1), half),
            *block(nn.Conv2d(half, width, 3, stride=2, padding=1), width),
            *block(nn.Conv2d(width, width, 3, padding=1), width, relu=False),
        )
        self.decoder = nn.Sequential(
            *block(nn.ConvTranspose2d(width, half, 4, stride=2, padding=1), half),
            *block(nn.ConvTranspose2d(half, quarter, 4, stride=2, padding=1), quarter),
            *block(
                nn.ConvTranspose2d(quarter, out_channels, 5, padding=2), out_channels, output_relu
            ),
        )
        self.output_relu = output_relu

    def forward(self, features: Tensor, out_channels: int | None = None) -> Tensor:
        """Reconstruction (B, out, h, w); `out_channels`: only the first so many output channels
        (the local half alone), computed with the same weights at a fraction of the last layer's
        cost, which is half of the whole branch's."""
        if out_channels is None:
            return self.decoder(self.encoder(features))
        last = len(self.decoder) - (3 if self.output_relu else 2)  # the last conv, BN (, ReLU)
        hidden = self.decoder[:last](self.encoder(features))
        conv, norm, n = self.decoder[last], self.decoder[last + 1], slice(0, out_channels)
        if isinstance(conv, nn.ConvTranspose2d):
            out = F.conv_transpose2d(hidden, conv.weight[:, n], conv.bias[n], padding=conv.padding)
        else:  # the equal Conv2d that ONNX export puts in its place (`export.transposed_as_conv`)
            out = F.conv2d(hidden, conv.weight[n], conv.bias[n], padding=conv.padding)
        out = F.batch_norm(
            out, norm.running_mean[n], norm.running_var[n], norm.weight[n], norm.bias[n],
            norm.training, norm.momentum, norm.eps,
        )  # fmt: skip
        return F.relu(out) if self.output_relu else out


class GlobalAE(nn.Module):
    """Global branch: image -> 1x1 bottleneck -> feature map, so it can only learn the global layout.

    Close to EfficientAD's autoencoder, with non-affine BatchNorm after every conv but the last.
    """

    def __init__(self, out_channels: int, width: int = 64, image_size: int = 256):
        super().__init__()
        half = width // 2

        def conv(cin: int, cout: int, kernel: int, **kwargs: Any) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, kernel, **kwargs),
                nn.BatchNorm2d(cout, eps=1e-4, affine=False),
                nn.ReLU(inplace=True),
            ]

        encoder_widths = [(3, half), (half, half), (half, width), (width, width), (width, width)]
        self.encoder = nn.Sequential(
            *[m for cin, cout in encoder_widths for m in conv(cin, cout, 4, stride=2, padding=1)],
            *conv(width, width, image_size // 32),  # (S/32 x S/32) -> 1 x 1 bottleneck
        )
        s = image_size
        # Each 4x4 conv with padding 2 grows the map by one pixel: 3->4, 8->9, 15->16, 31->32, 63->64.
        self.upsample_sizes = [s // 64 - 1, s // 32, s // 16 - 1, s // 8 - 1, s // 4 - 1]
        self.decoder = nn.ModuleList(
            [nn.Sequential(*conv(width, width, 4, padding=2)) for _ in self.upsample_sizes]
        )
        self.head = nn.Sequential(
            *conv(width, width, 3, padding=1), nn.Conv2d(width, out_channels, 3, padding=1)
        )
        self.output_size = s // 8

    def forward(self, normalized_images: Tensor) -> Tensor:
        x = self.encoder(normalized_images)
        for size, layer in zip(self.upsample_sizes, self.decoder, strict=True):
            x = layer(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
        size = (self.output_size, self.output_size)
        return self.head(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


def gaussian_kernel1d(sigma: float) -> Tensor:
    """Normalised 1-D Gaussian of size 2 * int(4 sigma + 0.5) + 1 (as the reference's blur)."""
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(maps: Tensor, kernel: Tensor) -> Tensor:
    """Separable Gaussian blur of (B, H, W) maps with reflect padding."""
    radius = kernel.numel() // 2
    x = F.pad(maps.unsqueeze(1), (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return F.conv2d(x, kernel.view(1, 1, -1, 1)).squeeze(1)


def top_count(fraction: float, pixels: int) -> int:
    """How many of a map's `pixels` an image score over `fraction` of them averages (at least
    one: 0 gives the maximum)."""
    return max(1, round(fraction * pixels))


def top_mean(maps: Tensor, k: int) -> Tensor:
    """Per (B, H, W) map: the mean of its `k` highest values (the maximum for k <= 1)."""
    flat = maps.flatten(1)
    return flat.amax(dim=1) if k <= 1 else flat.topk(k, dim=1, sorted=False).values.mean(dim=1)


class Losses(NamedTuple):
    total: Tensor
    local: Tensor
    attention: Tensor
    global_local: Tensor


class AnomalyMaps(NamedTuple):
    """Batch output of `ULSAD.forward`: maps are (B, S, S) at the model's input size."""

    score: Tensor
    anomaly_map: Tensor
    local_map: Tensor
    global_map: Tensor


M = TypeVar("M", bound="ULSADModel")


class ULSADModel(nn.Module):
    """ULSAD: structural (local) and logical (global) anomaly maps from one forward pass.

    Input: (B, 3, S, S) RGB in [0, 1]. Buffers carry what inference needs besides weights: the
    per-channel feature statistics, the map normalisation quantiles and a default threshold.
    """

    def __init__(
        self, config: ULSADConfig, pretrained_backbone: bool = True, seed: int = DEFAULT_SEED
    ):
        """`seed`: of the heads' initialisation (the recipe's; a loaded checkpoint replaces
        the initial weights anyway)."""
        super().__init__()
        self.config = config
        c = config.channels
        self.extractor = FeatureExtractor(
            config.backbone,
            config.layers,
            c,
            pretrained=pretrained_backbone,
            aggregation=config.feature_aggregation,
            fold=config.fold_batchnorm,
        )
        with torch.random.fork_rng(devices=[]):  # head initialisation is reproducible from the seed
            torch.manual_seed(seed)
            featae_out = 2 * c if config.global_branch else c
            self.featae = FeatAE(c, config.featae_width, featae_out, config.featae_output_relu)
            self.global_ae = (
                GlobalAE(c, config.global_width, config.image_size)
                if config.global_branch
                else None
            )
        self.register_buffer("feature_mean", torch.zeros(1, c, 1, 1))
        self.register_buffer("feature_std", torch.ones(1, c, 1, 1))
        # Rows: local, global; columns: low and high quantile. NaN until calibrated.
        self.register_buffer("map_quantiles", torch.full((2, 2), float("nan")))
        self.register_buffer("threshold", torch.tensor(float("nan")))
        # Best-F1 threshold on synthetic defects (NaN without synthetic validation).
        self.register_buffer("threshold_f1", torch.tensor(float("nan")))
        self.register_buffer("blur_kernel", gaussian_kernel1d(config.blur_sigma), persistent=False)

    # ----------------------------------------------------------------------------- construction
    def train(self: M, mode: bool = True) -> M:
        super().train(mode)
        self.extractor.eval()  # the backbone is frozen, BatchNorm statistics included
        return self

    @property
    def device(self) -> torch.device:
        return self.feature_mean.device

    @property
    def calibrated(self) -> bool:
        """True once map quantiles have been computed on held-out good images (the global row
        stays NaN without a global branch)."""
        return not bool(torch.isnan(self.map_quantiles[0]).any())

    @property
    def fusion_weight(self) -> float:
        """Weight of the local map in the combined map (`local_weight`)."""
        return self.config.local_weight

    @property
    def uses_global_map(self) -> bool:
        """Whether the combined map needs the global branch: not without one, nor once the chosen
        fusion gives it no weight (`local_weight` 1.0), when inference skips it."""
        return self.global_ae is not None and self.fusion_weight < 1.0

    # ----------------------------------------------------------------------------- network
    def features(self, normalized_images: Tensor) -> Tensor:
        """Standardised backbone features (B, C, S/8, S/8)."""
        with torch.no_grad():
            raw = self.extractor(normalized_images)
        return (raw - self.feature_mean) / self.feature_std

    def branches(
        self, features: Tensor, normalized_images: Tensor, with_global: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """FeatAE output (B, 2C, h, w) and global AE output (B, C, h, w); without a global branch
        or with `with_global=False`, the FeatAE's first C channels and None (the global AE and
        the FeatAE's global half are then not run)."""
        if self.global_ae is None:
            return self.featae(features), None
        if not with_global:  # the local half alone
            return self.featae(features, self.config.channels), None
        return self.featae(features), self.global_ae(normalized_images)

    def losses(
        self,
        features: Tensor,
        normalized_images: Tensor,
        self_attention: Tensor | None = None,
        local_only: bool = False,
        query_index: Tensor | None = None,
        masks: Tensor | None = None,
    ) -> Losses:
        """The three training losses; `self_attention` may be precomputed (it depends on features
        only). `local_only`: the local loss alone, without running the global branch.
        `query_index`: the attention loss over these flat positions only (`attention_queries`).
        `masks`: (B, 2) bool, whether each input counts in the local loss and in the global
        ones (tiles and whole images, `ulsad.feature_cache.training_inputs`); None: all do. A
        batch trains the global branch only if all its inputs do (`ulsad.train.epoch_batches`
        draws such batches): the global autoencoder's BatchNorm never sees a tile."""
        cfg, c = self.config, self.config.channels
        local_mask, global_mask = (None, None) if masks is None else masks.float().unbind(1)
        if global_mask is not None and not global_mask.all():
            local_only = True  # the global branch trains on batches of its own inputs only
        reconstruction, global_features = self.branches(features, normalized_images, not local_only)
        lambda_local = cfg.lambda_local if cfg.cosine_loss else 0.0
        local = masked_mean(
            feature_distance(features, reconstruction[:, :c], lambda_local), local_mask
        )
        zero = local.new_zeros(())
        attention_loss, global_local = zero, zero
        if global_features is not None:
            global_local = masked_mean(
                feature_distance(global_features, reconstruction[:, c:], cfg.lambda_global),
                global_mask,
            )
            if cfg.attention_loss:
                queries = global_features
                if self_attention is None:
                    self_attention = attention(features, features)
                if query_index is not None:
                    queries = queries.flatten(2)[:, :, query_index]
                    self_attention = self_attention.flatten(2)[:, :, query_index]
                cross_attention = attention(queries, features)
                attention_loss = masked_mean(
                    feature_distance(self_attention, cross_attention, cfg.lambda_attention),
                    global_mask,
                )
        return Losses(local + attention_loss + global_local, local, attention_loss, global_local)

    def raw_maps(
        self, features: Tensor, normalized_images: Tensor, with_global: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Local and global distance maps at feature resolution (B, h, w), before post-processing;
        the global one is None without a global branch or with `with_global=False`."""
        cfg, c = self.config, self.config.channels
        reconstruction, global_features = self.branches(features, normalized_images, with_global)
        lambda_local = cfg.lambda_local if cfg.cosine_loss else 0.0
        local_map = feature_distance(features, reconstruction[:, :c], lambda_local)
        if global_features is None:
            return local_map, None
        return local_map, feature_distance(
            global_features, reconstruction[:, c:], cfg.lambda_global
        )

    def postprocess(self, raw_map: Tensor) -> Tensor:
        """Upsample to the input size and blur (the quantile normalisation is applied after)."""
        size = (self.config.image_size, self.config.image_size)
        upsampled = F.interpolate(
            raw_map.unsqueeze(1), size=size, mode="bilinear", align_corners=False
        )
        return gaussian_blur(upsampled.squeeze(1), self.blur_kernel)

    def backbone_input(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) images in [0, 1] -> the backbone's input: normalised, channels-last on
        the CPU (~20% faster convolutions there)."""
        normalized = self.extractor.normalize(images)
        if normalized.device.type == "cpu":
            normalized = normalized.contiguous(memory_format=torch.channels_last)
        return normalized

    def unnormalized_maps(
        self, images: Tensor, with_global: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Blurred local and global maps at input size, before quantile normalisation (no global
        map when the combined map does not use it, see `uses_global_map`, or `with_global` is
        False)."""
        normalized = self.backbone_input(images)
        features = self.features(normalized)
        use_global = self.uses_global_map and with_global
        local_map, global_map = self.raw_maps(features, normalized, use_global)
        local_map = self.postprocess(local_map)
        return local_map, None if global_map is None else self.postprocess(global_map)

    def forward(self, images: Tensor, with_global: bool = True) -> AnomalyMaps:
        """(B, 3, S, S) images in [0, 1] -> score and combined, local and global maps (B, S, S);
        the global map is zeros when the combined map does not use it. `with_global=False`:
        the local half alone (tiles whose global map comes from their whole image)."""
        return self.combine(*self.unnormalized_maps(images, with_global))

    @property
    def score_pixels(self) -> int:
        """How many of a map's S x S pixels its image score averages (`image_score_fraction`;
        1: the maximum). A Python int, so an exported graph holds it as a constant."""
        return top_count(self.config.image_score_fraction, self.config.image_size**2)

    def image_score(self, maps: Tensor) -> Tensor:
        """Image scores of combined maps (B, S, S): the mean of their `score_pixels` highest."""
        return top_mean(maps, self.score_pixels)

    def combine(self, local_map: Tensor, global_map: Tensor | None) -> AnomalyMaps:
        """Quantile-normalise (once calibrated) and average the blurred maps; score: `image_score`."""
        if self.calibrated:  # m' = 0.1 (m - q_low) / (q_high - q_low); blur commutes with it
            q = self.map_quantiles
            local_map = 0.1 * (local_map - q[0, 0]) / (q[0, 1] - q[0, 0])
            if global_map is not None:
                global_map = 0.1 * (global_map - q[1, 0]) / (q[1, 1] - q[1, 0])
        if global_map is None:
            global_map = torch.zeros_like(local_map)
            combined = local_map
        else:
            w = self.fusion_weight
            combined = w * local_map + (1 - w) * global_map
        return AnomalyMaps(self.image_score(combined), combined, local_map, global_map)
