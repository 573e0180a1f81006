"""The command line end to end: train, predict (scores.csv, maps), eval, and its error lines."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from ulsad.cli import main
from ulsad.data import make_synthetic_dataset


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_writes_scores_and_maps(trained_checkpoint, synthetic_root, tmp_path, capsys):
    test_dir = synthetic_root / "synthetic" / "test"
    single = synthetic_root / "synthetic" / "train" / "good" / "000.png"
    code, _, err = run(
        capsys, "predict", "--checkpoint", trained_checkpoint, "--out", tmp_path, "--save-maps",
        test_dir, single,
    )  # fmt: skip
    assert code == 0, err
    with open(tmp_path / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "score"] and len(rows) == 17
    assert str(single.resolve()) in {r["path"] for r in rows}
    scratch = np.load(tmp_path / "maps" / "scratch" / "000.npy")
    assert scratch.dtype == np.float32 and scratch.shape == (128, 128)
    assert Image.open(tmp_path / "maps" / "scratch" / "000.png").size == (128, 128)
    assert (tmp_path / "maps" / "000.npy").exists()  # a file given directly: maps/<stem>.npy
    # The score is the max of the map at model resolution; the map resized to 128 px keeps it.
    score = float(next(r["score"] for r in rows if r["path"].endswith("scratch/000.png")))
    assert scratch.max() == pytest.approx(score, rel=0.02)


def test_eval_prints_and_writes_metrics(trained_checkpoint, synthetic_root, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    code, out, err = run(
        capsys, "eval", "--checkpoint", trained_checkpoint, "--data", synthetic_root,
        "--category", "synthetic", "--out", out_json,
    )  # fmt: skip
    assert code == 0, err
    results = json.loads(out_json.read_text())
    assert results["image_auroc"] >= 0.9 and results["pixel_auroc"] >= 0.8
    assert 0 < results["aupro"] <= 1 and set(results["per_defect"]) == {"scratch", "contamination"}
    assert "image_auroc" in out and "aupro" in out


def test_train_command_writes_a_checkpoint(tmp_path, capsys):
    root = tmp_path / "data"
    make_synthetic_dataset(root, "tiny", n_train=6, n_test_good=1, n_test_defect=1, size=64)
    code, _, err = run(
        capsys, "train", "--data", root, "--category", "tiny", "--preset", "lite",
        "--epochs", "1", "--batch-size", "4", "--out", tmp_path / "ckpt",
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "ckpt" / "model.safetensors").exists()
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["backbone"] == "tf_efficientnet_lite0" and config["lr_milestones"] == [1]
    # The model card records the exact command and the Hub metadata.
    card = (tmp_path / "ckpt" / "README.md").read_text()
    command = f"ulsad train --data {root} --category tiny --preset lite --epochs 1 --batch-size 4"
    assert f"{command} --out {tmp_path / 'ckpt'}" in card
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "ulsad" and meta["datasets"] == ["mvtec_ad"]
    assert meta["license"] == "cc-by-nc-sa-4.0" and "ulsad-lite" in meta["tags"]
    training = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert training["command"].startswith("ulsad train") and training["category"] == "tiny"


@pytest.fixture
def broken_root(tmp_path):
    root = tmp_path / "data"
    make_synthetic_dataset(root, "tiny", n_train=4, n_test_good=1, n_test_defect=2, size=64)
    return root


def test_error_lines_and_exit_code_2(trained_checkpoint, broken_root, tmp_path, capsys):
    code, _, err = run(
        capsys, "train", "--data", broken_root, "--category", "nope", "--out", tmp_path / "x"
    )
    assert code == 2 and err.startswith("error:") and "nope" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()

    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "predict", "--checkpoint", trained_checkpoint, "--out",
                       tmp_path / "p", tmp_path / "empty")  # fmt: skip
    assert code == 2 and "No images" in err and not (tmp_path / "p").exists()

    mask = next((broken_root / "tiny" / "ground_truth").rglob("*_mask.png"))
    mask.unlink()
    code, _, err = run(capsys, "eval", "--checkpoint", trained_checkpoint, "--data", broken_root,
                       "--category", "tiny", "--out", tmp_path / "e.json")  # fmt: skip
    assert code == 2 and "mask" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "e.json").exists()

    code, _, err = run(capsys, "predict", "--checkpoint", tmp_path / "no-ckpt", "--out",
                       tmp_path / "p", broken_root)  # fmt: skip
    assert code == 2 and "not found" in err


def test_unreadable_images_are_listed_and_the_rest_scored(trained_checkpoint, tmp_path, capsys,
                                                          synthetic_root):  # fmt: skip
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(synthetic_root / "synthetic" / "test" / "good" / "000.png", folder / "a.png")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, _, err = run(capsys, "predict", "--checkpoint", trained_checkpoint, "--out",
                         tmp_path / "out", folder)  # fmt: skip
    assert code == 2
    assert sum("b.png" in line for line in err.splitlines()) == 1
    with open(tmp_path / "out" / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["a.png"]
