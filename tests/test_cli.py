"""The command line end to end: train, predict (scores.csv, maps), eval, and its error lines."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import yaml
from conftest import header_only_png
from PIL import Image

from ulsad.card import CITATION, EXAMPLE_FIGURE, PAPER_URL
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
    assert list(rows[0]) == ["path", "score", "verdict", "threshold", "map"] and len(rows) == 17
    assert str(single.resolve()) in {r["path"] for r in rows}
    # Each row: the verdict and the threshold it was judged by (the checkpoint's default).
    threshold = json.loads((trained_checkpoint / "training.json").read_text())["threshold"]
    assert {r["threshold"] for r in rows} == {f"{threshold:.6f}"}
    for row in rows:
        expected = "anomalous" if float(row["score"]) > float(row["threshold"]) else "good"
        assert row["verdict"] == expected, row
    assert {r["verdict"] for r in rows} == {"good", "anomalous"}
    scratch = np.load(tmp_path / "maps" / "scratch" / "000.npy")
    assert scratch.dtype == np.float32 and scratch.shape == (128, 128)
    assert Image.open(tmp_path / "maps" / "scratch" / "000.png").size == (128, 128)
    assert (tmp_path / "maps" / "000.npy").exists()  # a file given directly: maps/<stem>.npy
    # The score is the mean of the map's highest `image_score_fraction` (lite: 2%) of pixels at
    # model resolution; the map resized to 128 px keeps it.
    fraction = json.loads((trained_checkpoint / "config.json").read_text())["image_score_fraction"]
    top = np.sort(scratch.ravel())[::-1][: max(1, round(fraction * scratch.size))]
    score = float(next(r["score"] for r in rows if r["path"].endswith("scratch/000.png")))
    assert fraction > 0 and top.mean() == pytest.approx(score, rel=0.02)


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
    # A run killed (SIGKILL) while writing its resume state left a temporary file: cleaned up.
    stray = tmp_path / "ckpt" / ".train_state.pt.k1ll3d.tmp"
    stray.parent.mkdir()
    stray.write_bytes(b"half a state")
    code, _, err = run(
        capsys, "train", "--data", root, "--category", "tiny", "--preset", "lite",
        "--epochs", "1", "--batch-size", "4", "--out", tmp_path / "ckpt",
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "ckpt" / "model.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "README.md", "config.json", "model.safetensors", "training.json",
    ]  # fmt: skip
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["backbone"] == "tf_efficientnet_lite0" and "lr_milestones" not in config
    recipe = json.loads((tmp_path / "ckpt" / "training.json").read_text())["recipe"]
    assert recipe["lr_milestones"] == [1]  # --epochs: the paper's milestone, the last epoch
    # The model card records the exact command and the Hub metadata.
    card = (tmp_path / "ckpt" / "README.md").read_text()
    command = f"ulsad train --data {root} --category tiny --preset lite --epochs 1 --batch-size 4"
    assert f"{command} --out {tmp_path / 'ckpt'}" in card
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "ulsad" and "datasets" not in meta and "mvtec-ad" in meta["tags"]
    assert "\n# ULSAD lite MVTec AD tiny\n" in card  # the model's name, not `# ULSAD`
    assert CITATION in card and PAPER_URL in card and "## Usage" in card
    assert EXAMPLE_FIGURE not in card  # a run's folder has no examples/: no figure
    assert meta["license"] == "cc-by-nc-sa-4.0" and "ulsad-lite" in meta["tags"]
    training = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert training["command"].startswith("ulsad train") and training["category"] == "tiny"
    # ... and what the synthetic defects chose, with the table behind it.
    chosen = training["synthetic_validation"]
    assert chosen["heldout_inputs"] == training["n_heldout"] == 1 and chosen["part_scenes"] == 0
    assert "## Chosen without defect images" in card
    assert f"| **{config['local_weight']} (chosen)** |" in card
    assert f"best F1 on the synthetic defects: {training['threshold_f1']:.4f}" in card
    assert "0 of the 1 held-out inputs are scenes of separate parts" in card
    rows = [line for line in card.splitlines() if line.startswith(("| 0", "| 1", "| **"))]
    fusion_rows = [row for row in rows if row.count("|") == 6]  # weight and four metrics
    assert len(fusion_rows) == len(chosen["fusion_table"]) == 5
    families = next(iter(chosen["fusion_table"].values())).get("families", {})
    assert len(rows) == 5 + (5 if len(families) == 2 else 0)  # and the per-family table, if any


def test_card_says_when_the_fusion_weight_was_set_not_chosen(trained_checkpoint, tmp_path):
    from ulsad.card import write_model_card

    folder = tmp_path / "fixed"
    shutil.copytree(trained_checkpoint, folder)
    training = json.loads((folder / "training.json").read_text())
    row = {"image_auroc": 0.9, "pixel_auroc": 0.8, "aupro": 0.7, "score": 0.8}
    training["synthetic_validation"] = {
        "defects": 8, "kinds": ["perlin"], "epochs_compared": [5, 10], "chosen_epoch": 10,
        "local_weight": 0.5, "global_pruned_after": None, "fusion_table": {"0.5": row},
    }  # fmt: skip
    (folder / "training.json").write_text(json.dumps(training))
    card = write_model_card(folder).read_text()
    assert "(the weight of the local map, 0.5, was set in the config)" in card
    assert "| **0.5 (chosen)** | 0.9000 | 0.8000 | 0.7000 | 0.8000 |" in card
    assert "scenes of separate parts" not in card  # a record from before it was counted


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


# ------------------------------------------------------------------------- bad-input table
@pytest.fixture(scope="module")
def places(tmp_path_factory, synthetic_root):
    """Paths the bad-input cases refer to (built once)."""
    base = tmp_path_factory.mktemp("bad_inputs")
    data = base / "data"
    make_synthetic_dataset(data, "tiny", n_train=4, n_test_good=1, n_test_defect=1, size=64)
    image = synthetic_root / "synthetic" / "test" / "good" / "000.png"
    (base / "a_file").write_text("x")
    (base / "notes.txt").write_text("not an image")
    (base / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (base / "empty").mkdir()
    return {"base": base, "data": data, "image": image, "file": base / "a_file"}


def bad_config_checkpoint(trained_checkpoint, folder, **changes):
    folder.mkdir(exist_ok=True)
    shutil.copy(trained_checkpoint / "model.safetensors", folder / "model.safetensors")
    config = json.loads((trained_checkpoint / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


# (id, arguments, what the one error line says, refused before any work starts). Placeholders:
# {ckpt} trained checkpoint, {data} dataset root (category tiny), {image} a good image, {file} an
# existing plain file, {base} a scratch folder. docs/cli.md, "Bad input", lists the same cases.
TRAIN = "train --data {data} --category tiny --epochs 1 --batch-size 2"
CLI_CASES = [
    ("set-string-image-size", TRAIN + " --out {base}/t --set image_size=abc",
     "image_size must be of type int", True),
    ("set-negative-channels", TRAIN + " --out {base}/t --set channels=-1",
     "channels must be in", True),
    ("set-negative-blur", TRAIN + " --out {base}/t --set blur_sigma=-1",
     "blur_sigma must be in", True),
    ("set-no-equals", TRAIN + " --out {base}/t --set channels", "--set expects key=value", True),
    ("set-unknown-field", TRAIN + " --out {base}/t --set colour=1", "Unknown config field", True),
    ("train-batch-size-1", "train --data {data} --category tiny --batch-size 1 --out {base}/t",
     "--batch-size: must be at least 2", True),
    ("train-batch-size-0", "train --data {data} --category tiny --batch-size 0 --out {base}/t",
     "--batch-size: must be at least 2", True),
    ("train-batch-size-text", "train --data {data} --category tiny --batch-size x --out {base}/t",
     "--batch-size: expected an integer", True),
    ("train-save-every-0", TRAIN + " --save-every 0 --out {base}/t",
     "--save-every: must be at least 1", True),
    ("train-epochs-negative", "train --data {data} --category tiny --epochs -1 --out {base}/t",
     "--epochs: must be at least 1", True),
    ("train-epochs-0", "train --data {data} --category tiny --epochs 0 --out {base}/t",
     "--epochs: must be at least 1", True),
    ("train-out-is-a-file", TRAIN + " --out {file}", "is a file, not a folder", True),
    ("train-out-inside-a-file", TRAIN + " --out {file}/sub", "cannot be created", True),
    ("train-category-dotdot", "train --data {data} --category .. --out {base}/t",
     "--category must be the name of one folder", True),
    ("train-category-slash", "train --data {data} --category tiny/../.. --out {base}/t",
     "--category must be the name of one folder", True),
    # Found by the trainer's first step, before any image is read.
    ("train-unknown-category", TRAIN + " --category nope --out {base}/t", "nope", False),
    ("train-missing-data", "train --data {base}/nowhere --out {base}/t", "not found", False),
    ("train-unknown-preset", TRAIN + " --preset huge --out {base}/t", "invalid choice", True),
    ("train-missing-out", "train --data {data}", "required: --out", True),
    ("predict-batch-size-negative", "predict --checkpoint {ckpt} --out {base}/p --batch-size -3 "
     "{image}", "--batch-size: must be at least 1", True),
    ("predict-batch-size-0", "predict --checkpoint {ckpt} --out {base}/p --batch-size 0 {image}",
     "--batch-size: must be at least 1", True),
    ("predict-out-is-a-file", "predict --checkpoint {ckpt} --out {file} {image}",
     "is a file, not a folder", True),
    ("predict-scores-csv-is-a-folder", "predict --checkpoint {ckpt} --out {base}/csvdir {image}",
     "scores.csv is a folder", True),
    ("predict-empty-folder", "predict --checkpoint {ckpt} --out {base}/p {base}/empty",
     "No images", True),
    ("predict-missing-input", "predict --checkpoint {ckpt} --out {base}/p {base}/none.png",
     "No such file or folder", True),
    ("predict-not-an-image-file", "predict --checkpoint {ckpt} --out {base}/p {base}/notes.txt",
     "is not an image file", True),
    ("predict-relative-missing-checkpoint", "predict --checkpoint runs/nothing --out {base}/p "
     "{image}", "'runs/nothing' not found: no folder runs/nothing here, and Hub repo "
     "'runs/nothing' is not in the local cache", True),
    ("predict-missing-checkpoint", "predict --checkpoint {base}/no-ckpt --out {base}/p {image}",
     "not found", False),
    ("predict-checkpoint-is-a-file", "predict --checkpoint {file} --out {base}/p {image}",
     "is a file, not a checkpoint folder", False),
    ("predict-config-string-image-size", "predict --checkpoint {base}/ckpt-abc --out {base}/p "
     "{image}", "image_size must be of type int", False),
    ("predict-config-negative-channels", "predict --checkpoint {base}/ckpt-neg --out {base}/p "
     "{image}", "channels must be in", False),
    ("predict-unreadable-image", "predict --checkpoint {ckpt} --out {base}/p {base}/broken.png",
     "none of the 1 image", False),
    ("predict-onnx-file-torch-backend", "predict --checkpoint {base}/m.onnx --out {base}/p "
     "{image}", "add --backend onnx", False),
    ("eval-category-dotdot", "eval --checkpoint {ckpt} --data {data} --category ..",
     "--category must be the name of one folder", True),
    ("eval-out-is-a-folder", "eval --checkpoint {ckpt} --data {data} --category tiny --out {base}",
     "is a folder: give a file name", True),
    ("eval-batch-size-0", "eval --checkpoint {ckpt} --data {data} --category tiny --batch-size 0",
     "--batch-size: must be at least 1", True),
    ("export-out-is-a-folder", "export --checkpoint {ckpt} --out {base}",
     "is a folder: give a file name", True),
    ("export-opset-0", "export --checkpoint {ckpt} --out {base}/m2.onnx --opset 0",
     "--opset: must be at least 1", True),
    ("benchmark-epochs-0", "benchmark --dataset mvtec_ad --root {data} --epochs 0",
     "--epochs: must be at least 1", True),
    ("no-command", "", "required: command", True),
    ("unknown-command", "fly", "invalid choice", True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message", "early"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_bad_input_gives_one_error_line_and_exit_code_2(
    argv, message, early, places, trained_checkpoint, capsys, monkeypatch
):
    base = places["base"]
    (base / "csvdir" / "scores.csv").mkdir(parents=True, exist_ok=True)
    (base / "m.onnx").write_bytes(b"")
    bad_config_checkpoint(trained_checkpoint, base / "ckpt-abc", image_size="abc")
    bad_config_checkpoint(trained_checkpoint, base / "ckpt-neg", channels=-4)
    if early:  # nothing may start: no training, no model loaded for scoring, no evaluation
        import ulsad.evaluate
        import ulsad.export
        import ulsad.train

        def work(*args, **kwargs):
            raise AssertionError("work started before the arguments were checked")

        for module, name in [
            (ulsad.train, "train"),
            (ulsad.export, "load_predictor"),
            (ulsad.evaluate, "evaluate"),
            (ulsad.export, "export_onnx"),
        ]:
            monkeypatch.setattr(module, name, work)  # fmt: skip
    values = {**{k: str(v) for k, v in places.items()}, "ckpt": str(trained_checkpoint)}
    code, out, err = run_cli(capsys, *argv.format(**values).split())
    assert code == 2, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err
    assert not (base / "t" / "model.safetensors").exists()
    assert not (base / "p" / "scores.csv").exists()


def run_cli(capsys, *argv):
    """`run`, but an argparse refusal (SystemExit) gives its code too."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_input_gets_its_own_map(trained_checkpoint, synthetic_root, tmp_path, capsys):
    """a/x.png, b/x.png, two folders holding x.png, x.png beside x.jpg: one map each."""
    source = Image.open(synthetic_root / "synthetic" / "test" / "good" / "000.png")
    for folder in ("a", "b", "c/sub", "d/sub"):
        (tmp_path / folder).mkdir(parents=True)
        source.save(tmp_path / folder / "x.png")
    source.save(tmp_path / "a" / "x.jpg")
    inputs = [
        tmp_path / "a" / "x.png",
        tmp_path / "b" / "x.png",
        tmp_path / "c",
        tmp_path / "d",
        tmp_path / "a" / "x.png",
    ]  # fmt: skip  (the last: the same image again)
    code, _, err = run(
        capsys, "predict", "--checkpoint", trained_checkpoint, "--out", tmp_path / "out",
        "--save-maps", *inputs, tmp_path / "a" / "x.jpg",
    )  # fmt: skip
    assert code == 0, err
    with open(tmp_path / "out" / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and len({r["path"] for r in rows}) == 5
    maps = {r["map"] for r in rows}
    assert len(maps) == 5
    for name in maps:
        assert (tmp_path / "out" / name).is_file()
        assert (tmp_path / "out" / name).with_suffix(".png").is_file()
    assert len(list((tmp_path / "out" / "maps").rglob("*.npy"))) == 5


def test_a_failed_run_keeps_earlier_results(trained_checkpoint, synthetic_root, tmp_path, capsys):
    good = synthetic_root / "synthetic" / "test" / "good" / "000.png"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--checkpoint", trained_checkpoint, "--out", out, good)
    assert code == 0, err
    first = (out / "scores.csv").read_text()
    # Every image unreadable: rc 2, one error line, scores.csv untouched (was: header only).
    code, _, err = run(capsys, "predict", "--checkpoint", trained_checkpoint, "--out", out, broken)
    assert code == 2 and (out / "scores.csv").read_text() == first
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: none of the 1 image(s) could be read (listed above); {out} is unchanged."
    ]
    # Some read: the new scores replace scores.csv, the earlier ones are kept beside it.
    code, _, err = run(capsys, "predict", "--checkpoint", trained_checkpoint, "--out", out,
                       broken, good)  # fmt: skip
    assert code == 2 and sum(line.startswith("error:") for line in err.splitlines()) == 1
    assert (out / "scores.previous.csv").read_text() == first
    assert len((out / "scores.csv").read_text().splitlines()) == 2


