"""`ULSADConfig` and `TrainingRecipe` check every field's type and range (from `--set`,
config.json or Python); a preset splits one set of overrides between them."""

from __future__ import annotations

import dataclasses
import json

import pytest
from safetensors.torch import save_file

from ulsad import config as model_config
from ulsad import recipe as training_recipe
from ulsad.checkpoint import FORMAT
from ulsad.config import LEGACY_TRAINING_FIELDS, ULSADConfig
from ulsad.errors import ULSADError
from ulsad.hub import load_pretrained
from ulsad.presets import PRESETS, preset, split_overrides
from ulsad.recipe import LEGACY_NAMES, TrainingRecipe

BAD_VALUES = [
    ("image_size", "abc", "image_size must be of type int"),
    ("image_size", 100, "image_size must be in"),
    ("image_size", 200, "multiple of 64"),
    ("image_size", 256.0, "image_size must be of type int"),
    ("channels", -1, "channels must be in"),
    ("channels", True, "channels must be of type int"),
    ("featae_width", 0, "featae_width must be in"),
    ("global_width", 0, "global_width must be in"),
    ("blur_sigma", -1.0, "blur_sigma must be in"),
    ("blur_sigma", 0, "blur_sigma must be in"),
    ("blur_sigma", "4", "blur_sigma must be of type float"),
    ("lambda_local", -0.5, "lambda_local must be in"),
    ("local_weight", 1.5, "local_weight must be in"),
    ("quantiles", (0.9,), "quantiles must be of type"),
    ("quantiles", (0.995, 0.9), "quantiles must be increasing"),
    ("quantiles", (0.9, 1.5), "quantiles must be in"),
    ("layers", (2,), "layers must have 2 values"),
    ("layers", (2, "3"), "layers must be of type"),
    ("layers", (-1, 3), "layers must be in"),
    ("epochs", -1, "epochs must be in"),
    ("epochs", 0, "epochs must be in"),
    ("batch_size", 1, "batch_size must be in"),
    ("lr", 0.0, "lr must be in"),
    ("lr", float("nan"), "lr must be finite"),
    ("lr", float("inf"), "lr must be finite"),
    ("lr_milestones", (-2,), "lr_milestones must be in"),
    ("lr_gamma", 0, "lr_gamma must be in"),
    ("seed", -1, "seed must be in"),
    ("val_fraction", 1.0, "val_fraction must be in"),
    ("augment_copies", -1, "augment_copies must be in"),
    ("augment_rotation", 200.0, "augment_rotation must be in"),
    ("cosine_loss", 1, "cosine_loss must be of type bool"),
    ("augment_flip", "yes", "augment_flip must be of type bool"),
    ("backbone", 5, "backbone must be of type str"),
    ("backbone", " ", "backbone must not be empty"),
    ("attention_queries", -1, "attention_queries must be in"),
    ("training_precision", "float16", "training_precision must be 'auto'"),
    ("image_score_fraction", 1.0, "image_score_fraction must be in"),
    ("image_score_fraction", -0.01, "image_score_fraction must be in"),
    ("feature_aggregation", (3,), "feature_aggregation must be of type"),
    ("feature_aggregation", True, "feature_aggregation must be of type"),
    ("feature_aggregation", 0, "feature_aggregation must be in"),
    ("feature_aggregation", (3, 2), "feature_aggregation must be odd sizes"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_VALUES)
def test_every_field_is_checked(field, value, message):
    with pytest.raises(ULSADError, match=message):
        preset("lite", **{field: value})


def test_the_range_tables_name_real_fields_and_new_fields_are_type_checked():
    fields = {f.name for f in dataclasses.fields(ULSADConfig)}
    assert set(model_config.RANGES) <= fields  # no stale entries
    assert {"image_size", "channels", "blur_sigma"} <= set(model_config.RANGES)
    recipe_fields = {f.name for f in dataclasses.fields(TrainingRecipe)}
    assert set(training_recipe.RANGES) <= recipe_fields
    assert {"epochs", "batch_size", "lr"} <= set(training_recipe.RANGES)

    @dataclasses.dataclass
    class Extended(ULSADConfig):  # a field added later: checked against its annotation
        new_knob: int | None = 3

    assert Extended(new_knob=None).new_knob is None
    with pytest.raises(ULSADError, match="new_knob must be of type"):
        Extended(new_knob="3")


def test_valid_values_pass_and_json_lists_become_tuples():
    config = ULSADConfig.from_dict({"layers": [1, 2], "quantiles": [0.8, 0.99], "blur_sigma": 4})
    assert config.layers == (1, 2) and config.quantiles == (0.8, 0.99)
    assert config.blur_sigma == 4
    # One size for both maps, as checkpoints before per-map sizes wrote it; a JSON list per map.
    assert ULSADConfig.from_dict({"feature_aggregation": 3}).feature_aggregation == (3, 3)
    assert ULSADConfig.from_dict({"feature_aggregation": [3, 1]}).feature_aggregation == (3, 1)
    for named in PRESETS.values():
        assert ULSADConfig.from_dict(json.loads(named.config.to_json())) == named.config
        assert TrainingRecipe.from_dict(json.loads(named.recipe.to_json())) == named.recipe


@pytest.mark.parametrize(
    ("field", "value"), [("image_size", "abc"), ("channels", -4), ("blur_sigma", -1.0)]
)
def test_bad_config_json_is_one_clear_error(tmp_path, field, value):
    """Was a TypeError (rc 1, "Unexpected error" in the app) for a string image size."""
    config = {"format": FORMAT, **PRESETS["lite"].config.to_dict(), field: value}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ULSADError, match=f"config.json: Config field {field}"):
        load_pretrained(tmp_path)


