"""Checkpoints on the Hugging Face Hub, against a Hub-compatible server on 127.0.0.1
(tests/hub_server.py) with huggingface_hub's real client: download, revision pinning, the cache
with the server stopped, repos that do not exist or are not ours, push then load, `ulsad push`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import constants
from PIL import Image

from ulsad import PRESETS, ULSAD, ULSADError
from ulsad.card import CITATION, EXAMPLE_FIGURE, PAPER_URL
from ulsad.cli import main

SIZE = PRESETS["lite"].config.image_size  # the trained fixture's input size
IMAGES = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
FILES = ("config.json", "model.safetensors")


@pytest.fixture(scope="module")
def model(trained_checkpoint):
    return ULSAD.from_pretrained(trained_checkpoint)


def files_of(folder: Path, names=FILES) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


def with_threshold(model: ULSAD, folder: Path, value: float) -> dict[str, bytes]:
    """The model's files with another default threshold: a second, distinguishable version."""
    model.save_pretrained(folder)
    copy = ULSAD.from_pretrained(folder)
    copy.threshold.fill_(value)
    copy.save_pretrained(folder)
    return files_of(folder)


def same_outputs(a: ULSAD, b: ULSAD) -> bool:
    with torch.no_grad():
        return all(torch.equal(x, y) for x, y in zip(a(IMAGES), b(IMAGES), strict=True))


def test_download_of_a_published_checkpoint(hub, model, trained_checkpoint):
    hub.commit("acme/bottle", files_of(trained_checkpoint))
    loaded = ULSAD.from_pretrained("acme/bottle")
    assert loaded.config == model.config
    assert same_outputs(loaded, model)
    resolved = [p for m, p in hub.requests if "/resolve/" in p]
    assert {p.rsplit("/", 1)[-1] for p in resolved} == set(FILES)
    assert all(p.startswith("/acme/bottle/resolve/main/") for p in resolved)
    snapshot = Path(constants.HF_HUB_CACHE) / "models--acme--bottle" / "snapshots"
    assert sorted(p.name for p in next(snapshot.iterdir()).iterdir()) == sorted(FILES)


def test_revision_pinning_by_commit_tag_and_branch(hub, model, tmp_path):
    first = hub.commit("acme/versions", with_threshold(model, tmp_path / "a", 0.25))
    hub.tag("acme/versions", "v1")
    second = hub.commit("acme/versions", with_threshold(model, tmp_path / "b", 0.75))
    hub.commit("acme/versions", with_threshold(model, tmp_path / "c", 0.5), branch="dev")
    assert first != second
    assert float(ULSAD.from_pretrained("acme/versions").threshold) == 0.75  # main
    assert float(ULSAD.from_pretrained("acme/versions", revision=first).threshold) == 0.25
    assert float(ULSAD.from_pretrained("acme/versions", revision="v1").threshold) == 0.25
    assert float(ULSAD.from_pretrained("acme/versions", revision="dev").threshold) == 0.5
    with pytest.raises(ULSADError, match="has no revision 'v9'"):
        ULSAD.from_pretrained("acme/versions", revision="v9")


def test_second_load_comes_from_the_cache_with_the_server_stopped(hub, model, monkeypatch):
    commit = hub.commit("acme/cached", files_of_model(model))
    first = ULSAD.from_pretrained("acme/cached")
    hub.stop()
    for revision in (None, commit):  # the branch (through refs/main) and the pinned commit
        again = ULSAD.from_pretrained("acme/cached", revision=revision)
        assert same_outputs(first, again)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1: cache only
    assert same_outputs(first, ULSAD.from_pretrained("acme/cached"))
    with pytest.raises(ULSADError, match="not in the local cache"):
        ULSAD.from_pretrained("acme/never-downloaded")


def files_of_model(model: ULSAD, tmp: Path | None = None) -> dict[str, bytes]:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return files_of(Path(folder))


def test_missing_repo_and_repos_that_are_not_ulsad_checkpoints(hub, model):
    with pytest.raises(ULSADError, match="no Hub repo 'acme/nothing'"):
        ULSAD.from_pretrained("acme/nothing")
    hub.commit("acme/readme-only", {"README.md": b"# hello\n"})
    with pytest.raises(ULSADError, match=r"is not an ULSAD checkpoint: it has no config\.json"):
        ULSAD.from_pretrained("acme/readme-only")
    weights = files_of_model(model)["model.safetensors"]
    hub.commit(
        "acme/bert", {"config.json": b'{"model_type": "bert"}', "model.safetensors": weights}
    )
    with pytest.raises(ULSADError, match="not an ULSAD config"):
        ULSAD.from_pretrained("acme/bert")
    # The config is read first: the weights of a repo that is not ours are never downloaded.
    assert not [p for _, p in hub.requests if p.startswith("/acme/bert/") and "safetensors" in p]


