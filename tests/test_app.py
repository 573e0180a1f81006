"""The Gradio app (`ulsad.app`, launched by `app.py`), served on a free local port and driven
through its API.

Scores must equal `model.predict`, images keep their size, bad inputs give a readable message
and the app keeps answering, a fit runs while inspect stays responsive, sessions are separate.
"""

from __future__ import annotations

import json
import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import header_only_png
from PIL import Image

import ulsad.hub
from ulsad import ULSAD, ULSADError
from ulsad.hub import WEIGHTS_DIR
from ulsad.presets import PRESETS

gr = pytest.importorskip("gradio")
pytest.importorskip("plotly")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from ulsad.app import checkpoints, fitting, inputs, scoring, sessions, ui  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_module():
    """The app's page (`build_demo`, `LAUNCH_KWARGS`, its handlers), the Hub offline meanwhile."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield ui


def serve(app_module, **build_kwargs):
    demo = app_module.build_demo(**build_kwargs)
    demo.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=free_port(),
        quiet=True,
        **app_module.LAUNCH_KWARGS,
    )
    return demo


def client(demo, tmp_path_factory) -> Client:
    downloads = tmp_path_factory.mktemp("downloads")
    return Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=downloads)


@pytest.fixture(scope="module")
def served(app_module, trained_checkpoint):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        spec = str(trained_checkpoint)
        demo = serve(app_module, choices=[("synthetic", spec)], default=spec)
        yield demo
        demo.close()


@pytest.fixture(scope="module")
def model(trained_checkpoint) -> ULSAD:
    return ULSAD.from_pretrained(trained_checkpoint)


@pytest.fixture(scope="module")
def test_images(synthetic_root) -> dict[str, list[Path]]:
    test = synthetic_root / "synthetic" / "test"
    return {
        "good": sorted((test / "good").glob("*.png")),
        "defect": sorted(test.glob("[cs]*/*.png")),  # contamination, scratch
        "train": sorted((synthetic_root / "synthetic" / "train" / "good").glob("*.png")),
    }


# ----------------------------------------------------------------------------------- inspect
def test_inspect_returns_the_models_score_and_full_size_maps(
    served, model, test_images, tmp_path, tmp_path_factory
):
    # Non-square, so that a width/height swap would show.
    path = tmp_path / "wide.png"
    Image.open(test_images["defect"][0]).resize((160, 96)).save(path)
    score, overlay, local_map, global_map, verdict, plot = client(served, tmp_path_factory).predict(
        handle_file(path), api_name="/inspect"
    )
    expected = model.predict(path).score
    assert score == pytest.approx(expected, abs=1e-5)
    for image in (overlay, local_map, global_map):
        assert Image.open(image).size == (160, 96)
    threshold = float(model.threshold)
    assert verdict.startswith("ANOMALOUS" if expected > threshold else "GOOD")
    assert f"{threshold:.4f}" in verdict
    assert plot["type"] == "plotly" and '"type":"heatmap"' in plot["plot"].replace(" ", "")


def test_identical_inspections_get_files_of_their_own(served, test_images, tmp_path_factory):
    """gradio named each output file by the hash of its bytes and rewrote it on every response,
    so two clients inspecting one image at once shared files and a download could break midway
    (4 of 196 requests under load). Same image twice: same pixels, separate files."""
    app = client(served, tmp_path_factory)
    first, second = (app.predict(handle_file(test_images["good"][0]), api_name="/inspect")
                     for _ in range(2))  # fmt: skip
    for a, b in zip(first[1:4], second[1:4], strict=True):  # overlay, local map, global map
        assert a != b
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_identical_batches_get_gallery_files_of_their_own(served, test_images, tmp_path_factory):
    """The Batch gallery's WebP thumbnails go through the same content-hashed cache: the same
    upload twice gives the same pixels in separate files."""
    app = client(served, tmp_path_factory)
    upload = [handle_file(p) for p in test_images["defect"][:2]]
    first, second = (app.predict(upload, worst_n=2, api_name="/batch")[2] for _ in range(2))
    for a, b in zip(first, second, strict=True):
        assert a["image"] != b["image"] and a["caption"] == b["caption"]
        assert np.array_equal(
            np.asarray(Image.open(a["image"])), np.asarray(Image.open(b["image"]))
        )


def test_a_global_map_the_model_does_not_use_is_shown_as_unused(trained_checkpoint, test_images):
    """Local-only (local_weight 1.0): a grey panel that says so, not an all-zero heatmap that would
    read as "no logical defect"; with weight on the global map, its heatmap in colour."""
    image = Image.open(test_images["defect"][0]).convert("RGB")
    panels = {}
    for weight in (1.0, 0.5):
        model = ULSAD.from_pretrained(trained_checkpoint)
        model.config.local_weight = weight
        shown = scoring.inspect_image(model, image, threshold=None)
        panels[weight] = np.asarray(shown.global_map).astype(int)
        assert shown.global_map.size == image.size
        assert ("local (structural) map alone" in shown.verdict) == (weight == 1.0)
    unused, used = panels[1.0], panels[0.5]
    assert (unused[..., 0] == unused[..., 1]).all() and (unused[..., 1] == unused[..., 2]).all()
    assert (unused[..., 0] > 200).sum() > 50  # the label's white letters (the image: 96-159)
    assert np.abs(used[..., 0] - used[..., 2]).max() > 50  # a coloured heatmap


def test_threshold_moves_the_verdict_and_none_means_the_checkpoints(
    served, model, test_images, tmp_path_factory
):
    api = client(served, tmp_path_factory)
    path = handle_file(test_images["good"][0])
    score = api.predict(path, api_name="/inspect")[0]
    below = api.predict(path, threshold=score - 1e-3, api_name="/inspect")[4]
    above = api.predict(path, threshold=score + 1e-3, api_name="/inspect")[4]
    default = api.predict(path, threshold=None, api_name="/inspect")[4]
    assert below.startswith("ANOMALOUS") and above.startswith("GOOD")
    assert f"threshold {float(model.threshold):.4f}" in default


def test_unusual_images_are_read(served, model, test_images, tmp_path, tmp_path_factory):
    """16-bit greyscale, RGBA and CMYK inputs: scored like `predict`, maps at their size."""
    source = Image.open(test_images["defect"][1]).convert("RGB")
    grey16 = Image.fromarray(np.asarray(source.convert("L")).astype(np.uint16) * 257)
    files = {
        "grey16.png": grey16,
        "rgba.png": source.convert("RGBA"),
        "cmyk.jpg": source.convert("CMYK"),
    }
    api = client(served, tmp_path_factory)
    for name, image in files.items():
        image.save(tmp_path / name)
        score, overlay, *_ = api.predict(handle_file(tmp_path / name), api_name="/inspect")
        assert score == pytest.approx(model.predict(tmp_path / name).score, abs=1e-5), name
        assert Image.open(overlay).size == source.size, name


def test_large_image_is_downscaled_with_a_notice(served, test_images, tmp_path, tmp_path_factory):
    path = tmp_path / "long.png"
    Image.open(test_images["good"][0]).resize((inputs.MAX_SIDE + 904, 250)).save(path)
    _, overlay, *_, verdict, _ = client(served, tmp_path_factory).predict(
        handle_file(path), api_name="/inspect"
    )
    # scored at 4096 x 205; the panels are drawn at display size (scoring.PANEL_SIDE)
    assert Image.open(overlay).size == (scoring.PANEL_SIDE, round(205 * scoring.PANEL_SIDE / 4096))
    assert "downscaled to 4096x205" in verdict


# ----------------------------------------------------------------------------------- errors
def test_bad_inputs_give_a_message_and_the_app_keeps_serving(
    served, test_images, tmp_path, tmp_path_factory
):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    good = test_images["good"][0]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    huge = header_only_png(tmp_path / "huge.png", 20_000, 20_000)
    api = client(served, tmp_path_factory)
    cases = [
        ((handle_file(text),), {}, "Cannot read notes.txt"),
        ((handle_file(truncated),), {}, "Cannot read truncated.png"),
        ((handle_file(huge),), {}, "20000x20000 pixels, more than"),
        ((handle_file(good),), {"custom_checkpoint": "nobody/nothing"}, "Could not download"),
        ((handle_file(good),), {"custom_checkpoint": str(tmp_path)}, "Unknown checkpoint"),
        (
            (handle_file(good),),
            {"checkpoint": checkpoints.FITTED},
            "No model fitted in this session",
        ),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(AppError, match=message) as error:
            api.predict(*args, api_name="/inspect", **kwargs)
        assert "Traceback" not in str(error.value)
    with pytest.raises(AppError, match="upload 10 to 200 good"):
        api.predict([handle_file(p) for p in test_images["train"][:3]], 1, api_name="/fit")
    with pytest.raises(AppError, match="None of the uploaded files could be read"):
        api.predict([handle_file(truncated)], api_name="/batch")
    assert isinstance(api.predict(handle_file(good), api_name="/inspect")[0], float)


# ----------------------------------------------------------------------------------- batch
def test_batch_table_is_sorted_and_scores_match_predict(
    served, model, test_images, tmp_path, tmp_path_factory
):
    sources = {f"good{i}.png": p for i, p in enumerate(test_images["good"][:3])}
    sources |= {f"defect{i}.png": p for i, p in enumerate(test_images["defect"][:3])}
    for name, source in sources.items():
        (tmp_path / name).write_bytes(source.read_bytes())
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for i, source in enumerate(test_images["defect"][3:5]):
            zipped.write(source, f"folder/zipped{i}.png")
            sources[f"more.zip/folder/zipped{i}.png"] = source
        zipped.writestr("../escape.png", b"not a png")  # climbs out: skipped
        zipped.writestr("readme.txt", "ignored")
    (tmp_path / "notes.txt").write_text("skipped")
    uploads = [tmp_path / n for n in sources if "/" not in n] + [archive, tmp_path / "notes.txt"]
    table, histogram, gallery, csv_path = client(served, tmp_path_factory).predict(
        [handle_file(p) for p in uploads], worst_n=4, api_name="/batch"
    )
    rows = table["data"]
    assert table["headers"] == ["image", "score", "anomalous"]
    assert sorted(row[0] for row in rows) == sorted(sources)
    scores = [row[1] for row in rows]
    assert scores == sorted(scores, reverse=True)
    threshold = float(model.threshold)
    for name, score, anomalous in rows:
        assert score == pytest.approx(model.predict(sources[name]).score, abs=1e-5), name
        assert anomalous == (score > threshold)
    assert len(gallery) == 4
    assert [g["caption"].split()[0] for g in gallery] == [f"{s:.4f}" for s in scores[:4]]
    lines = Path(csv_path).read_text().splitlines()
    assert lines[0] == "image,score,anomalous,threshold" and len(lines) == 1 + len(sources)
    assert histogram["type"] == "plotly"
    assert not (tmp_path.parent / "escape.png").exists()


# ----------------------------------------------------------------------------------- fit
def test_fit_selects_the_new_model_offers_it_and_inspect_stays_responsive(
    served, test_images, tmp_path, tmp_path_factory
):
    fitter = client(served, tmp_path_factory)
    uploads = [handle_file(p) for p in test_images["train"][:10]]
    job = fitter.submit(uploads, 6, True, api_name="/fit")  # with rotated / mirrored copies
    deadline = time.monotonic() + 60
    while job.status().code != Status.PROGRESS and not job.done():
        assert time.monotonic() < deadline, "the fit never started"
        time.sleep(0.05)
    # Another user inspects while the fit runs: answered before the fit ends.
    other = client(served, tmp_path_factory)
    assert isinstance(
        other.predict(handle_file(test_images["good"][0]), api_name="/inspect")[0], float
    )
    assert not job.done(), "inspect waited for the fit"
    status, archive, checkpoint, threshold, custom = job.result(timeout=120)
    assert status.startswith("Trained on 10 images") and custom == ""
    folder = tmp_path / "fitted"
    with zipfile.ZipFile(archive) as zipped:
        assert {"model.safetensors", "config.json", "training.json"} <= set(zipped.namelist())
        zipped.extractall(folder)
    fitted = ULSAD.from_pretrained(folder)
    assert fitted.config.preset == "lite" and fitted.calibrated
    recipe = json.loads((folder / "training.json").read_text())["recipe"]  # not in config.json
    assert (recipe["augment_copies"], recipe["augment_flip"]) == (7, True)
    assert checkpoint["value"] == checkpoints.FITTED
    assert threshold["value"] == pytest.approx(float(fitted.threshold), abs=1e-6)
    # The fitter's session now inspects with its own model; other sessions do not see it.
    path = test_images["defect"][0]
    score = fitter.predict(handle_file(path), checkpoint=checkpoints.FITTED, api_name="/inspect")[0]
    assert score == pytest.approx(fitted.predict(path).score, abs=1e-5)
    with pytest.raises(AppError, match="No model fitted in this session"):
        other.predict(handle_file(path), checkpoint=checkpoints.FITTED, api_name="/inspect")


def test_one_fit_at_a_time_and_inspect_has_its_own_queue(served):
    events = {fn.api_name: fn for fn in served.fns.values() if fn.api_name}
    assert events["fit"].concurrency_limit == 1
    assert events["inspect"].concurrency_id not in (
        events["fit"].concurrency_id,
        events["batch"].concurrency_id,
    )
    assert events["inspect"].concurrency_limit >= 2


# ----------------------------------------------------------------------------------- embedded
@pytest.mark.skipif(
    not (WEIGHTS_DIR / "bottle" / "model.safetensors").is_file(),
    reason="embedded checkpoint weights/bottle not trained yet",
)
def test_default_app_uses_the_embedded_checkpoint_and_its_examples(
    app_module, test_images, tmp_path_factory
):
    choices, default = checkpoints.checkpoint_choices()
    assert default == "bottle" and ("bottle" in [value for _, value in choices])
    examples = sorted((WEIGHTS_DIR / "bottle" / "examples").glob("*.png"))
    rows = checkpoints.example_rows(choices)
    assert [Path(image) for image, name in rows if name == "bottle"] == examples
    image = examples[0] if examples else test_images["good"][0]
    demo = serve(app_module)
    try:
        score = client(demo, tmp_path_factory).predict(handle_file(image), api_name="/inspect")[0]
    finally:
        demo.close()
    assert score == pytest.approx(ULSAD.from_pretrained("bottle").predict(image).score, abs=1e-5)


LAYOUT_LOGICAL = WEIGHTS_DIR / "layout" / "examples" / "mismatched_004.png"


@pytest.mark.skipif(
    not (WEIGHTS_DIR / "layout" / "model.safetensors").is_file(),
    reason="embedded checkpoint weights/layout not installed",
)
def test_the_layout_examples_logical_defect_is_found_by_the_global_map(
    app_module, tmp_path_factory
):
    """The demo shows both halves of ULSAD. The default app offers the synthetic layout
    checkpoint with its examples; on the colour-mismatch example, through the API, the global map
    is drawn (a heatmap, not the grey "Not used" panel) and carries the verdict: the image is
    anomalous, while the same model's local map alone scores it below the threshold.
    (Measured: score 1.085, threshold 0.0949, local map alone 0.026.)"""
    choices, _ = checkpoints.checkpoint_choices()
    assert "layout" in [value for _, value in choices]
    assert [str(LAYOUT_LOGICAL), "layout"] in checkpoints.example_rows(choices)
    model = ULSAD.from_pretrained("layout")
    threshold = float(model.threshold)
    local_only = ULSAD.from_pretrained("layout")
    local_only.config.local_weight = 1.0  # the combined map is the local map
    assert model.uses_global_map and not local_only.uses_global_map
    demo = serve(app_module)
    try:
        api = client(demo, tmp_path_factory)
        score, _, local_map, global_map, verdict, _ = api.predict(
            handle_file(LAYOUT_LOGICAL), checkpoint="layout", threshold=None, api_name="/inspect"
        )
    finally:
        demo.close()
    assert score == pytest.approx(model.predict(LAYOUT_LOGICAL).score, abs=1e-5)
    assert score > threshold and verdict.startswith("ANOMALOUS")
    assert f"threshold {threshold:.4f}" in verdict
    assert "strongest evidence: global (logical) map" in verdict
    assert local_only.predict(LAYOUT_LOGICAL).score < threshold < score
    image = Image.open(LAYOUT_LOGICAL).convert("RGB")
    expected = scoring.inspect_image(model, image, threshold)  # both maps, over the image
    for shown, drawn in ((local_map, expected.local_map), (global_map, expected.global_map)):
        pixels = np.asarray(Image.open(shown).convert("RGB")).astype(int)
        assert np.abs(pixels - np.asarray(drawn).astype(int)).max() <= 1
    panel = np.asarray(Image.open(global_map).convert("RGB")).astype(int)
    grey = (panel[..., 0] == panel[..., 1]).all() and (panel[..., 1] == panel[..., 2]).all()
    assert not grey and np.abs(panel[..., 0] - panel[..., 2]).max() > 50  # a coloured heatmap
    unused = np.asarray(scoring.unused_panel(image)).astype(int)
    assert np.abs(panel - unused).mean() > 20  # not the "Not used" panel


def test_manifest_drives_the_default_checkpoint_dropdown_and_examples(
    app_module, trained_checkpoint, test_images, tmp_path, tmp_path_factory, monkeypatch
):
    """Without the real weights: a weights/ folder of our own, as the Space would ship it."""
    weights = tmp_path / "weights"
    (weights / "demo" / "examples").mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        (weights / "demo" / name).write_bytes((trained_checkpoint / name).read_bytes())
    examples = [weights / "demo" / "examples" / f"{i}.png" for i in range(2)]
    for source, target in zip(test_images["defect"], examples, strict=False):
        target.write_bytes(source.read_bytes())
    manifest = {
        "default": "demo",
        "checkpoints": {
            name: {"path": name, "title": name.title(), "hub_repo_id": f"nobody/{name}"}
            for name in ("missing", "demo")
        },
    }
    (weights / "manifest.json").write_text(json.dumps(manifest))
    (weights / "demo" / "examples" / "ATTRIBUTION.md").write_text("# Credits\nSynthetic, CC0.\n")
    monkeypatch.setattr(ulsad.hub, "WEIGHTS_DIR", weights)
    choices, default = checkpoints.checkpoint_choices()
    assert choices == [("Missing (from the Hub)", "missing"), ("Demo", "demo")]
    assert default == "demo"
    assert checkpoints.example_rows(choices) == [[str(p), "demo"] for p in examples]
    assert checkpoints.example_credits(choices) == "Synthetic, CC0."
    demo = serve(app_module)
    try:
        api = client(demo, tmp_path_factory)
        score = api.predict(handle_file(examples[0]), api_name="/inspect")[0]
        with pytest.raises(AppError, match="Could not download 'nobody/missing'"):
            api.predict(handle_file(examples[0]), checkpoint="missing", api_name="/inspect")
    finally:
        demo.close()
    assert score == pytest.approx(
        ULSAD.from_pretrained(trained_checkpoint).predict(examples[0]).score, abs=1e-5
    )


def test_app_loads_checkpoints_from_the_hub(
    app_module, served, hub, model, trained_checkpoint, test_images, tmp_path_factory, monkeypatch
):
    """A manifest entry that is not installed comes from its Hub repo; the text box takes any
    Hub id (the local Hub server of tests/hub_server.py)."""
    files = {n: (trained_checkpoint / n).read_bytes() for n in ("config.json", "model.safetensors")}
    hub.commit("acme/synthetic", files)
    image = test_images["defect"][0]
    expected = model.predict(image).score
    api = client(served, tmp_path_factory)
    score = api.predict(handle_file(image), custom_checkpoint="acme/synthetic", api_name="/inspect")
    assert score[0] == pytest.approx(expected, abs=1e-5)

    weights = tmp_path_factory.mktemp("weights")
    entry = {"path": "remote", "title": "Remote", "hub_repo_id": "acme/synthetic"}
    (weights / "manifest.json").write_text(
        json.dumps({"default": "remote", "checkpoints": {"remote": entry}})
    )
    monkeypatch.setattr(ulsad.hub, "WEIGHTS_DIR", weights)
    assert checkpoints.checkpoint_choices() == ([("Remote (from the Hub)", "remote")], "remote")
    demo = serve(app_module)
    try:
        score = client(demo, tmp_path_factory).predict(handle_file(image), api_name="/inspect")[0]
    finally:
        demo.close()
    assert score == pytest.approx(expected, abs=1e-5)
    assert [p for m, p in hub.requests if p == "/acme/synthetic/resolve/main/model.safetensors"]

    fitted = tmp_path_factory.mktemp("fitted")  # the app pushes a fitted folder with its card
    for name in ("config.json", "model.safetensors", "training.json"):
        (fitted / name).write_bytes((trained_checkpoint / name).read_bytes())
    status = app_module.push("me/app-push", "", True, sessions.Session(fitted=fitted))
    assert status.startswith("Pushed to ") and hub.repos["me/app-push"].private
    pushed = hub.repos["me/app-push"].commits[status.rsplit("/", 1)[-1]]
    assert sorted(pushed) == ["README.md", "config.json", "model.safetensors", "training.json"]
    assert ULSAD.from_pretrained("me/app-push").predict(image).score == pytest.approx(expected)


def test_push_needs_a_fitted_model_and_reports_the_hub_error(app_module, trained_checkpoint):
    with pytest.raises(gr.Error, match="Fit a model first"):
        app_module.push("me/ulsad-test", "", True, sessions.Session())
    fitted = sessions.Session(fitted=trained_checkpoint)
    with pytest.raises(gr.Error, match="your-name/repo-name"):
        app_module.push("no-slash", "", True, fitted)
    with pytest.raises(gr.Error, match=r"Could not push to me/ulsad-test: .*offline"):
        app_module.push("me/ulsad-test", "", True, fitted)  # HF_HUB_OFFLINE=1 in tests


# ----------------------------------------------------------------------------------- units
def test_collect_images_unpacks_zips_inside_workdir_and_enforces_the_limit(tmp_path):
    png = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(png)
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in ("../../evil.png", "dir/b.png", "__MACOSX/dir/._b.png", ".hidden.png"):
            zipped.write(png, name)
        zipped.writestr("notes.txt", "x")
    workdir = tmp_path / "work"
    images, skipped = inputs.collect_images(
        [str(png), str(archive), str(tmp_path / "x.csv")], workdir, 10
    )
    # Hidden files, macOS resource forks and paths climbing out of the archive are left out.
    assert [name for _, name in images] == ["a.png", "upload.zip/dir/b.png"]
    assert images[1][0].resolve().parent == workdir.resolve()
    assert skipped == [
        "upload.zip/../../evil.png: outside the archive, not unpacked",
        "upload.zip/notes.txt: not an image",
        "x.csv: not an image",
    ]
    assert not (tmp_path.parent / "evil.png").exists()
    with pytest.raises(ULSADError, match="at most 1 at a time"):
        inputs.collect_images([str(png), str(archive)], tmp_path / "work2", 1)


def test_model_cache_evicts_the_least_recently_used(tmp_path):
    cache = checkpoints.ModelCache(maxsize=2, device="cpu")
    first, second, third = object(), object(), object()
    cache.put("a", first)
    cache.put("b", second)
    assert cache.get("a") is first  # now the most recent
    cache.put("c", third)
    assert cache.get("a") is first and cache.get("c") is third
    with pytest.raises(ULSADError):
        cache.get(str(tmp_path))  # "b" was evicted; a folder without a checkpoint is refused
    with pytest.raises(ULSADError, match="No checkpoint chosen"):
        cache.get("  ")


def test_fit_checks_its_inputs_and_stops_when_asked(test_images, tmp_path):
    images = [(p, p.name) for p in test_images["train"][:10]]
    with pytest.raises(ULSADError, match="Epochs must be between 0 and 200"):
        fitting.fit_lite(images, tmp_path / "a", epochs=-1)
    for epochs in (3, fitting.FIT_AUTO_EPOCHS):
        seen = []
        with pytest.raises(fitting.FitStopped):
            fitting.fit_lite(
                images,
                tmp_path / f"b{epochs}",
                epochs=epochs,
                callback=lambda epoch, total, *_, seen=seen: seen.append((epoch, total)),
                should_stop=lambda seen=seen: bool(seen),
            )
        assert not (tmp_path / f"b{epochs}" / "model.safetensors").exists()
        # 0: `ulsad train`'s budget, 400 steps: 200 epochs of the 9 images not held out.
        lite = PRESETS["lite"].recipe
        budget = lite.training_epochs(9)
        assert seen == [(1, epochs or budget)]
        assert budget * lite.steps_per_epoch(9) >= lite.steps


# ----------------------------------------------------------------------------------- hardening
def bad_config_folder(trained_checkpoint: Path, folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(
        (trained_checkpoint / "model.safetensors").read_bytes()
    )
    config = json.loads((trained_checkpoint / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


# (id, endpoint, arguments, what the message says). Placeholders in strings: {good} a good
# image, {text} a text file, {truncated}, {huge} (header of 20000x20000), {wide} (header of
# 16000x16000: 256 Mpx, 1 KB), {folder} a scratch folder holding a config.json, {ckpt} a real
# checkpoint folder. docs/app.md, "Bad input in the app", lists the same cases.
UNKNOWN = "Unknown checkpoint: choose one from the list"
APP_CASES = [
    ("not-an-image", "/inspect", {"image": "{text}"}, "Cannot read notes.txt"),
    ("truncated", "/inspect", {"image": "{truncated}"}, "Cannot read truncated.png"),
    ("over-the-pixel-limit", "/inspect", {"image": "{huge}"}, "20000x20000 pixels, more than"),
    ("1kb-png-of-256-mpx", "/inspect", {"image": "{wide}"}, "16000x16000 pixels, more than the 64"),
    ("hub-repo-offline", "/inspect", {"custom_checkpoint": "nobody/nothing"}, "Could not download"),
    ("root-folder", "/inspect", {"custom_checkpoint": "/"}, UNKNOWN),
    ("missing-folder", "/inspect", {"custom_checkpoint": "/no/such/folder"}, UNKNOWN),
    ("folder-with-config", "/inspect", {"custom_checkpoint": "{folder}"}, UNKNOWN),
    ("real-checkpoint-folder", "/inspect", {"custom_checkpoint": "{ckpt}/../{ckpt_name}"}, UNKNOWN),
    ("home", "/inspect", {"custom_checkpoint": "~"}, UNKNOWN),
    ("relative-path", "/inspect", {"custom_checkpoint": "../weights/bottle"}, UNKNOWN),
    ("three-parts", "/inspect", {"custom_checkpoint": "a/b/c"}, UNKNOWN),
    ("dotdot-repo-id", "/inspect", {"custom_checkpoint": "../.."}, UNKNOWN),
    ("api-checkpoint-path", "/inspect", {"checkpoint": "/"}, UNKNOWN),
    ("api-checkpoint-folder", "/inspect", {"checkpoint": "{folder}"}, UNKNOWN),
    ("no-fitted-model", "/inspect", {"checkpoint": checkpoints.FITTED}, "No model fitted in this session"),
    ("threshold-text", "/inspect", {"threshold": "abc"}, "Threshold must be a number"),
    ("threshold-huge", "/inspect", {"threshold": 1e9}, "Threshold must be between"),
    ("batch-unreadable", "/batch", {"files": ["{truncated}"]}, "None of the uploaded files"),
    ("batch-no-images", "/batch", {"files": ["{text}"]}, "No images found"),
    ("batch-worst-n-text", "/batch", {"files": ["{good}"], "worst_n": "many"},
     "worst_n must be a number"),
    ("batch-path-checkpoint", "/batch", {"files": ["{good}"], "custom_checkpoint": "/"}, UNKNOWN),
    ("fit-too-few", "/fit", {"files": ["{good}"] * 3, "epochs": 1}, "upload 10 to 200 good"),
    ("fit-epochs-text", "/fit", {"files": ["{good}"] * 10, "epochs": "x"},
     "Epochs must be a number"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("endpoint", "arguments", "message"), [c[1:] for c in APP_CASES], ids=[c[0] for c in APP_CASES]
)
def test_bad_input_table(
    served, endpoint, arguments, message, test_images, trained_checkpoint, tmp_path,
    tmp_path_factory,
):  # fmt: skip
    good = test_images["good"][0]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "notes.txt").write_text("not an image")
    folder = tmp_path / "server-folder"
    folder.mkdir()
    (folder / "config.json").write_text('{"secret": "server file"}')
    files = {
        "good": good,
        "text": tmp_path / "notes.txt",
        "truncated": truncated,
        "huge": header_only_png(tmp_path / "huge.png", 20_000, 20_000),
        "wide": header_only_png(tmp_path / "wide.png", 16_000, 16_000),
    }
    strings = {"folder": str(folder), "ckpt": str(trained_checkpoint),
               "ckpt_name": trained_checkpoint.name}  # fmt: skip

    def value(v):
        if isinstance(v, list):
            return [value(x) for x in v]
        if isinstance(v, str) and v.startswith("{") and v[1:-1] in files:
            return handle_file(files[v[1:-1]])
        return v.format(**strings) if isinstance(v, str) else v

    arguments = {k: value(v) for k, v in arguments.items()}
    if endpoint == "/inspect":
        arguments.setdefault("image", handle_file(good))
    api = client(served, tmp_path_factory)
    with pytest.raises(AppError, match=message) as error:
        api.predict(**arguments, api_name=endpoint)
    shown = str(error.value)
    assert "Traceback" not in shown and "server file" not in shown
    assert str(tmp_path) not in shown and "/tmp" not in shown and str(ROOT) not in shown
    assert isinstance(api.predict(handle_file(good), api_name="/inspect")[0], float)  # serving


def test_no_existence_oracle_for_server_paths(served, test_images, tmp_path, tmp_path_factory):
    """ "/" answered "config.json is missing", a missing path "not found": now one message."""
    (tmp_path / "config.json").write_text("{}")
    api = client(served, tmp_path_factory)
    messages = set()
    for spec in ("/", "/no/such/path", str(tmp_path), "~", "~root", "/etc/passwd", "."):
        with pytest.raises(AppError) as error:
            api.predict(handle_file(test_images["good"][0]), custom_checkpoint=spec,
                        api_name="/inspect")  # fmt: skip
        messages.add(str(error.value))
    assert len(messages) == 1 and "Unknown checkpoint" in messages.pop()


def test_local_folders_only_when_the_environment_variable_allows(
    served, model, trained_checkpoint, test_images, tmp_path, tmp_path_factory, monkeypatch
):
    api = client(served, tmp_path_factory)
    image = test_images["good"][0]
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.safetensors", "config.json"):
        (copy / name).write_bytes((trained_checkpoint / name).read_bytes())
    with pytest.raises(AppError, match="Unknown checkpoint"):
        api.predict(handle_file(image), custom_checkpoint=str(copy), api_name="/inspect")
    monkeypatch.setenv(checkpoints.LOCAL_CHECKPOINTS_ENV, "1")
    score = api.predict(handle_file(image), custom_checkpoint=str(copy), api_name="/inspect")[0]
    assert score == pytest.approx(model.predict(image).score, abs=1e-5)
    # A bad config.json there is one clear message (was "Unexpected error (TypeError ...)").
    bad = bad_config_folder(trained_checkpoint, tmp_path / "bad", image_size="abc")
    with pytest.raises(AppError, match="image_size must be of type int") as error:
        api.predict(handle_file(image), custom_checkpoint=str(bad), api_name="/inspect")
    assert str(tmp_path) not in str(error.value) and "Unexpected" not in str(error.value)


def test_hub_repo_ids_are_checked_strictly():
    good = ["owner/name", "a-b/c.d_e", "ULSAD/bottle-lite"]
    bad = ["", "owner", "a/b/c", "/owner/name", "../x", "a/..", "a/b.", "-a/b", "a/.b", "a--b/c",
           "a/b.git", "~/x", "a b/c", "a/b\n", "x" * 97 + "/y"]  # fmt: skip
    assert all(ulsad.hub.is_hub_repo_id(s) for s in good)
    assert not any(ulsad.hub.is_hub_repo_id(s) for s in bad)
    for spec in [s for s in bad[1:] if s.strip() == s]:  # the app strips what users type
        with pytest.raises(ULSADError, match="Unknown checkpoint"):
            checkpoints.checkpoint_source(spec, offered=[])


def test_messages_show_no_server_paths():
    message = "Cannot read /srv/app/uploads/x.png: see https://huggingface.co/a/b and owner/name."
    assert inputs.scrub_paths(message) == (
        "Cannot read x.png: see https://huggingface.co/a/b and owner/name."
    )


def test_unpacked_bytes_have_one_budget_per_request(tmp_path):
    """Three small zips each under the old per-zip cap wrote 5.7 GB: the budget is shared."""
    member = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    png = tmp_path / "a.png"
    Image.fromarray(member).save(png)
    size = png.stat().st_size
    zips = []
    for i in range(3):
        zips.append(tmp_path / f"z{i}.zip")
        with zipfile.ZipFile(zips[-1], "w") as zipped:
            for j in range(4):
                zipped.write(png, f"{j}.png")
    budget = 10 * size  # each zip (4 images) fits, the three (12) do not
    images, _ = inputs.collect_images(zips[:2], tmp_path / "ok", 100, budget=budget)
    assert len(images) == 8
    with pytest.raises(ULSADError, match="unpack to more than"):
        inputs.collect_images(zips, tmp_path / "w", 100, budget=budget)
    written = sum(p.stat().st_size for p in (tmp_path / "w").iterdir())
    assert written <= budget


def test_zip_members_left_out_are_named(tmp_path):
    png = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(png)
    archive = tmp_path / "up.zip"
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zipped:
        zipped.write(png, "b.png")
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(png, "ok.png")
        zipped.write(png, "../up.png")
        zipped.writestr(zipfile.ZipInfo("/abs.png"), png.read_bytes())  # write() strips the /
        zipped.write(inner, "nested/inner.zip")
        zipped.writestr("doc.pdf", b"%PDF")
        zipped.writestr("__MACOSX/._ok.png", b"")
    images, skipped = inputs.collect_images([archive], tmp_path / "w", 10)
    assert [name for _, name in images] == ["up.zip/ok.png"]
    assert skipped == [
        "up.zip/../up.png: outside the archive, not unpacked",
        "up.zip//abs.png: outside the archive, not unpacked",
        "up.zip/nested/inner.zip: a zip inside a zip, not unpacked",
        "up.zip/doc.pdf: not an image",
    ]


def test_uploads_decode_within_bounded_memory(tmp_path):
    """A 1.5 MB PNG of 16000x16000 peaked at 3.9 GB: refused before decoding now; big JPEGs
    are decoded reduced."""
    png = header_only_png(tmp_path / "wide.png", 16_000, 16_000)
    with pytest.raises(ULSADError, match="more than the 64,000,000"):
        inputs.load_upload(png, "wide.png")
    jpeg = tmp_path / "big.jpg"
    Image.new("RGB", (12_000, 6_000), (90, 120, 150)).save(jpeg, quality=50)  # 72 Mpx
    image, notice = inputs.load_upload(jpeg, "big.jpg")
    assert image.size == (inputs.MAX_SIDE, inputs.MAX_SIDE // 2)
    assert notice == "big.jpg is 12000x6000 pixels: downscaled to 4096x2048 for inspection."


def test_gradio_cache_and_idle_sessions_are_purged(served, app_module, tmp_path):
    assert served.delete_cache == app_module.DELETE_CACHE and served.delete_cache is not None
    old, new = sessions.Session(), sessions.Session()
    stale = old.workdir
    (stale / "fitted-1").mkdir()
    fresh = new.workdir
    past = time.time() - sessions.SESSION_TTL_S - 60
    import os

    os.utime(stale, (past, past))
    removed = sessions.sweep_sessions(force=True)
    assert stale in removed and not stale.exists() and fresh.is_dir()
    assert old.workdir.is_dir() and old.workdir != stale  # a returning session gets a new one
    old.cleanup()
    new.cleanup()


def test_csv_cells_cannot_run_as_formulas(tmp_path):
    rows = [{"image": name, "score": 0.5, "anomalous": False}
            for name in ("=HYPERLINK(\"x\").png", "+1.png", "-2.png", "@a.png", "ok.png")]  # fmt: skip
    path = scoring.write_csv(rows, tmp_path / "s.csv", 0.4)
    cells = [line.split(",")[0] for line in path.read_text().splitlines()[1:]]
    assert [c.strip('"') for c in cells] == [
        "'=HYPERLINK(\"\"x\"\").png", "'+1.png", "'-2.png", "'@a.png", "ok.png",
    ]  # fmt: skip


def test_both_thresholds_of_a_checkpoint_are_offered(trained_checkpoint):
    """The held-out maximum (default) and the best F1 on synthetic defects, from the checkpoint."""
    model = ULSAD.from_pretrained(trained_checkpoint)
    assert checkpoints.model_threshold(model) == pytest.approx(float(model.threshold))
    f1 = checkpoints.model_threshold(model, "f1")
    assert f1 is not None and f1 == pytest.approx(float(model.threshold_f1))
    assert f1 != checkpoints.model_threshold(model)
    with pytest.raises(ULSADError, match="Threshold kind"):
        checkpoints.model_threshold(model, "median")
    model.threshold_f1.fill_(float("nan"))  # a checkpoint without synthetic validation
    assert checkpoints.model_threshold(model, "f1") is None


def test_heatmap_and_overlay_show_the_same_colours():
    """The plotly heatmap's colour scale is the overlay's colour map: same colour at each value."""
    from plotly.colors import sample_colorscale, unlabel_rgb

    from ulsad.app.figures import heatmap_figure
    from ulsad.visualize import colorize, display_range

    threshold = 0.5  # the display range is 0 to 2 * threshold
    values = (np.array([0, 30, 64, 100, 128, 170, 191, 230, 255], np.float32) + 0.5) / 256
    anomaly_map = np.tile(values, (4, 1))
    heatmap = heatmap_figure(anomaly_map, threshold).data[0]
    assert (heatmap.zmin, heatmap.zmax) == display_range(anomaly_map, threshold) == (0.0, 1.0)
    scale = [[float(position), color] for position, color in heatmap.colorscale]
    plotly_rgb = np.array([unlabel_rgb(c) for c in sample_colorscale(scale, values.tolist())])
    overlay_rgb = colorize(anomaly_map, 0.0, 1.0)[0].astype(float)
    assert np.abs(plotly_rgb - overlay_rgb).max() <= 2  # of 255: the overlay's 256-entry table
