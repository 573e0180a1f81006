"""ULSAD: unsupervised logical and structural anomaly detection by deep feature reconstruction."""

from ulsad.config import PRESETS, ULSADConfig, preset_config
from ulsad.errors import ULSADError
from ulsad.model import ULSAD, AnomalyMaps

__all__ = ["PRESETS", "ULSAD", "AnomalyMaps", "ULSADConfig", "ULSADError", "preset_config"]
__version__ = "0.1.0"
