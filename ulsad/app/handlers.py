"""The app's event handlers, one per button or API endpoint. Each shows any failure as one
readable line (`friendly`), never a trace, and the app keeps serving."""

from __future__ import annotations

import functools
import html
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import gradio as gr
from PIL import Image

from ulsad import ULSAD
from ulsad.app import inputs
from ulsad.app.checkpoints import FITTED, ModelCache, describe, model_threshold
from ulsad.app.disk import enforce_budget
from ulsad.app.figures import histogram_figure
from ulsad.app.fitting import FIT_MAX_IMAGES, FitStopped, fit_lite, zip_folder
from ulsad.app.scoring import inspect_image, score_batch, write_csv
from ulsad.app.sessions import Session, session_root
from ulsad.errors import ULSADError
from ulsad.hub import push_folder

log = logging.getLogger(__name__)
CACHE = ModelCache(maxsize=4)
FITTED_CHOICE = ("Your fitted model (this session)", FITTED)
PROGRESS = gr.Progress()  # gradio finds progress bars by this default value
EXIF_IMAGE_UNIQUE_ID = 0xA420


def escape(text: str) -> str:
    """Messages are shown as HTML: file names must not inject markup."""
    return html.escape(text, quote=False)


def shown(message: str) -> str:
    """A message as the app shows it: no server paths, no markup."""
    return escape(inputs.scrub_paths(message))


def skipped(problems: list[str]) -> str:
    """The warning for files left out: how many, and the first five."""
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"Skipped {len(problems)} file(s): {'; '.join(problems[:5])}{more}"


