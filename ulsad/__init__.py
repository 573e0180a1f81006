"""ULSAD: unsupervised logical and structural anomaly detection by deep feature reconstruction."""

from __future__ import annotations

import os

# OpenMP's idle threads spin by default; when another job shares the cores, training and
# inference then slow down 1.4-50x (docs/speed.md, "Shared CPUs"). Sleeping idle threads cost 10-15% on
# idle cores (`benchmarks/shared_cpu.py`). OpenMP reads this once, when PyTorch loads, so it is
# set before `torch` is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from typing import TYPE_CHECKING, Any

from ulsad.config import ULSADConfig
from ulsad.errors import ULSADError
from ulsad.presets import PRESETS, Preset, preset_config
from ulsad.recipe import TrainingRecipe
from ulsad.version import __version__ as __version__

if TYPE_CHECKING:
    from ulsad.detector import ULSAD
    from ulsad.model import AnomalyMaps

__all__ = [
    "PRESETS",
    "ULSAD",
    "AnomalyMaps",
    "Preset",
    "TrainingRecipe",
    "ULSADConfig",
    "ULSADError",
    "preset_config",
]


def __getattr__(name: str) -> Any:
    """`ULSAD` and `AnomalyMaps` import torch: loaded on first use, so `ulsad.cli` starts fast
    (and Ctrl-C during start-up reaches its handler)."""
    if name == "ULSAD":
        from ulsad.detector import ULSAD

        return ULSAD
    if name == "AnomalyMaps":
        from ulsad.model import AnomalyMaps

        return AnomalyMaps
    raise AttributeError(f"module 'ulsad' has no attribute {name!r}")
