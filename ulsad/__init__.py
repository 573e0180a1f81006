"""ULSAD: unsupervised logical and structural anomaly detection by deep feature reconstruction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ulsad.config import PRESETS, ULSADConfig, preset_config
from ulsad.errors import ULSADError

if TYPE_CHECKING:
    from ulsad.model import ULSAD, AnomalyMaps

__all__ = ["PRESETS", "ULSAD", "AnomalyMaps", "ULSADConfig", "ULSADError", "preset_config"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`ULSAD` and `AnomalyMaps` import torch: loaded on first use, so `ulsad.cli` starts fast
    (and Ctrl-C during start-up reaches its handler)."""
    if name in ("ULSAD", "AnomalyMaps"):
        from ulsad import model

        return getattr(model, name)
    raise AttributeError(f"module 'ulsad' has no attribute {name!r}")