def friendly(fn: Callable) -> Callable:
    """Show every failure as a readable message (never a trace); the app keeps serving."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ULSADError as error:
            raise gr.Error(shown(str(error)), print_exception=False) from None
        except (MemoryError, RuntimeError) as error:
            if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
                raise gr.Error("Out of memory: try a smaller image or fewer images.") from None
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(shown(f"Unexpected error: {error}")) from None
        except Exception as error:
            log.exception("unexpected error in %s", fn.__name__)
            message = f"Unexpected error ({type(error).__name__}: {error})."
            raise gr.Error(shown(message)) from None

    return wrapper


def slider_update(threshold: float | None) -> dict:
    """The threshold slider set to `threshold`, its range three times as wide."""
    top = max(0.5, round(3 * threshold, 3)) if threshold else 1.0
    return gr.update(value=threshold, maximum=top)


def chosen_threshold(model: ULSAD, threshold: Any) -> float | None:
    """The request's threshold, or the checkpoint's own when it gives None."""
    if threshold is None:
        return model_threshold(model)
    return inputs.number(threshold, "Threshold", -1e6, 1e6)


def check_disk() -> None:
    """Before a request writes: old uploads and outputs are deleted while gradio's cache and the
    session folders hold more than the disk budget; refused if still over (`ulsad.app.disk`)."""
    from gradio.utils import get_upload_folder

    enforce_budget([get_upload_folder(), session_root()])


def own_file(image: Image.Image) -> Image.Image:
    """`image` with a random token in its metadata, so that gradio caches it in a file of its own.

    gradio names an output image's cache file by the hash of its bytes and rewrites that file on
    every response. Two requests with identical outputs (one example image inspected by two clients
    at once) shared the file, and one rewrote it while the other downloaded it: the download broke
    (4 of 196 requests, 3 clients on one image, `benchmarks/load.py`'s setup). The token goes into
    a PNG text chunk (Inspect's panels) and the EXIF ImageUniqueID tag (the Batch gallery's WebP
    thumbnails). It is random and says nothing about the server."""
    token = secrets.token_hex(8)
    exif = Image.Exif()
    exif[EXIF_IMAGE_UNIQUE_ID] = token
    image.info.update(response=token, exif=exif.tobytes())
    return image


@friendly
def inspect(image, checkpoint, threshold, custom_checkpoint, session: Session):
    """One image -> score, overlay, local map, global map, verdict, interactive heatmap."""
    check_disk()
    model = session.model(checkpoint, custom_checkpoint, CACHE)
    loaded, notice = inputs.load_upload(*inputs.upload_path(image))
    if notice:
        gr.Info(escape(notice))
    result = inspect_image(model, loaded, chosen_threshold(model, threshold))
    text = result.verdict + (f" ({notice})" if notice else "")
    panels = [own_file(p) for p in (result.overlay, result.local_map, result.global_map)]
    return result.score, *panels, text, result.figure


def inspect_again(image, checkpoint, threshold, custom_checkpoint, session: Session):
    """The threshold moved: redo the inspection, if there is an image yet."""
    if image is None:
        return (gr.skip(),) * 6
    return inspect(image, checkpoint, threshold, custom_checkpoint, session)


@friendly
def batch(files, checkpoint, threshold, custom_checkpoint, worst_n, session, progress=PROGRESS):
    """Many images (or zips) -> table sorted by score, histogram, worst overlays, CSV."""
    check_disk()
    model = session.model(checkpoint, custom_checkpoint, CACHE)
    threshold = chosen_threshold(model, threshold)
    with tempfile.TemporaryDirectory(dir=session.workdir) as unpacked:
        images, left_out = inputs.collect_images(files, unpacked, inputs.MAX_BATCH_IMAGES)
        if not images:
            why = f" ({skipped(left_out)})" if left_out else ""
            raise ULSADError(
                f"No images found{why}: upload PNG, JPEG, BMP or TIFF files, or a zip of them."
            )
        progress(0, desc="Scoring")
        result = score_batch(
            model,
            images,
            threshold,
            inputs.number(worst_n or 0, "worst_n", 0, 24, integer=True),
            progress=lambda done, total: progress((done, total), desc="Scoring", unit="images"),
        )
    if left_out + result.failed:
        gr.Warning(escape(skipped(left_out + result.failed)))
    if result.notices:
        gr.Info(f"{len(result.notices)} large image(s) were downscaled to {inputs.MAX_SIDE} px.")
    if not result.rows:
        raise ULSADError("None of the uploaded files could be read as an image.")
    headers = ["image", "score", "anomalous"]
    table = {"headers": headers, "data": [[row[key] for key in headers] for row in result.rows]}
    csv_path = write_csv(result.rows, session.workdir / f"scores-{time.time_ns()}.csv", threshold)
    histogram = histogram_figure([row["score"] for row in result.rows], threshold)
    worst = [(own_file(image), caption) for image, caption in result.worst]
    return table, histogram, worst, str(csv_path)


@friendly
def fit(files, epochs, augment, session: Session, progress=PROGRESS):
    """Train a lite model on the uploaded good images; select it and offer it for download."""
    check_disk()
    session.stop = False
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = session.workdir / f"fitted-{stamp}"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=session.workdir) as unpacked:
        images, left_out = inputs.collect_images(files, unpacked, FIT_MAX_IMAGES)
        if left_out:
            gr.Warning(shown(skipped(left_out)))
        progress(0, desc=f"Reading {len(images)} images, computing backbone features")

        def on_epoch(epoch: int, total: int, train_loss: float, val_loss: float) -> None:
            session.touch()  # a long fit keeps its session folder alive
            desc = f"Epoch {epoch}/{total}: loss {train_loss:.3f}, held-out loss {val_loss:.3f}"
            progress((epoch, total), desc=desc, unit="epochs")

        try:
            model = fit_lite(
                images,
                out_dir,
                epochs,  # checked by fit_lite, before anything else
                callback=on_epoch,
                should_stop=lambda: session.stop,
                augment=bool(augment),
            )
        except FitStopped:
            shutil.rmtree(out_dir, ignore_errors=True)
            return "Training stopped; nothing was saved.", None, gr.skip(), gr.skip(), gr.skip()
    archive = zip_folder(out_dir, session.workdir / f"ulsad-lite-{stamp}.zip")
    if session.fitted is not None:
        shutil.rmtree(session.fitted, ignore_errors=True)
    session.fitted = out_dir
    CACHE.put(str(out_dir), model)
    threshold = model_threshold(model)
    status = (
        f"Trained on {len(images)} images in {time.perf_counter() - started:.0f} s; default "
        f"threshold {threshold:.4f}. It is now the selected checkpoint: inspect away, or "
        "download it below."
    )
    choices = gr.update(choices=[*session.choices, FITTED_CHOICE], value=FITTED)
    return status, str(archive), choices, slider_update(threshold), ""


@friendly
def push(repo_id, token, private, session: Session):
    """Upload the fitted model to the Hugging Face Hub with the user's token."""
    if session.fitted is None:
        raise ULSADError("Fit a model first (above), then push it.")
    repo_id = (repo_id or "").strip()
    if repo_id.count("/") != 1:
        raise ULSADError("Give the Hub repo as 'your-name/repo-name'.")
    # The fitted folder as it is (weights, config, training.json) with a model card;
    # push_folder turns every Hub failure into one readable ULSADError line.
    url = push_folder(session.fitted, repo_id, token=token or None, private=bool(private))
    return f"Pushed to {url}"


@friendly
def request_stop(session: Session) -> None:
    """Stop button: this session's running fit stops after its current epoch."""
    session.stop = True


@friendly
def on_checkpoint(checkpoint, custom_checkpoint, session: Session, kind="heldout"):
    """A new checkpoint (or threshold kind): set the slider to that threshold and describe it."""
    model = session.model(checkpoint, custom_checkpoint, CACHE)
    threshold = model_threshold(model, kind)
    if threshold is None:  # no synthetic-defect threshold in this checkpoint: the default one
        threshold = model_threshold(model)
    return slider_update(threshold), describe(model)
