"""Hardening, second round (issue 35): each test reproduces one defect a hostile probe found.

They use the embedded `bottle` checkpoint (no training) and stand-in models where the defect is
in the plumbing, so the file runs in about a minute on two cores."""

from __future__ import annotations

import errno
import json
import shutil
import tempfile
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import header_only_png
from PIL import Image
from safetensors.torch import load_file, save_file

from ulsad import ULSAD, ULSADError
from ulsad.cli import main
from ulsad.hub import WEIGHTS_DIR
from ulsad.images import load_image, tile_boxes
from ulsad.inference import predict_batches
from ulsad.model import AnomalyMaps

BOTTLE = WEIGHTS_DIR / "bottle"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


def checkpoint_copy(folder: Path, **config_changes) -> Path:
    """The bottle checkpoint copied to `folder`, its config.json changed."""
    shutil.copytree(BOTTLE, folder, ignore=shutil.ignore_patterns("examples"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    return folder


def peak_rss_mb() -> float:
    return int(_status("VmHWM")) / 1024


def _status(field: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split()[1]
    raise KeyError(field)


def reset_peak_rss() -> float:
    """Reset the process's peak RSS (Linux: clear_refs 5) and return the RSS now, in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    return int(_status("VmRSS")) / 1024


# ------------------------------------------------------------------ 1. long, thin images
def counting_forward(calls: list[int]):
    def forward(images: torch.Tensor) -> AnomalyMaps:
        calls.append(len(images))
        level = images.mean(dim=(1, 2, 3))
        maps = level[:, None, None].expand(-1, images.shape[-2], images.shape[-1])
        return AnomalyMaps(level, maps, maps, maps)

    return forward


@pytest.mark.parametrize("size", [(1, 1024), (4096, 1), (3, 7000), (100, 900)])
def test_thin_images_give_a_bounded_number_of_tiles_that_cover_them(size):
    """1 x 1024 was cut into 1,024 tiles (71 s, +5.2 GB in the app): now at most MAX_TILES."""
    from ulsad.images import MAX_TILES

    width, height = size
    boxes = tile_boxes(width, height)
    assert 2 <= len(boxes) <= MAX_TILES
    covered = np.zeros((height, width), bool)
    for left, top, right, bottom in boxes:
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        covered[top:bottom, left:right] = True
    assert covered.all()
    calls: list[int] = []
    image = np.full((height, width, 3), 128, np.uint8)
    prediction = predict_batches(
        counting_forward(calls), image, image_size=64, threshold=None, tile=True
    )
    assert sum(calls) <= MAX_TILES
    assert prediction.anomaly_map.shape == (height, width)


@pytest.mark.parametrize("size", [(1, 1024), (1, 4096)])
def test_thin_png_is_scored_fast_in_bounded_memory(size, tmp_path):
    """The issue's target: a 1 x 1024 and a 1 x 4096 PNG under +0.5 GB and 5 s (bottle)."""
    path = tmp_path / "thin.png"
    Image.new("RGB", size, (120, 80, 40)).save(path)
    model = ULSAD.from_pretrained("bottle")
    model.predict(np.zeros((64, 64, 3), np.uint8))  # warm
    before = reset_peak_rss()
    started = time.perf_counter()
    prediction = model.predict(path)
    elapsed = time.perf_counter() - started
    assert prediction.anomaly_map.shape == size[::-1]
    assert np.isfinite(prediction.score)
    assert peak_rss_mb() - before < 500
    assert elapsed < 5


# ------------------------------------------------------------------ 2. configs vs weights
def test_a_config_that_does_not_fit_its_weights_is_refused_before_building(tmp_path):
    """featae_width=6000 with 9 MB of weights: +3.3 GB and 10.7 s before the refusal."""
    folder = checkpoint_copy(tmp_path / "big", featae_width=6000)
    ULSAD.from_pretrained(BOTTLE)  # imports and caches warm
    before = reset_peak_rss()
    started = time.perf_counter()
    with pytest.raises(ULSADError, match=r"does not match its config\.json"):
        ULSAD.from_pretrained(folder)
    assert time.perf_counter() - started < 1.0
    assert peak_rss_mb() - before < 100


def test_a_weights_dtype_the_config_does_not_give_is_refused(tmp_path):
    folder = checkpoint_copy(tmp_path / "dtype")
    tensors = load_file(folder / "model.safetensors")
    tensors["feature_mean"] = tensors["feature_mean"].to(torch.int64)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "ulsad-1"})
    with pytest.raises(ULSADError, match="wrong shape or dtype"):
        ULSAD.from_pretrained(folder)


def test_the_public_app_bounds_what_a_hub_config_builds():
    from ulsad.app.checkpoints import PUBLIC_MAX, check_public_config

    config = ULSAD.from_pretrained("bottle").config
    check_public_config(config, "a/b")  # the embedded model is within the bounds
    for field, value in [("image_size", 2560), ("featae_width", 6000), ("channels", 4096)]:
        assert value > PUBLIC_MAX[field]
        with pytest.raises(ULSADError, match=f"{field} {value} is more than this app runs"):
            check_public_config(config.replace(**{field: value}), "a/b")
    with pytest.raises(ULSADError, match="backbone 'resnet18' is not one this app runs"):
        check_public_config(config.replace(backbone="resnet18"), "a/b")


def test_concurrent_loads_of_one_checkpoint_are_merged(monkeypatch):
    from ulsad.app import checkpoints

    calls = []

    def slow_load(spec, device=None, local=True):
        calls.append(spec)
        time.sleep(0.3)
        return object()

    monkeypatch.setattr(checkpoints.ULSAD, "from_pretrained", slow_load)
    cache = checkpoints.ModelCache(maxsize=2, device="cpu")
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("bottle", local=False)))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["bottle"] and cache.loads == 1
    assert len(results) == 6 and all(r is results[0] for r in results)


