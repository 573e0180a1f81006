"""The model config: what building and running one ULSAD network needs, and nothing else.

This is what a checkpoint's `config.json` holds. How a network is trained (schedule, precision,
augmentation, model selection) is its `ulsad.recipe.TrainingRecipe`, recorded in `training.json`;
a named preset pairs the two (`ulsad.presets`). What training chooses (the fusion weight) is
written here as a plain value. `config.json` files of earlier versions, which carried the recipe
too, load: those fields are set aside (`LEGACY_TRAINING_FIELDS`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ulsad.errors import ULSADError
from ulsad.fields import Range, check_fields

__all__ = ["DEFAULT_SEED", "LEGACY_TRAINING_FIELDS", "ULSADConfig", "split_legacy"]

DEFAULT_SEED = 40
"""The paper's seed: the heads' initialisation when no recipe gives one, and the recipe's default."""

# Fields that config.json carried before the recipe had its own record (ulsad <= 0.3): read from
# an old config.json, they are set aside (`split_legacy`), never an error.
LEGACY_TRAINING_FIELDS = frozenset({
    "attention_queries", "augment_copies", "augment_flip", "augment_rotation", "batch_size",
    "epochs", "lr", "lr_gamma", "lr_milestones", "lr_schedule", "min_epochs", "prune_global",
    "seed", "steps", "synthetic_defects", "training_precision", "val_fraction",
    "validation_points", "weight_decay",
})  # fmt: skip


@dataclass
class ULSADConfig:
    """Architecture, losses and map post-processing of one ULSAD network."""

    # Frozen feature extractor: timm model name and `features_only` indices of a stride-8 and a
    # stride-16 map; the deeper map is upsampled to the first, the two are concatenated and
    # average-pooled along channels to `channels` (C).
    backbone: str = "wide_resnet50_2"
    layers: tuple[int, ...] = (2, 3)
    image_size: int = 256
    # Elongated images (aspect ratio >= 2) as ceil(long / short) overlapping square tiles,
    # each resized to image_size, instead of one distorting square resize; maps are stitched
    # back, an image's score is its highest tile's (`ulsad.images.tile_boxes`).
    tile: bool = False
    # With `tile`: the global branch reads the whole image (one square resize) while the local
    # branch reads the tiles, so the global autoencoder models the whole layout through its
    # bottleneck, not half a bottle at a time. Its map is cut to each tile's region
    # (`ulsad.images.crop_regions`) and fused there with the tile's local map. The whole image's
    # own pipeline trains the global branch: its attention loss pairs the global output for the
    # whole image with the whole image's features (cached once, like the tiles'), its
    # global-local loss with the FeatAE's second half on those features; tiles train the local
    # loss alone (`ulsad.feature_cache.load_inputs`). No effect on an image that is not tiled.
    global_whole_image: bool = False
    channels: int = 384
    # Average each backbone map (stride 8, stride 16) over k x k neighbourhoods before fusing
    # (1: off, the paper). One int sets both (as checkpoints before per-map sizes wrote it).
    feature_aggregation: tuple[int, int] = (1, 1)
    # Run the frozen backbone as a copy with each BatchNorm folded into its convolution (same
    # features within float rounding; `ulsad.backbones.fold_batchnorm`). The copy costs the
    # backbone's memory again: lite's takes 0.75x the time for ~14 MB; the paper's bought 2% of
    # its time for 0.25 GB (peak RSS 1.77 GB against 1.52 GB without it, benchmarks.inference).
    # How the model runs, not what it computes: not compared (`matches`).
    fold_batchnorm: bool = field(default=False, compare=False)
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
    # Image score: the mean of the highest `image_score_fraction` of the combined map's pixels
    # (at least one; 0: the maximum, the paper). A defect covers an area, while a good image's
    # brightest spot is often a few pixels wide. Tiled images score their highest tile's.
    image_score_fraction: float = 0.0
    # Weight of the local map in the combined map. A recipe may choose it on synthetic defects
    # (`TrainingRecipe.choose_local_weight`); training then writes the chosen value here.
    local_weight: float = 0.5
    preset: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        if type(self.feature_aggregation) is int:
            self.feature_aggregation = (self.feature_aggregation,) * 2
        check_fields(self, RANGES, LENGTHS, INCREASING)  # types and ranges; lists -> tuples
        if self.image_size % 64 or self.image_size < 128:
            raise ULSADError(f"image_size must be a multiple of 64, >= 128, got {self.image_size}.")
        if len(self.layers) != 2:
            raise ULSADError(
                f"layers must name two feature maps (stride 8, 16), got {self.layers}."
            )
        if self.featae_width % 4:
            raise ULSADError(f"featae_width must be divisible by 4, got {self.featae_width}.")
        if any(k < 1 or k % 2 == 0 for k in self.feature_aggregation):
            raise ULSADError(
                f"feature_aggregation must be odd sizes >= 1, got {self.feature_aggregation}."
            )
        if self.attention_loss and not self.global_branch:
            raise ULSADError(
                "attention_loss needs global_branch=True (it trains the global branch); for a "
                "model without the global branch set attention_loss=False as well."
            )

    def matches(
        self, trained: ULSADConfig, chosen: set[str] | frozenset[str] = frozenset()
    ) -> bool:
        """Whether `trained` (a checkpoint's config) is this config, but for the fields that
        training chose (`chosen`, e.g. `TrainingRecipe.chosen_fields()`) and those that do not
        change what the model computes (`compare=False`: `preset`, `fold_batchnorm`)."""
        return self == trained.replace(**{k: getattr(self, k) for k in chosen})

    def replace(self, **changes: Any) -> ULSADConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ULSADError(f"Unknown config field(s): {sorted(unknown)}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ULSADConfig:
        """The config of a `config.json`'s fields; an earlier version's training fields are
        ignored (`split_legacy` returns them)."""
        values, _ = split_legacy(values)
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


def split_legacy(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model fields, training fields) of a config dict written by any version: the training
    fields of earlier versions (`LEGACY_TRAINING_FIELDS`) go to the second; a `local_weight` of
    null (then: "to be chosen in training") becomes the 0.5 that such a model scored with."""
    model = {k: v for k, v in values.items() if k not in LEGACY_TRAINING_FIELDS}
    training = {k: v for k, v in values.items() if k in LEGACY_TRAINING_FIELDS}
    if "local_weight" in model and model["local_weight"] is None:
        model["local_weight"] = 0.5
        training["choose_local_weight"] = True
    return model, training


# Range of each numeric field (see `ulsad.fields.check_fields`); fields absent here are only
# type-checked.
RANGES: dict[str, Range] = {
    "layers": (0, None, True, True),
    "image_size": (128, None, True, True),
    "channels": (1, None, True, True),
    "feature_aggregation": (1, None, True, True),
    "featae_width": (4, None, True, True),
    "global_width": (1, None, True, True),
    "lambda_local": (0.0, None, True, True),
    "lambda_attention": (0.0, None, True, True),
    "lambda_global": (0.0, None, True, True),
    "quantiles": (0.0, 1.0, True, True),
    "blur_sigma": (0.0, 100.0, False, True),
    "image_score_fraction": (0.0, 1.0, True, False),
    "local_weight": (0.0, 1.0, True, True),
}
LENGTHS = {"layers": 2}  # tuple fields of a fixed length not given by their annotation
INCREASING = {"quantiles"}  # tuple fields whose values must increase
