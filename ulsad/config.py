"""Every knob of ULSAD in one dataclass, plus the named presets.

The `paper` preset is the configuration of Patra & Ben Taieb (2024) exactly; `lite` is a CPU-sized
variant on an offline ImageNet backbone (see `PRESETS` for why each width was chosen).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ulsad.errors import ULSADError


@dataclass
class ULSADConfig:
    """Architecture, loss, map post-processing and training hyperparameters of one ULSAD model."""

    # Frozen feature extractor: timm model name and `features_only` indices of a stride-8 and a
    # stride-16 map; the deeper map is upsampled to the first, the two are concatenated and
    # average-pooled along channels to `channels` (C).
    backbone: str = "wide_resnet50_2"
    layers: tuple[int, ...] = (2, 3)
    image_size: int = 256
    channels: int = 384
    # Local branch (FeatAE): bottleneck width (4C in the paper); output 2C (C with no global branch).
    featae_width: int = 1536
    featae_output_relu: bool = True  # the reference ends the decoder with BN + ReLU
    # Global branch: image-to-feature autoencoder width (64 in the paper).
    global_width: int = 64
    # Loss weights of the cosine terms: d(a, b) = mean_c (a - b)^2 + lambda * (1 - cos(a, b)).
    lambda_local: float = 0.5
    lambda_attention: float = 0.5
    lambda_global: float = 0.5
    # Ablation switches (paper's table: DFR -> + cosine -> + global branch -> + attention loss).
    cosine_loss: bool = True
    global_branch: bool = True
    attention_loss: bool = True
    # Inference: map normalisation quantiles (on held-out good images), blur, combination weight.
    quantiles: tuple[float, float] = (0.9, 0.995)
    blur_sigma: float = 4.0
    local_weight: float = 0.5
    # Training.
    epochs: int = 200
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 2e-5
    lr_milestones: tuple[int, ...] = (200,)
    lr_gamma: float = 0.1
    seed: int = 40
    val_fraction: float = 0.1
    # Augmentation for small training sets: `augment_copies` randomly transformed copies of every
    # training image (rotation up to +-`augment_rotation` degrees, mirrored with probability 1/2
    # when `augment_flip`) are cached next to it; each epoch draws one version of every image, so
    # an epoch costs the same. Off by default: orientation can be part of what "normal" means.
    augment_copies: int = 0
    augment_rotation: float = 0.0
    augment_flip: bool = False
    preset: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)
        self.quantiles = tuple(self.quantiles)
        self.lr_milestones = tuple(self.lr_milestones)
        if self.image_size % 64 or self.image_size < 128:
            raise ULSADError(f"image_size must be a multiple of 64, >= 128, got {self.image_size}.")
        if len(self.layers) != 2:
            raise ULSADError(
                f"layers must name two feature maps (stride 8, 16), got {self.layers}."
            )
        if self.featae_width % 4:
            raise ULSADError(f"featae_width must be divisible by 4, got {self.featae_width}.")
        if not 0.0 < self.val_fraction < 1.0:
            raise ULSADError(f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        if self.augment_copies < 0 or not 0.0 <= self.augment_rotation <= 180.0:
            raise ULSADError(
                "augment_copies must be >= 0 and augment_rotation in [0, 180] degrees, got "
                f"{self.augment_copies} and {self.augment_rotation}."
            )
        if self.attention_loss and not self.global_branch:
            raise ULSADError(
                "attention_loss needs global_branch=True (it trains the global branch)."
            )

    def replace(self, **changes: Any) -> ULSADConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ULSADError(f"Unknown config field(s): {sorted(unknown)}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ULSADConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ULSADError(
                f"config.json has unknown field(s) {sorted(unknown)}: it was written by a newer "
                "ulsad or is not an ULSAD checkpoint. Upgrade ulsad (pip install -U ulsad)."
            )
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


PRESETS: dict[str, ULSADConfig] = {
    # Exactly the paper: wide_resnet50_2 layer2+layer3 pooled to C=384, FeatAE 4C=1536, 256 px.
    "paper": ULSADConfig(preset="paper"),
    # CPU-sized: tf_efficientnet_lite0 blocks 2 and 4 (40 + 112 ch, offline ImageNet weights),
    # pooled to C=96, FeatAE width 384, global AE width 32: 5.0 M parameters (a 20 MB fp32
    # checkpoint), 2.6 GFLOP per image against the paper preset's 51 (benchmarks/presets.py).
    # No ReLU after the FeatAE's last layer: standardised features are half negative, which a
    # ReLU output cannot reconstruct. Measured with 40 epochs (README, "Presets"): MVTec AD bottle
    # image AUROC 0.989 -> 1.000, MPDD metal_plate 0.513 -> 0.836. Small training sets need more
    # epochs and, where parts turn, `augment_copies` (README, "Small training sets").
    "lite": ULSADConfig(
        backbone="tf_efficientnet_lite0",
        channels=96,
        featae_width=384,
        featae_output_relu=False,
        global_width=32,
        epochs=40,
        lr_milestones=(40,),
        preset="lite",
    ),
}


def preset_config(name: str, **overrides: Any) -> ULSADConfig:
    """The named preset's config with `overrides` applied."""
    if name not in PRESETS:
        raise ULSADError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name].replace(**overrides)