def test_ctrl_c_at_any_time_gives_one_line(monkeypatch, capsys):
    """The entry point imports no torch before `main` runs (Ctrl-C there was a traceback), and
    an interrupt while the parser (and torch) load is caught like one during training."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, ulsad.cli; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert loaded == "False"
    import ulsad.cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(ulsad.cli, "build_parser", interrupted)
    code, _, err = run(capsys, "train", "--data", "x", "--out", "y")
    assert code == 130 and err.startswith("interrupted:") and len(err.splitlines()) == 1


def test_images_up_to_the_documented_limit_are_not_refused_by_pillow(tmp_path):
    """Pillow's own guard refused 179-256 Mpx (a "decompression bomb") in a fresh process."""
    import subprocess
    import sys

    big = header_only_png(tmp_path / "big.png", 14_000, 13_000)  # 182 Mpx: allowed
    huge = header_only_png(tmp_path / "huge.png", 24_000, 24_000)  # 576 Mpx: refused, clearly
    script = (
        "import sys\nfrom ulsad.images import load_image\nfrom ulsad.errors import ULSADError\n"
        "for path in sys.argv[1:]:\n    try:\n        load_image(path)\n"
        "    except ULSADError as error:\n        print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, big, huge], capture_output=True,
                         text=True, check=True).stdout.splitlines()  # fmt: skip
    assert "decompression bomb" not in "".join(out).lower()
    assert "Cannot read" in out[0]  # header only: read as far as the pixel data
    assert "more than 256,000,000 pixels" in out[1] or "more than the 256,000,000" in out[1]


