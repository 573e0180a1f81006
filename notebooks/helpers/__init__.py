"""What the notebooks share, kept out of the `ulsad` package: `plots` (plotly figures and Markdown
tables), `datasets` (the per-dataset notes and smoke-mode data in each benchmark's layout), the
line each notebook opens with, and running a benchmark script.

The notebooks import it from their own folder: Jupyter, and the tests, run a notebook with its
folder as the working directory, where Python looks first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def smoke_mode(smoke: bool) -> bool:
    """Whether a notebook runs in smoke mode: its `SMOKE` parameter, or `ULSAD_SMOKE=1` in the
    environment (the tests run every notebook so). Also silences the one warning every notebook
    would print: text progress bars are fine where ipywidgets is absent."""
    warnings.filterwarnings("ignore", message="IProgress not found")
    return smoke or os.environ.get("ULSAD_SMOKE") == "1"


def opening(smoke: bool) -> str:
    """Versions, device and mode: the first thing a notebook prints."""
    import torch

    import ulsad
    from ulsad.devices import resolve_device

    return (
        f"ulsad {ulsad.__version__}, torch {torch.__version__}, device {resolve_device(None)}, "
        f"smoke mode: {smoke}"
    )


def benchmark_script(module: str, *args: str) -> str:
    """Run `python -m benchmarks.<module> ARGS` from the repository root, as the scripts are meant
    to run (`benchmarks/` is not part of the package), and return what it printed."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *args]
    done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{done.stderr[-2000:]}")
    return done.stdout
