"""The embedded default checkpoints: they load offline and reach their documented metrics on the
real test images in ../shared/data (skipped when that folder is absent, as on a fresh clone)."""

from __future__ import annotations

import json

import pytest
import yaml

from ulsad import ULSAD
from ulsad.card import CITATION, EXAMPLE_FIGURE, PAPER_URL
from ulsad.checkpoint import read_config
from ulsad.config import preset_config
from ulsad.data import load_mask, load_split
from ulsad.evaluate import evaluate
from ulsad.hub import WEIGHTS_DIR, available_checkpoints, read_manifest

# What each model card documents (measured: bottle 0.998; metal_plate 1.0000 / 0.9901 / 0.949),
# rounded down: a regression in loading or inference shows up here.
LEVELS = {
    "bottle": {"image_auroc": 0.99},
    "metal_plate": {"image_auroc": 0.995, "pixel_auroc": 0.988, "aupro": 0.945},
}


def test_manifest_lists_embedded_checkpoints_with_cards():
    manifest = read_manifest()
    assert manifest["default"] in manifest["checkpoints"]
    assert set(available_checkpoints()) == set(LEVELS)
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
        # `ulsad train` defaults: every field of the lite recipe but those training chooses
        assert config.preset == "lite" and preset_config("lite").matches(config), name


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
