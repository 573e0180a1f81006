"""The demo app (the `app` extra: gradio, plotly): a Hugging Face Space and a local app.

Modules from the bottom up: `inputs` (uploads, zips, numeric arguments, and their limits),
`checkpoints` (which checkpoints are offered, loading and caching them), `sessions` (one folder
and one fitted model per browser session), `fitting` (training a `lite` model on uploads),
`figures` (plotly heatmap and histogram), `scoring` (what the Inspect and Batch tabs show),
`handlers` (one event handler per button, failures shown as one line) and `ui` (the page,
`build_demo()`). Only `handlers` and `ui` import gradio; the repository's `app.py` launches it.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phone-home: starts offline