def test_push_to_hub_then_load_what_was_pushed(hub, model):
    url = model.push_to_hub("me/pushed", private=True)
    commit = url.rsplit("/", 1)[-1]
    repo = hub.repos["me/pushed"]
    assert repo.private and repo.refs["main"] == commit
    assert sorted(repo.commits[commit]) == ["README.md", "config.json", "model.safetensors"]
    card = repo.commits[commit]["README.md"].decode()
    assert yaml.safe_load(card.split("---")[1])["library_name"] == "ulsad"
    assert "\n# pushed\n" in card and CITATION in card  # named, not `# ULSAD`
    assert EXAMPLE_FIGURE not in card  # no examples/ to show: no figure promised
    loaded = ULSAD.from_pretrained("me/pushed", revision=commit)
    assert same_outputs(loaded, model)
    # push again (unchanged): create_repo answers 409 "exists", which is fine
    assert model.push_to_hub("me/pushed").rsplit("/", 1)[-1] != ""


def test_cli_push_uploads_the_folder_with_its_model_card(hub, trained_checkpoint, tmp_path, capsys,
                                                         synthetic_root):  # fmt: skip
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for path in trained_checkpoint.iterdir():
        if path.is_file():
            (folder / path.name).write_bytes(path.read_bytes())
    (folder / "train_state.pt").write_bytes(b"resume state: never uploaded")
    eval_record = {"dataset": "mvtec_ad", "category": "synthetic", "image_auroc": 0.875}
    (folder / "eval.json").write_text(json.dumps(eval_record))
    (folder / "examples").mkdir()
    defect = next((synthetic_root / "synthetic" / "test" / "scratch").glob("*.png"))
    (folder / "examples" / "scratch_000.png").write_bytes(defect.read_bytes())
    assert main(["push", "--checkpoint", str(folder), "--repo", "me/cli"]) == 0
    out = capsys.readouterr().out
    commit = out.split("revision='")[1].split("'")[0]
    files = hub.repos["me/cli"].commits[commit]
    assert "train_state.pt" not in files and "eval.json" in files
    card = files["README.md"].decode()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "ulsad" and "anomaly-detection" in meta["tags"]
    assert "datasets" not in meta  # mvtec_ad is no Hub dataset id: named in tags and model-index
    assert "mvtec-ad" in meta["tags"]
    # The card: titled by the repo, the paper and its BibTeX, usage, the example beside its map.
    assert "\n# cli\n" in card and "ULSAD lite MVTec AD synthetic" in card
    assert PAPER_URL in card and CITATION in card and "## Usage" in card
    assert 'ULSAD.from_pretrained("me/cli")' in card and "ulsad predict --checkpoint me/cli" in card
    assert f"]({EXAMPLE_FIGURE})" in card and EXAMPLE_FIGURE in files
    figure = Image.open(io.BytesIO(files[EXAMPLE_FIGURE]))
    assert figure.size == (2 * 256 + 8, 256)  # the image and its map overlay side by side
    assert "examples/scratch_000.png" in files
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert {"type": "image_auroc", "value": 0.875, "name": "Image AUROC"} in metrics
    assert (folder / "README.md").read_bytes() == files["README.md"]  # the folder carries it
    loaded = ULSAD.from_pretrained("me/cli", revision=commit)
    assert same_outputs(loaded, ULSAD.from_pretrained(folder))


def test_cli_push_errors_are_one_line(hub, trained_checkpoint, tmp_path, capsys):
    assert main(["push", "--checkpoint", str(trained_checkpoint), "--repo", "no-owner"]) == 2
    assert capsys.readouterr().err.startswith("error: Give the Hub repo as 'owner/name'")
    assert main(["push", "--checkpoint", str(tmp_path), "--repo", "me/x"]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    hub.stop()
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in FILES:
        (copy / name).write_bytes((trained_checkpoint / name).read_bytes())
    assert main(["push", "--checkpoint", str(copy), "--repo", "me/y"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Could not push to me/y") and err.count("\n") == 1
