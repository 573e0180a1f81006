"""ULSAD demo: inspect images, see where and why they are anomalous, fit a model on your own.

A Hugging Face Space (README front matter: `app_file: app.py`) and a local app: `python app.py`
serves on GRADIO_SERVER_PORT (default 7860), offline, on the embedded default checkpoint.
The app itself is `ulsad.app` (`pip install "ulsad[app]"`); see docs/app.md.
"""

import logging

from ulsad.app.ui import LAUNCH_KWARGS, build_demo

demo = build_demo()  # at module level too: `gradio app.py` (reload mode) looks for `demo`

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    demo.launch(**LAUNCH_KWARGS)
