"""Model selection without defect images: synthetic defects on held-out good images choose the
epoch to keep, the fusion weight, when the global branch stops training, and the thresholds.

Modules: `defects` (the synthetic-defect generator), `scoring` (metrics of fused maps on them,
the best fusion weight, the best-F1 threshold), `choice` (what training asks: the defect set,
the epoch choice, pruning, calibration). Training (`ulsad.train`) calls this package; nothing
here trains.
"""

from ulsad.selection.choice import (
    PRUNE_TOLERANCE,
    STOP_TOLERANCE,
    DefectSet,
    EpochChoice,
    calibrate,
    global_map_adds_nothing,
    make_defect_set,
    pruned_after,
    selection_epochs,
    selection_record,
    trainable_state,
)
from ulsad.selection.defects import (
    DIAGNOSTIC_KINDS,
    KINDS,
    LOGICAL_KINDS,
    STRUCTURAL_KINDS,
    synthetic_defects,
)
from ulsad.selection.scoring import (
    FUSION_WEIGHTS,
    SelectionMaps,
    best_weight,
    defect_metrics,
    f1_threshold,
    family_of,
    family_regret,
    fusion_table,
    map_quantiles,
)

__all__ = [
    "DIAGNOSTIC_KINDS",
    "FUSION_WEIGHTS",
    "KINDS",
    "LOGICAL_KINDS",
    "PRUNE_TOLERANCE",
    "STOP_TOLERANCE",
    "STRUCTURAL_KINDS",
    "DefectSet",
    "EpochChoice",
    "SelectionMaps",
    "best_weight",
    "calibrate",
    "defect_metrics",
    "f1_threshold",
    "family_of",
    "family_regret",
    "fusion_table",
    "global_map_adds_nothing",
    "make_defect_set",
    "map_quantiles",
    "pruned_after",
    "selection_epochs",
    "selection_record",
    "synthetic_defects",
    "trainable_state",
]
