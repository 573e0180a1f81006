"""ULSAD demo: inspect images, see where and why they are anomalous, fit a model on your own.

A Hugging Face Space (README front matter: `app_file: app.py`) and a local app: `python app.py`
serves on GRADIO_SERVER_PORT (default 7860), offline, on the embedded default checkpoint.
The logic lives in `ulsad.app_utils`; this file is the UI and its wiring. API: see README.
"""

from __future__ import annotations

import functools
import html
import logging
import os
import shutil
import tempfile
import time
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phone-home: starts offline

import gradio as gr

from ulsad import app_utils as au
from ulsad.checkpoint import push_folder
from ulsad.errors import ULSADError

log = logging.getLogger("ulsad.app")
CACHE = au.ModelCache(maxsize=4)
FITTED_CHOICE = ("Your fitted model (this session)", au.FITTED)
THEME = gr.themes.Soft(
    primary_hue="indigo",
    font=["ui-sans-serif", "system-ui", "sans-serif"],  # no web fonts: the page works offline
    font_mono=["ui-monospace", "monospace"],
)
CSS = ".verdict textarea {font-size: 1.05em; font-weight: 600} .credits {font-size: 0.8em}"
PROGRESS = gr.Progress()  # gradio finds progress bars by this default value
LAUNCH_KWARGS: dict[str, Any] = {"theme": THEME, "css": CSS, "max_file_size": "200mb"}
# Every 10 min, delete uploads and outputs in gradio's cache older than 1 h (else kept for ever).
DELETE_CACHE = (600, 3600)

INTRO = """# ULSAD: find what is wrong in an image
Unsupervised anomaly detection trained on **good images only**. The *local* branch sees structural
defects (scratches, dents, contamination), the *global* branch logical ones (missing or misplaced
parts). Upload an image, or fit a model on 10-200 good images of your own product."""


def escape(text: str) -> str:
    """Messages are shown as HTML: file names must not inject markup."""
    return html.escape(text, quote=False)


def shown(message: str) -> str:
    """A message as the app shows it: no server paths, no markup."""
    return escape(au.scrub_paths(message))


def friendly(fn):
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


def resolve_model(checkpoint: str | None, custom: str | None, session: au.Session):
    """The chosen model: the free-text Hub id if given, else the dropdown's choice.

    Accepted: the dropdown's entries, the session's fitted model, embedded names and Hub repo ids;
    local folders only with ULSAD_APP_LOCAL_CHECKPOINTS=1 (`au.checkpoint_source`)."""
    spec = (custom or "").strip() or str(checkpoint or "").strip()
    if spec == au.FITTED:
        if session.fitted is None or not session.fitted.is_dir():
            raise ULSADError(
                "No model fitted in this session yet (or it expired after "
                f"{au.SESSION_TTL_S // 3600} h unused): use the 'Fit your own' tab."
            )
        session.touch()
        return CACHE.get(str(session.fitted))
    source = au.checkpoint_source(spec, [value for _, value in session.choices])
    return CACHE.get(spec, local=source != "hub")


def slider_update(threshold: float | None) -> dict:
    top = max(0.5, round(3 * threshold, 3)) if threshold else 1.0
    return gr.update(value=threshold, maximum=top)


def describe(model) -> str:
    cfg, threshold = model.config, au.model_threshold(model)
    shown = f"{threshold:.4f}" if threshold is not None else "none (uncalibrated)"
    f1 = au.model_threshold(model, "f1")
    other = f"; best F1 on synthetic defects **{f1:.4f}**" if f1 is not None else ""
    return (
        f"`{cfg.preset}` preset, backbone `{cfg.backbone}`, {cfg.image_size} px input; "
        f"default threshold **{shown}** (the highest score among held-out good images){other}."
    )


# ------------------------------------------------------------------------------------ events
@friendly
def inspect(image, checkpoint, threshold, custom_checkpoint, session):
    """One image -> score, overlay, local map, global map, verdict, interactive heatmap."""
    model = resolve_model(checkpoint, custom_checkpoint, session)
    path, name = au.upload_path(image)
    loaded, notice = au.load_upload(path, name)
    if notice:
        gr.Info(escape(notice))
    threshold = (
        au.model_threshold(model)
        if threshold is None
        else au.number(threshold, "Threshold", -1e6, 1e6)
    )
    result = au.inspect_image(model, loaded, threshold)
    text = result.verdict + (f" ({notice})" if notice else "")
    return result.score, result.overlay, result.local_map, result.global_map, text, result.figure