# ------------------------------------------------------------------- fast failures, help, progress
@pytest.fixture
def silent_hub(monkeypatch, tmp_path):
    """A Hub endpoint that accepts connections and never answers (a hung or filtered network),
    with offline mode off and an empty cache."""
    import socket

    from huggingface_hub import constants

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections complete in the kernel's backlog; nothing ever replies
    endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    yield endpoint
    sock.close()


def timed_predict(capsys, checkpoint, tmp_path):
    import time

    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    start = time.perf_counter()
    code, _, err = run(capsys, "predict", "--checkpoint", checkpoint, "--out", tmp_path / "o",
                         image)  # fmt: skip
    return code, err, time.perf_counter() - start


def test_a_missing_checkpoint_fails_in_seconds_with_the_hub_unreachable(silent_hub, tmp_path,
                                                                        capsys):  # fmt: skip
    """`runs/missing` is no folder and looks like a Hub id: one question to the Hub, which does
    not answer; one line naming both readings, in under 3 s (was 6-30 s of retry lines)."""
    code, err, seconds = timed_predict(capsys, "runs/missing", tmp_path)
    assert code == 2 and seconds < 3, (seconds, err)
    assert err.splitlines() == [err.strip()] and "Retrying" not in err
    assert err.startswith("error: Checkpoint 'runs/missing' not found: no folder runs/missing here")
    assert f"the Hub ({silent_hub}) could not be asked about repo 'runs/missing'" in err
    assert "no answer within 2 s" in err
    assert not (tmp_path / "o").exists()


