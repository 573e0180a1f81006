"""Which images training reads (`ulsad.data.training_images`): a category folder given without
its category trains on its good training images only, never on a test or mask file; a wrong
category says what was looked for and what is there."""

from __future__ import annotations

import json
from pathlib import Path

import PIL.Image
import pytest

from ulsad.cli import main
from ulsad.data import make_synthetic_dataset, training_images
from ulsad.errors import ULSADError


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    """A synthetic MVTec AD category: train/good, test/<defect>, ground_truth/<defect>."""
    root = tmp_path_factory.mktemp("mvtec_like")
    return make_synthetic_dataset(root, "widget", n_train=8, n_test_good=2, n_test_defect=2)


def test_a_category_folder_without_category_gives_its_good_training_images(category, caplog):
    with caplog.at_level("INFO", logger="ulsad"):
        train, heldout = training_images(category)
    assert train == sorted((category / "train" / "good").glob("*.png")) and heldout == []
    assert "good training images only" in caplog.text
    assert (train, heldout) == training_images(category.parent, "widget")  # the same images


def test_a_plain_folder_of_good_images_keeps_working(category):
    good = category / "train" / "good"
    assert training_images(good) == (sorted(good.glob("*.png")), [])


def test_test_or_mask_folders_without_a_known_layout_are_refused(tmp_path, category):
    mixed = tmp_path / "mixed"
    (mixed / "test").mkdir(parents=True)
    for path in sorted((category / "train" / "good").glob("*.png"))[:2]:
        (mixed / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ULSADError, match=r"holds test/ .*category=") as error:
        training_images(mixed)
    assert error.value.render({"category": "--category"}).count("--category") == 1


def test_category_folder_and_category_together_say_what_was_meant(category):
    with pytest.raises(ULSADError) as error:
        training_images(category, "widget")
    shown = error.value.render({"root": "--data", "category": "--category"})
    assert f"looked for {category / 'widget'}" in shown
    assert "found: none, only the folders ground_truth/, test/, train/" in shown
    assert f"did you mean --data {category.parent} --category widget, or --data {category}" in (
        shown
    )


def test_cli_train_on_a_category_folder_never_opens_a_test_or_mask_file(
    category, tmp_path, monkeypatch, capsys, caplog
):
    """`ulsad train --data <category folder>` with no --category (issue 33): every image file
    opened while training is under train/good."""
    opened = []
    real_open = PIL.Image.open

    def recording_open(fp, *args, **kwargs):
        opened.append(Path(fp) if isinstance(fp, (str, Path)) else Path(getattr(fp, "name", "?")))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", recording_open)
    out = tmp_path / "ckpt"
    argv = ["train", "--data", str(category), "--out", str(out), "--epochs", "1",
            "--batch-size", "4", "--set", "image_size=128", "--set", "synthetic_defects=0",
            "--set", "local_weight=0.5"]  # fmt: skip
    with caplog.at_level("INFO", logger="ulsad"):
        assert main(argv) == 0, capsys.readouterr().err
    assert "good training images only" in caplog.text
    assert opened and all(p.parent == category / "train" / "good" for p in opened), opened
    training = json.loads((out / "training.json").read_text())
    assert training["n_train"] + training["n_heldout"] == 8


def test_cli_set_routes_each_field_to_the_config_or_the_recipe(category, tmp_path, monkeypatch):
    """`ulsad train --set key=value` keeps working for model and recipe fields alike."""
    from ulsad import ULSAD

    seen = {}

    def fake_fit(self, *args, **kwargs):
        seen.update(config=self.config, recipe=self.recipe)
        raise KeyboardInterrupt  # stop before anything is written

    monkeypatch.setattr(ULSAD, "fit", fake_fit)
    argv = ["train", "--data", str(category), "--out", str(tmp_path / "o"), "--epochs", "3",
            "--set", "channels=64", "--set", "lr=0.01", "--set", "validation_points=2",
            "--set", "local_weight=0.25"]  # fmt: skip
    assert main(argv) == 130
    config, recipe = seen["config"], seen["recipe"]
    assert (config.channels, config.local_weight) == (64, 0.25)
    assert (recipe.lr, recipe.epochs, recipe.lr_milestones, recipe.selection_points) == (
        0.01,
        3,
        (3,),
        2,
    )
    assert not recipe.choose_local_weight  # a given weight is not chosen
    bad = ["train", "--data", str(category), "--out", str(tmp_path / "o"), "--set", "lr=0"]
    assert main(bad) == 2