def inspect_again(image, checkpoint, threshold, custom_checkpoint, session):
    """The threshold moved: redo the inspection, if there is an image yet."""
    if image is None:
        return (gr.skip(),) * 6
    return inspect(image, checkpoint, threshold, custom_checkpoint, session)


@friendly
def batch(files, checkpoint, threshold, custom_checkpoint, worst_n, session, progress=PROGRESS):
    """Many images (or zips) -> table sorted by score, histogram, worst overlays, CSV."""
    model = resolve_model(checkpoint, custom_checkpoint, session)
    threshold = (
        au.model_threshold(model)
        if threshold is None
        else au.number(threshold, "Threshold", -1e6, 1e6)
    )
    with tempfile.TemporaryDirectory(dir=session.workdir) as unpacked:
        images, skipped = au.collect_images(
            files, unpacked, au.MAX_BATCH_IMAGES, au.MAX_UNPACKED_BYTES
        )
        if not images:
            raise ULSADError("No images found: upload PNG, JPEG, BMP or TIFF files, or a zip.")
        progress(0, desc="Scoring")
        result = au.score_batch(
            model,
            images,
            threshold,
            au.number(worst_n or 0, "worst_n", 0, 24, integer=True),
            progress=lambda done, total: progress((done, total), desc="Scoring", unit="images"),
        )
    problems = skipped + result.failed
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        gr.Warning(escape(f"Skipped {len(problems)} file(s): {'; '.join(problems[:5])}{more}"))
    if result.notices:
        gr.Info(f"{len(result.notices)} large image(s) were downscaled to {au.MAX_SIDE} px.")
    if not result.rows:
        raise ULSADError("None of the uploaded files could be read as an image.")
    import pandas as pd  # only the batch table needs it

    table = pd.DataFrame(result.rows, columns=["image", "score", "anomalous"])
    csv_path = au.write_csv(
        result.rows, session.workdir / f"scores-{time.time_ns()}.csv", threshold
    )
    histogram = au.histogram_figure([row["score"] for row in result.rows], threshold)
    return table, histogram, result.worst, str(csv_path)


@friendly
def fit(files, epochs, augment, session, progress=PROGRESS):
    """Train a lite model on the uploaded good images; select it and offer it for download."""
    session.stop = False
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = session.workdir / f"fitted-{stamp}"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=session.workdir) as unpacked:
        images, skipped = au.collect_images(
            files, unpacked, au.FIT_MAX_IMAGES, au.MAX_UNPACKED_BYTES
        )
        if skipped:
            more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
            gr.Warning(shown(f"Skipped {len(skipped)} file(s): {'; '.join(skipped[:5])}{more}"))
        progress(0, desc=f"Reading {len(images)} images, computing backbone features")

        def on_epoch(epoch: int, total: int, train_loss: float, val_loss: float) -> None:
            session.touch()  # a long fit keeps its session folder alive
            desc = f"Epoch {epoch}/{total}: loss {train_loss:.3f}, held-out loss {val_loss:.3f}"
            progress((epoch, total), desc=desc, unit="epochs")

        try:
            model = au.fit_lite(
                images,
                out_dir,
                au.number(epochs, "Epochs", 1, 200, integer=True),
                callback=on_epoch,
                should_stop=lambda: session.stop,
                augment=bool(augment),
            )
        except au.FitStopped:
            shutil.rmtree(out_dir, ignore_errors=True)
            return "Training stopped; nothing was saved.", None, gr.skip(), gr.skip(), gr.skip()
    archive = au.zip_folder(out_dir, session.workdir / f"ulsad-lite-{stamp}.zip")
    if session.fitted is not None:
        shutil.rmtree(session.fitted, ignore_errors=True)
    session.fitted = out_dir
    CACHE.put(str(out_dir), model)
    threshold = au.model_threshold(model)
    status = (
        f"Trained on {len(images)} images in {time.perf_counter() - started:.0f} s; default "
        f"threshold {threshold:.4f}. It is now the selected checkpoint: inspect away, or "
        "download it below."
    )
    choices = gr.update(choices=[*session.choices, FITTED_CHOICE], value=au.FITTED)
    return status, str(archive), choices, slider_update(threshold), ""


@friendly
def push(repo_id, token, private, session):
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
def request_stop(session: au.Session) -> None:
    """Stop button: this session's running fit stops after its current epoch."""
    session.stop = True