def test_every_app_event_has_a_concurrency_limit():
    """on_checkpoint (private, yet callable through /queue/join) had none."""
    from ulsad.app.ui import build_demo

    demo = build_demo(choices=[], default=None)
    functions = list(demo.fns.values())
    assert functions
    for function in functions:
        assert isinstance(function.concurrency_limit, int), (function.name, function.concurrency_limit)  # fmt: skip
    assert demo._queue.max_size == 64


# ------------------------------------------------------------------ 3. map names
def test_names_with_several_dots_get_maps_of_their_own(tmp_path, capsys):
    """frame.0001.png .. frame.0003.png all wrote maps/frame.npy; ..png wrote OUT/maps.npy."""
    source = Image.open(next((BOTTLE / "examples").glob("*.png"))).resize((64, 64))
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["frame.0001.png", "frame.0002.png", "frame.0003.png", "..png"]
    for name in names:
        source.save(folder / name, format="PNG")
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--checkpoint", "bottle", "--out", out, "--save-maps",
                       *[folder / name for name in names])  # fmt: skip
    assert code == 0, err
    rows = (out / "scores.csv").read_text().splitlines()[1:]
    maps = [row.rsplit(",", 1)[1] for row in rows]
    assert len(set(maps)) == 4
    for rel in maps:
        assert (out / rel).is_file() and (out / rel).with_suffix(".png").is_file()
        assert (out / rel).resolve().parent == (out / "maps").resolve()
    assert sorted(p.name for p in out.iterdir()) == ["maps", "scores.csv"]
    assert "frame.0002.npy" in {Path(m).name for m in maps}


# ------------------------------------------------------------------ 4. NaN
def test_a_checkpoint_with_a_nan_weight_is_refused_and_predict_fails(tmp_path, capsys):
    """A NaN weight scored a defective image `GOOD: score nan <= threshold`, exit code 0."""
    folder = checkpoint_copy(tmp_path / "nan")
    tensors = load_file(folder / "model.safetensors")
    name = next(k for k in tensors if k.startswith("featae.") and tensors[k].ndim > 1)
    tensors[name][0] = float("nan")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "ulsad-1"})
    with pytest.raises(ULSADError, match="non-finite values"):
        ULSAD.from_pretrained(folder)
    image = next((BOTTLE / "examples").glob("*.png"))
    code, _, err = run(capsys, "predict", "--checkpoint", folder, "--out", tmp_path / "o", image)
    assert code != 0
    assert "non-finite" in one_error_line(err)
    assert not (tmp_path / "o" / "scores.csv").exists()


def test_a_non_finite_score_is_an_error_never_a_verdict():
    def nan_forward(images: torch.Tensor) -> AnomalyMaps:
        maps = torch.zeros(len(images), *images.shape[-2:])
        return AnomalyMaps(torch.full((len(images),), float("nan")), maps, maps, maps)

    with pytest.raises(ULSADError, match="not a number"):
        predict_batches(nan_forward, np.zeros((32, 32, 3), np.uint8), image_size=32,
                        threshold=1.0)  # fmt: skip


