"""The app's page: `build_demo()` lays out the tabs (Inspect, Batch, Fit your own, API) and wires
each control to its handler in `ulsad.app.handlers`; `LAUNCH_KWARGS` are for `demo.launch`."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from ulsad.app import checkpoints
from ulsad.app.checkpoints import THRESHOLD_KINDS, describe, model_threshold
from ulsad.app.fitting import FIT_AUTO_EPOCHS, FIT_MAX_IMAGES, FIT_MIN_IMAGES
from ulsad.app.handlers import (
    CACHE,
    batch,
    fit,
    inspect,
    inspect_again,
    on_checkpoint,
    push,
    request_stop,
    shown,
    slider_update,
)
from ulsad.app.sessions import Session
from ulsad.errors import ULSADError

log = logging.getLogger(__name__)
THEME = gr.themes.Soft(
    primary_hue="indigo",
    font=["ui-sans-serif", "system-ui", "sans-serif"],  # no web fonts: the page works offline
    font_mono=["ui-monospace", "monospace"],
)
CSS = ".verdict textarea {font-size: 1.05em; font-weight: 600} .credits {font-size: 0.8em}"
LAUNCH_KWARGS: dict[str, Any] = {"theme": THEME, "css": CSS, "max_file_size": "200mb"}
# Every 10 min, delete uploads and outputs in gradio's cache older than 1 h (else kept for ever).
DELETE_CACHE = (600, 3600)
QUEUE_SIZE = 64  # requests waiting beyond it are refused (HTTP 503) until places free up

INTRO = """# ULSAD: find what is wrong in an image
Unsupervised anomaly detection trained on **good images only**. The *local* branch sees structural
defects (scratches, dents, contamination), the *global* branch logical ones (missing or misplaced
parts). Upload an image, or fit a model on 10-200 good images of your own product."""

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


def build_demo(
    choices: list[tuple[str, str]] | None = None, default: str | None = None
) -> gr.Blocks:
    """The app. `choices`: (label, checkpoint) for the dropdown (default: weights/manifest.json)."""
    if choices is None:
        choices, default = checkpoints.checkpoint_choices()
    default = default or (choices[0][1] if choices else None)
    threshold, info = None, "No embedded checkpoint: type a Hub repo id (owner/name)."
    try:
        if default:
            first = CACHE.get(default)
            threshold, info = model_threshold(first), describe(first)
    except ULSADError as error:  # e.g. weights not installed, offline: the app still starts
        log.warning("default checkpoint %r not loaded: %s", default, error)
        info = shown(f"Default checkpoint not available: {error}")

    with gr.Blocks(title="ULSAD anomaly detection", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(INTRO)
        session = gr.State(Session(choices=list(choices)), delete_callback=lambda s: s.cleanup())
        with gr.Row(equal_height=True):
            checkpoint = gr.Dropdown(choices, value=default, label="Checkpoint", scale=2)
            local = checkpoints.local_checkpoints_allowed()
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
                [(label, kind) for kind, label in THRESHOLD_KINDS.items()],
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
                    rows = checkpoints.example_rows(choices)
                    if rows:
                        gr.Examples(rows, inputs=[image, checkpoint], label="Examples")
                        gr.Markdown(checkpoints.example_credits(choices), elem_classes="credits")
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
                f"Upload {FIT_MIN_IMAGES}-{FIT_MAX_IMAGES} **good** (defect-free) images of "
                "one product, or a zip of them. A `lite` model trains on the CPU in a few "
                "minutes (the `ulsad train` budget of 400 steps: 1-2 min on 2 cores, whatever "
                "the number of images). One training runs at a time; others wait in the queue."
            )
            with gr.Row():
                fit_files = gr.File(
                    label="Good images or a zip",
                    file_count="multiple",
                    file_types=["image", ".zip"],
                )
                with gr.Column():
                    epochs = gr.Slider(
                        0,
                        100,
                        value=FIT_AUTO_EPOCHS,
                        step=1,
                        label="Epochs",
                        info="0: automatic, as `ulsad train` (400 steps, at least 5 epochs). "
                        "Or set the number of epochs yourself.",
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
            concurrency_limit=4,  # sets a flag: instant, yet bounded like every event
            concurrency_id="stop",
        )
        push_button.click(
            push,
            [repo_id, token, private, session],
            push_status,
            api_visibility="private",
            concurrency_limit=1,
        )
        # Private events can still be called through /queue/join: each has a limit too. Loading
        # a checkpoint shares one queue of 2 (and `ModelCache` merges loads of one id).
        describe_args = ([checkpoint, custom, session], [threshold_slider, checkpoint_info])
        loads = {"api_visibility": "private", "concurrency_limit": 2, "concurrency_id": "load"}
        for event in (checkpoint.change, custom.submit):
            event(on_checkpoint, *describe_args, **loads)
        threshold_kind.change(
            on_checkpoint,
            [checkpoint, custom, session, threshold_kind],
            [threshold_slider, checkpoint_info],
            **loads,
        )
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return demo
