"""ULSAD: unsupervised logical and structural anomaly detection by deep feature reconstruction."""

import os

# OpenMP's idle threads spin by default; when another job shares the cores, training and
# inference then slow down 3-50x (README, "Shared CPUs"). Sleeping idle threads cost nothing
# measurable on idle cores. OpenMP reads this once, when PyTorch loads, so it is set before
# `torch` is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ulsad.config import PRESETS, ULSADConfig, preset_config
from ulsad.errors import ULSADError
from ulsad.model import ULSAD, AnomalyMaps

__all__ = ["PRESETS", "ULSAD", "AnomalyMaps", "ULSADConfig", "ULSADError", "preset_config"]
__version__ = "0.1.0"