# ------------------------------------------------------------------ 5. disk
def test_inspect_panels_are_written_at_display_size():
    """A 4096 x 4096 upload gave three full-size PNG panels (111 MB per request)."""
    from ulsad.app.scoring import PANEL_SIDE, inspect_image

    model = ULSAD.from_pretrained("bottle")
    image = Image.new("RGB", (3000, 1500), (90, 100, 110))
    shown = inspect_image(model, image, threshold=0.5)
    for panel in (shown.overlay, shown.local_map, shown.global_map):
        assert panel.size == (PANEL_SIDE, PANEL_SIDE // 2)
    assert np.isfinite(shown.score)


def test_the_disk_budget_deletes_the_oldest_files_and_then_refuses(tmp_path):
    from ulsad.app.disk import enforce_budget

    old, young = tmp_path / "old", tmp_path / "young"
    for folder in (old, young):
        folder.mkdir()
    past = time.time() - 3600
    for i in range(5):
        path = old / f"{i}.png"
        path.write_bytes(b"x" * 1000)
        import os

        os.utime(path, (past + i, past + i))
    (young / "new.png").write_bytes(b"y" * 1000)
    assert enforce_budget([old, young], budget=3000, min_age_s=60) <= 3000
    assert sorted(p.name for p in old.iterdir()) == ["3.png", "4.png"]  # the oldest went first
    with pytest.raises(ULSADError, match="disk budget"):
        enforce_budget([young, old], budget=500, min_age_s=60)  # young files stay: refused
    assert (young / "new.png").is_file()


# ------------------------------------------------------------------ 6. file-system errors
@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """A folder where creating files fails with EROFS (tests run as root: chmod does not stop
    root), through tempfile.mkstemp, which every ulsad write and the up-front check use."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return folder


def test_a_read_only_out_is_refused_before_the_work(read_only, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the work started")

    monkeypatch.setattr(ULSAD, "fit", no_work)
    monkeypatch.setattr("ulsad.evaluate.evaluate", no_work)
    code, _, err = run(capsys, "train", "--data", tmp_path, "--out", read_only / "ckpt")
    assert code == 2 and "is not writable" in one_error_line(err)
    code, _, err = run(capsys, "eval", "--checkpoint", "bottle", "--data", tmp_path,
                       "--category", "bottle", "--out", read_only / "e.json")  # fmt: skip
    assert code == 2 and "is not writable" in one_error_line(err)
    image = next((BOTTLE / "examples").glob("*.png"))
    code, _, err = run(capsys, "predict", "--checkpoint", "bottle", "--out", read_only, image)
    assert code == 2 and "is not writable" in one_error_line(err)


def test_a_full_disk_gives_one_line_that_says_what_was_kept(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    images = sorted((BOTTLE / "examples").glob("*.png"))[:2]
    monkeypatch.setattr(np, "save", full)
    code, _, err = run(capsys, "predict", "--checkpoint", "bottle", "--out", tmp_path / "p",
                       "--save-maps", *images)  # fmt: skip
    line = one_error_line(err)
    assert code == 2 and "No space left on device" in line and "scores.csv is unchanged" in line
    monkeypatch.setattr(ULSAD, "fit", full)  # the images are found before the fit starts
    code, _, err = run(capsys, "train", "--data", BOTTLE / "examples", "--out", tmp_path / "t")
    line = one_error_line(err)
    assert code == 2 and "No space left on device" in line and "run the same command" in line


# ------------------------------------------------------------------ 7. 16-bit uploads
def test_16_bit_images_are_converted_without_float64_copies(tmp_path):
    """An 8000^2 16-bit PNG took +1.6 GB (several float64 copies): now 1 byte per pixel and a
    strip."""
    values = np.arange(2000 * 2000, dtype=np.uint32).reshape(2000, 2000) % 65536
    path = tmp_path / "deep.png"
    Image.fromarray(values.astype(np.uint16)).save(path)
    tracemalloc.start()
    try:
        image = load_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    pixels = 2000 * 2000
    assert peak < 4 * pixels  # the old conversion held 16+ bytes per pixel (float64 copies)
    expected = np.clip(values / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(image)[..., 0], expected)


# ------------------------------------------------------------------ 8. layers
def test_layers_the_backbone_does_not_have_give_one_line(tmp_path, capsys):
    folder = checkpoint_copy(tmp_path / "layers", layers=[2, 99])
    with pytest.raises(ULSADError, match=r"layers \[2, 99\] names feature maps"):
        ULSAD.from_pretrained(folder)
    image = next((BOTTLE / "examples").glob("*.png"))
    code, _, err = run(capsys, "predict", "--checkpoint", folder, "--out", tmp_path / "o", image)
    assert code == 2 and "layers [2, 99]" in one_error_line(err)


# ------------------------------------------------------------------ 9. train_state.pt
@pytest.mark.parametrize("kind", ["garbage", "foreign", "truncated"])
def test_a_corrupt_or_foreign_resume_state_gives_one_line(kind, tmp_path):
    from ulsad.train import load_state

    path = tmp_path / "train_state.pt"
    if kind == "garbage":
        path.write_bytes(b"\x00not a torch file" * 10)
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        torch.save({"key": "k", "model": {"a": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ULSADError, match="resume=False") as error:
        load_state(path, "k", None, None, None, torch.device("cpu"))
    assert "is not a resume state" in str(error.value)


# ------------------------------------------------------------------ 10. predict's temporaries
def test_predict_removes_the_temporaries_of_killed_runs(tmp_path, capsys):
    image = next((BOTTLE / "examples").glob("*.png"))
    out = tmp_path / "out"
    stale = [
        out / "maps" / f".{image.stem}.npy.abc123.tmp",
        out / "maps" / f".{image.stem}.png.def456.tmp",
        out / ".scores.csv.x1.tmp",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 4096)
    other = out / "maps" / ".someone-else.tmp"
    other.write_bytes(b"kept")
    code, _, err = run(capsys, "predict", "--checkpoint", "bottle", "--out", out, "--save-maps",
                       image)  # fmt: skip
    assert code == 0, err
    assert not any(path.exists() for path in stale)
    assert other.exists()


# ------------------------------------------------------------------ 11. zips
def test_zip_members_say_why_they_are_skipped(tmp_path):
    from ulsad.app import inputs

    encrypted = zipfile.ZipInfo("a.png")
    encrypted.flag_bits |= 0x1
    assert "encrypted" in inputs.member_problem(encrypted)
    deflate64 = zipfile.ZipInfo("b.png")
    deflate64.compress_type = 9
    assert "Deflate64" in inputs.member_problem(deflate64)
    png = tmp_path / "c.png"
    Image.new("RGB", (8, 8)).save(png)
    archive = tmp_path / "up.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("dir/./c.png", png.read_bytes())
    images, skipped = inputs.collect_images([archive], tmp_path / "w", 10)
    assert [name for _, name in images] == ["up.zip/dir/./c.png"] and skipped == []


def test_a_batch_with_every_member_skipped_says_why(tmp_path):
    import gradio as gr

    from ulsad.app import handlers
    from ulsad.app.sessions import Session

    archive = tmp_path / "docs.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("report.pdf", b"%PDF")
    session = Session(choices=[("bottle", "bottle")])
    try:
        with pytest.raises(gr.Error) as error:
            handlers.batch([str(archive)], "bottle", None, "", 0, session)
    finally:
        session.cleanup()
    assert "No images found" in str(error.value) and "report.pdf: not an image" in str(error.value)


# ------------------------------------------------------------------ 12. pixel-limit messages
def test_the_app_states_one_pixel_limit(tmp_path):
    """A 300 MP PNG said "more than the 256,000,000", a 100 MP one "more than the 64,000,000"."""
    from ulsad.app import inputs

    messages = []
    for width, height in [(20_000, 15_000), (10_000, 10_000)]:
        path = header_only_png(tmp_path / f"{width}.png", width, height)
        with pytest.raises(ULSADError) as error:
            inputs.load_upload(path, f"{width}.png")
        messages.append(str(error.value).split("pixels, ", 1)[1])
    assert messages[0] == messages[1]
    assert "more than the 64,000,000" in messages[0]


def test_a_hub_config_beyond_the_apps_bounds_is_refused_before_its_weights_download(hub):
    """image_size=2560 was accepted (8.6 s per request): refused from config.json alone."""
    from ulsad.app import checkpoints

    config = json.loads((BOTTLE / "config.json").read_text())
    files = {
        "config.json": json.dumps({**config, "image_size": 2560}).encode(),
        "model.safetensors": (BOTTLE / "model.safetensors").read_bytes(),
    }
    hub.commit("acme/huge", files)
    cache = checkpoints.ModelCache(maxsize=1, device="cpu")
    with pytest.raises(ULSADError, match="image_size 2560 is more than this app runs"):
        cache.get("acme/huge", local=False)
    fetched = [path for method, path in hub.requests
               if method == "GET" and path.startswith("/acme/huge/resolve/")]  # fmt: skip
    assert fetched and not any(path.endswith("model.safetensors") for path in fetched)  # no HEAD