def test_a_missing_checkpoint_fails_in_seconds_online(hub, tmp_path, capsys):
    """Online, the Hub says the repo does not exist: both readings, one request, no retries."""
    code, err, seconds = timed_predict(capsys, "runs/missing", tmp_path)
    assert code == 2 and seconds < 3, (seconds, err)
    assert err.strip() == (
        "error: Checkpoint 'runs/missing' not found: no folder runs/missing here, and no Hub repo "
        "'runs/missing' (if it is private or gated, log in with `hf auth login` or pass a token)."
    )
    assert [p for _, p in hub.requests] == ["/runs/missing/resolve/main/config.json"]


def test_a_missing_checkpoint_is_refused_before_torch_loads(tmp_path):
    """The check comes before the model code: a typo costs Python's start-up, not torch's."""
    import subprocess
    import sys

    script = (
        "import sys\nfrom ulsad.cli import main\n"
        "code = main(['predict', '--checkpoint', 'runs/missing', '--out', sys.argv[1], 'x.png'])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "o")], cwd=tmp_path,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert len(done.stderr.splitlines()) == 1 and "not in the local cache" in done.stderr


def test_the_parser_builds_without_torch_numpy_or_pil():
    """`ulsad --help` must answer at once: building the parser imports no heavy library."""
    import subprocess
    import sys

    script = (
        "import sys, ulsad.cli\nulsad.cli.build_parser()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'PIL'}))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_the_parser_offers_what_the_library_has():
    """The names written out in ulsad.cli (to keep the parser light) match the library's."""
    from ulsad import cli, locate
    from ulsad.checkpoint import CONFIG_NAME, WEIGHTS_NAME
    from ulsad.data import DATASETS
    from ulsad.data.download import SOURCES
    from ulsad.export import DEFAULT_OPSET

    assert list(cli.DATASETS) == list(DATASETS)
    assert sorted(cli.DOWNLOADS) == sorted(SOURCES)
    assert cli.DEFAULT_OPSET == DEFAULT_OPSET
    assert (locate.CONFIG_FILE, locate.WEIGHTS_FILE) == (CONFIG_NAME, WEIGHTS_NAME)


def subparsers():
    import argparse

    from ulsad.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_version_and_help(capsys):
    from ulsad.version import __version__

    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"ulsad {__version__}"
    parser, verbs = subparsers()
    assert "examples:" in parser.format_help()
    for name, verb in verbs.items():
        text = verb.format_help()
        assert f"examples:\n  ulsad {name} " in text, name
        for action in verb._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"ulsad {name} {action.option_strings[0]} has no help text"
            default = action.default
            if default not in (None, False, [], "==SUPPRESS=="):
                shown = " ".join(default) if isinstance(default, list) else default
                assert f"(default: {shown})" in " ".join(text.split()), (name, action)
    help_text = " ".join(verbs["predict"].format_help().split())
    assert "--batch-size BATCH_SIZE images per forward pass (default: 8)" in help_text


@pytest.mark.parametrize("terminal", [True, False])
@pytest.mark.parametrize("quiet", [True, False])
def test_predict_progress_only_on_a_terminal_without_quiet(trained_checkpoint, synthetic_root,
                                                           tmp_path, capsys, monkeypatch,
                                                           terminal, quiet):  # fmt: skip
    import sys

    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    test_dir = synthetic_root / "synthetic" / "test"
    args = ["predict", "--checkpoint", trained_checkpoint, "--out", tmp_path, "--batch-size", "8",
            test_dir, *(["--quiet"] if quiet else [])]  # fmt: skip
    code, _, err = run(capsys, *args)
    assert code == 0, err
    shown = "16/16" in err and "image" in err
    assert shown == (terminal and not quiet), err


def test_card_shows_the_per_family_table_behind_the_fusion_weight(trained_checkpoint, tmp_path):
    from ulsad.card import write_model_card

    folder = tmp_path / "families"
    shutil.copytree(trained_checkpoint, folder)
    training = json.loads((folder / "training.json").read_text())

    def row(structural: float, logical: float) -> dict:
        scores = {"structural": {"score": structural}, "logical": {"score": logical}}
        return {"image_auroc": 0.9, "pixel_auroc": 0.8, "aupro": 0.7,
                "score": (structural + logical) / 2, "families": scores}  # fmt: skip

    table = {"0.5": row(0.96, 0.90), "1.0": row(0.97, 0.80)}
    training["synthetic_validation"] = {
        "defects": 8, "kinds": ["perlin", "swap"], "epochs_compared": [5], "chosen_epoch": 5,
        "local_weight": 0.5, "global_pruned_after": None, "fusion_table": table,
    }  # fmt: skip
    (folder / "training.json").write_text(json.dumps(training))
    card = write_model_card(folder).read_text()
    assert "| local weight | logical | structural | regret |" in card
    assert "| **0.5 (chosen)** | 0.9000 | 0.9600 | 0.0100 |" in card
    assert "| 1.0 | 0.8000 | 0.9700 | 0.1000 |" in card
    assert "max_local_weight" not in card
    # with a cap (`--set max_local_weight=0.75`), the card says the choice was among fewer weights
    training["synthetic_validation"]["rule"] = "minimax family regret, local weight at most 0.75"
    training["recipe"]["max_local_weight"] = 0.75
    (folder / "training.json").write_text(json.dumps(training))
    card = write_model_card(folder).read_text()
    assert "among the weights up to 0.75 (`max_local_weight`)" in card