@friendly
def on_checkpoint(checkpoint, custom_checkpoint, session, kind="heldout"):
    """A new checkpoint (or threshold kind): set the slider to that threshold and describe it."""
    model = resolve_model(checkpoint, custom_checkpoint, session)
    threshold = au.model_threshold(model, kind)
    if threshold is None:  # no synthetic-defect threshold in this checkpoint: the default one
        threshold = au.model_threshold(model)
    return slider_update(threshold), describe(model)


# ------------------------------------------------------------------------------------ layout
def build_demo(
    choices: list[tuple[str, str]] | None = None, default: str | None = None
) -> gr.Blocks:
    """The app. `choices`: (label, checkpoint) for the dropdown (default: weights/manifest.json)."""
    if choices is None:
        choices, default = au.checkpoint_choices()
    default = default or (choices[0][1] if choices else None)
    threshold, info = None, "No embedded checkpoint: type a Hub repo id (owner/name)."
    try:
        if default:
            first = CACHE.get(default)
            threshold, info = au.model_threshold(first), describe(first)
    except ULSADError as error:  # e.g. weights not installed, offline: the app still starts
        log.warning("default checkpoint %r not loaded: %s", default, error)
        info = escape(au.scrub_paths(f"Default checkpoint not available: {error}"))

    with gr.Blocks(title="ULSAD anomaly detection", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(INTRO)
        session = gr.State(au.Session(choices=list(choices)), delete_callback=lambda s: s.cleanup())
        with gr.Row(equal_height=True):
            checkpoint = gr.Dropdown(choices, value=default, label="Checkpoint", scale=2)
            local = au.local_checkpoints_allowed()
            custom = gr.Textbox(
                "",
                label="...or a Hub repo id" + (" / local folder" if local else ""),
                scale=2,
                placeholder="owner/name" + (" or /path/to/checkpoint" if local else ""),
            )
            threshold_slider = gr.Slider(
                0,
                slider_update(threshold)["maximum"],
                value=threshold or 0,
                step=0.001,
                label="Threshold",
                scale=3,
                info="Scores above it are anomalous.",
            )
        with gr.Row():
            checkpoint_info = gr.Markdown(info)
            threshold_kind = gr.Radio(
                [(label, kind) for kind, label in au.THRESHOLD_KINDS.items()],
                value="heldout",
                label="Set the threshold to the checkpoint's",
            )

        with gr.Tab("Inspect"):
            with gr.Row():
                with gr.Column(scale=2):
                    image = gr.Image(
                        type="filepath",
                        image_mode=None,
                        label="Image",
                        height=320,
                        elem_id="input-image",
                    )
                    inspect_button = gr.Button("Inspect", variant="primary")
                    rows = au.example_rows(choices)
                    if rows:
                        gr.Examples(rows, inputs=[image, checkpoint], label="Examples")
                        gr.Markdown(au.example_credits(choices), elem_classes="credits")
                with gr.Column(scale=3):
                    with gr.Row():
                        score = gr.Number(label="Image score", precision=None, scale=1)
                        verdict = gr.Textbox(label="Verdict", scale=3, elem_classes="verdict")
                    overlay = gr.Image(
                        label="Anomaly heatmap (region above threshold outlined)",
                        format="png",
                        height=360,
                        elem_id="overlay",
                    )
            with gr.Row():
                local_map = gr.Image(label="Local map (structural)", format="png", height=280)
                global_map = gr.Image(label="Global map (logical)", format="png", height=280)
            heatmap = gr.Plot(label="Interactive anomaly map", elem_id="heatmap")

        with gr.Tab("Batch"):
            with gr.Row():
                batch_files = gr.File(
                    label="Images or a zip of images",
                    file_count="multiple",
                    file_types=["image", ".zip"],
                )
                with gr.Column():
                    worst_n = gr.Slider(0, 24, value=8, step=1, label="Show the worst N")
                    batch_button = gr.Button("Score all", variant="primary")
                    csv_file = gr.File(label="Scores (CSV)")
            table = gr.Dataframe(label="Scores, highest first", interactive=False)
            histogram = gr.Plot(label="Score histogram")
            gallery = gr.Gallery(label="Worst images", columns=4, height="auto")

        with gr.Tab("Fit your own"):
            gr.Markdown(
                f"Upload {au.FIT_MIN_IMAGES}-{au.FIT_MAX_IMAGES} **good** (defect-free) images of "
                "one product, or a zip of them. A `lite` model trains on the CPU in a few "
                f"minutes ({au.FIT_DEFAULT_EPOCHS} epochs: about 2 min for 50 images on 2 "
                "cores). One training runs at a time; others wait in the queue."
            )
            with gr.Row():
                fit_files = gr.File(
                    label="Good images or a zip",
                    file_count="multiple",
                    file_types=["image", ".zip"],
                )
                with gr.Column():
                    epochs = gr.Slider(
                        1,
                        100,
                        value=au.FIT_DEFAULT_EPOCHS,
                        step=1,
                        label="Epochs",
                        info="More epochs: better maps, longer training.",
                    )
                    augment = gr.Checkbox(
                        label="Parts appear turned or mirrored",
                        value=False,
                        info="Train on rotated (up to 30 degrees) and mirrored copies too. "
                        "Leave off when orientation matters.",
                    )
                    with gr.Row():
                        fit_button = gr.Button("Train", variant="primary")
                        stop_button = gr.Button("Stop", variant="stop")
            fit_status = gr.Markdown()
            fit_download = gr.File(
                label="Checkpoint (.zip: model.safetensors, config.json)", height=120
            )
            with gr.Accordion("Push to the Hugging Face Hub", open=False):
                with gr.Row():
                    repo_id = gr.Textbox(label="Repo id", placeholder="your-name/ulsad-my-product")
                    token = gr.Textbox(label="Write token", type="password")
                    private = gr.Checkbox(label="Private", value=True)
                push_button = gr.Button("Push")
                push_status = gr.Markdown()

        with gr.Tab("API"):
            gr.Markdown(API_HELP)

        # Events. Inspect and batch have their own queues, so they answer while a fit runs.
        inspect_inputs = [image, checkpoint, threshold_slider, custom, session]
        inspect_outputs = [score, overlay, local_map, global_map, verdict, heatmap]
        common = {"concurrency_id": "inspect", "concurrency_limit": 2, "preprocess": False}
        inspect_button.click(inspect, inspect_inputs, inspect_outputs, api_name="inspect", **common)
        image.upload(inspect, inspect_inputs, inspect_outputs, api_visibility="private", **common)
        threshold_slider.release(
            inspect_again,
            inspect_inputs,
            inspect_outputs,
            api_visibility="private",
            trigger_mode="always_last",
            **common,
        )
        batch_button.click(
            batch,
            [batch_files, checkpoint, threshold_slider, custom, worst_n, session],
            [table, histogram, gallery, csv_file],
            api_name="batch",
            concurrency_limit=1,
            preprocess=False,  # non-image files are skipped with a warning, not a refusal
        )
        fit_button.click(
            fit,
            [fit_files, epochs, augment, session],
            [fit_status, fit_download, checkpoint, threshold_slider, custom],
            api_name="fit",
            concurrency_limit=1,
            preprocess=False,
            concurrency_id="fit",
        )
        stop_button.click(
            request_stop,
            session,
            None,
            api_visibility="private",
            concurrency_limit=None,
        )
        push_button.click(
            push,
            [repo_id, token, private, session],
            push_status,
            api_visibility="private",
            concurrency_limit=1,
        )
        describe_args = ([checkpoint, custom, session], [threshold_slider, checkpoint_info])
        for event in (checkpoint.change, custom.submit):
            event(on_checkpoint, *describe_args, api_visibility="private", concurrency_limit=None)
        threshold_kind.change(
            on_checkpoint,
            [checkpoint, custom, session, threshold_kind],
            [threshold_slider, checkpoint_info],
            api_visibility="private",
            concurrency_limit=None,
        )
    demo.queue(max_size=64)
    return demo


API_HELP = """Every button is an API endpoint ([`gradio_client`](https://www.gradio.app/guides/getting-started-with-the-python-client)):
```python
from gradio_client import Client, handle_file
client = Client("http://127.0.0.1:7860")      # or the Space id
score, overlay, local, global_, verdict, plot = client.predict(
    handle_file("image.png"), api_name="/inspect")  # checkpoint defaults to the embedded one
```
`/inspect` takes `image`, `checkpoint` (an embedded name, or `fitted`), `threshold` (default: the
default checkpoint's; `None`: the chosen checkpoint's own), `custom_checkpoint` (a Hub repo id
`owner/name`; overrides `checkpoint`). `/batch` takes a list
of files (images or zips) and returns the table, histogram, worst overlays and CSV. `/fit` takes a
list of good images, the number of epochs and whether to augment with rotations and mirrors
(optional, default off), and returns a status line and the checkpoint zip."""

demo = build_demo()

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    demo.launch(**LAUNCH_KWARGS)