def test_model_config_and_recipe_share_no_field_and_old_training_fields_are_the_recipe():
    model = {f.name for f in dataclasses.fields(ULSADConfig)}
    recipe = {f.name for f in dataclasses.fields(TrainingRecipe)}
    assert not model & recipe and not model & LEGACY_TRAINING_FIELDS
    assert {LEGACY_NAMES.get(k, k) for k in LEGACY_TRAINING_FIELDS} <= recipe


def test_an_old_config_json_loads_its_model_fields_and_sets_the_recipe_aside():
    """config.json before ulsad 0.4 carried the recipe (40 fields): it loads, the training
    fields are ignored by the model config; a null local_weight (choose it) scores with 0.5."""
    old = {**PRESETS["lite"].config.to_dict(), "epochs": None, "steps": 400, "lr": 1e-3,
           "lr_milestones": [], "validation_points": 3, "synthetic_defects": 64, "seed": 40,
           "augment_copies": 0, "training_precision": "auto", "local_weight": None}  # fmt: skip
    config = ULSADConfig.from_dict(old)
    assert config == PRESETS["lite"].config and config.local_weight == 0.5
    recipe = TrainingRecipe.from_dict(model_config.split_legacy(old)[1])
    assert (recipe.steps, recipe.selection_points, recipe.choose_local_weight) == (400, 3, True)


def test_overrides_go_to_the_config_or_the_recipe_that_owns_them():
    model, training = split_overrides({"channels": 64, "epochs": 20, "batch_size": 8})
    assert model == {"channels": 64} and training == {"epochs": 20, "batch_size": 8}
    lite = preset("lite", epochs=20, batch_size=8, channels=64, validation_points=2)
    assert (lite.recipe.epochs, lite.recipe.batch_size, lite.config.channels) == (20, 8, 64)
    assert lite.recipe.selection_points == 2  # the earlier name still works
    assert lite.recipe.choose_local_weight  # lite chooses its fusion weight...
    fixed = preset("lite", local_weight=0.7)  # ...unless it is given
    assert fixed.config.local_weight == 0.7 and not fixed.recipe.choose_local_weight
    chosen = preset("paper", local_weight=None, synthetic_defects=4)  # the earlier "choose it"
    assert chosen.recipe.choose_local_weight and chosen.config.local_weight == 0.5
    with pytest.raises(ULSADError, match=r"Unknown config field\(s\): \['chanels'\]"):
        preset("lite", chanels=64)


def test_a_preset_matches_its_trained_configs_but_for_what_training_chose():
    lite = PRESETS["lite"]
    trained = lite.config.replace(local_weight=1.0, fold_batchnorm=False)
    assert lite.matches(trained)  # the fusion weight was chosen; folding is how it runs
    assert not lite.matches(trained.replace(channels=64))
    assert not PRESETS["lite"].replace(local_weight=0.5).matches(trained)  # a fixed weight
