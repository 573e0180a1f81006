"""The named presets: each pairs a model config (`ULSADConfig`) with a training recipe
(`TrainingRecipe`), and the one place where a flat list of overrides is split between the two.

The `paper` preset is the configuration of Patra & Ben Taieb (2024) exactly; `lite` is a CPU-sized
variant on an offline ImageNet backbone. Why each of `lite`'s values was chosen, with the
measurements, is in docs/presets.md and benchmarks/reports/lite_defaults.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ulsad.config import ULSADConfig, split_legacy
from ulsad.errors import ULSADError
from ulsad.recipe import LEGACY_NAMES, TrainingRecipe

__all__ = ["PRESETS", "Preset", "preset", "preset_config", "split_overrides"]

MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ULSADConfig))
RECIPE_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainingRecipe))


@dataclass(frozen=True)
class Preset:
    """A named model config and the recipe that trains it."""

    config: ULSADConfig
    recipe: TrainingRecipe

    @property
    def name(self) -> str:
        return self.config.preset

    def replace(self, **overrides: Any) -> Preset:
        """This preset with `overrides` applied, each to the config or the recipe that owns it
        (`split_overrides`)."""
        model, training = split_overrides(overrides)
        return Preset(self.config.replace(**model), self.recipe.replace(**training))

    def matches(self, trained: ULSADConfig) -> bool:
        """Whether `trained` (a checkpoint's config) comes from this preset: the same config but
        for what the recipe chose in training."""
        return self.config.matches(trained, self.recipe.chosen_fields())


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config changes, recipe changes) of one flat set of overrides (`--set`, keyword
    arguments of `ULSAD.from_preset`).

    Earlier spellings keep working: `validation_points` (now `selection_points`), and
    `local_weight=None` ("choose it in training": `choose_local_weight=True`); a `local_weight`
    value fixes the weight (`choose_local_weight=False`) unless the recipe is told otherwise."""
    model, training = split_legacy(dict(overrides))
    if "local_weight" in model and "choose_local_weight" not in training:
        training["choose_local_weight"] = False
    for key in [k for k in model if k not in MODEL_FIELDS]:
        if LEGACY_NAMES.get(key, key) in RECIPE_FIELDS:
            training[key] = model.pop(key)
    unknown = sorted(k for k in model if k not in MODEL_FIELDS)
    if unknown:
        raise ULSADError(f"Unknown config field(s): {unknown}.")
    return model, training


PRESETS: dict[str, Preset] = {
    # Exactly the paper: wide_resnet50_2 layer2+layer3 pooled to C=384, FeatAE 4C=1536, 256 px,
    # 200 epochs of Adam at 2e-4.
    "paper": Preset(ULSADConfig(preset="paper"), TrainingRecipe()),
    # CPU-sized: tf_efficientnet_lite0 blocks 2 and 4 (40 + 112 ch, offline ImageNet weights),
    # pooled to C=96, FeatAE width 384, global AE width 32: 5.0 M parameters, 2.6 GFLOP per image
    # against the paper preset's 51 (benchmarks/presets.py). Each value was measured on MPDD
    # metal_plate, KolektorSDD commutator and MVTec AD bottle together (docs/presets.md; every
    # round and candidate in benchmarks/reports/lite_defaults.md, "the record").
    "lite": Preset(
        ULSADConfig(
            backbone="tf_efficientnet_lite0",
            image_size=320,
            tile=True,
            global_whole_image=True,
            channels=96,
            featae_width=384,
            featae_output_relu=False,
            global_width=32,
            feature_aggregation=(3, 3),
            fold_batchnorm=True,
            image_score_fraction=0.02,
            preset="lite",
        ),
        TrainingRecipe(
            epochs=None,
            steps=400,
            min_epochs=5,
            batch_size=4,
            lr=1e-3,
            lr_schedule="cosine",
            lr_milestones=(),
            attention_queries=400,
            synthetic_defects=64,
            selection_points=3,
            choose_local_weight=True,
            prune_global=True,
        ),
    ),
}


def preset(name: str, **overrides: Any) -> Preset:
    """The named preset with `overrides` (model or recipe fields) applied."""
    if name not in PRESETS:
        raise ULSADError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name].replace(**overrides)


def preset_config(name: str, **overrides: Any) -> ULSADConfig:
    """The named preset's model config with `overrides` applied (recipe fields among them are
    accepted and go to the recipe, which this leaves out: see `preset`)."""
    return preset(name, **overrides).config
