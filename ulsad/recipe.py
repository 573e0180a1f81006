"""The training recipe: how a network is trained and how training chooses among its results.

A recipe holds the schedule (budget, optimiser, learning rate), the arithmetic, the held-out
fraction, augmentation and model selection (`ulsad.selection`). It is recorded in the checkpoint's
`training.json`; the network's own settings are `ulsad.config.ULSADConfig` (`config.json`), and a
named preset pairs the two (`ulsad.presets`). Words: "held-out" images are good training images
kept out of the optimiser steps (the dataset's validation split, else `val_fraction` of the
training images); "selection" is what is chosen on synthetic defects pasted onto them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from ulsad.config import DEFAULT_SEED
from ulsad.errors import ULSADError
from ulsad.fields import Range, check_fields

__all__ = ["LEGACY_NAMES", "TrainingRecipe"]

LEGACY_NAMES = {"validation_points": "selection_points"}
"""Earlier names of recipe fields (config.json of ulsad <= 0.3, `--set`): still accepted."""


@dataclass
class TrainingRecipe:
    """Schedule, precision, augmentation and model-selection settings of one training run.

    The defaults are the paper's (200 epochs of Adam at 2e-4, MultiStepLR, seed 40, no selection).
    """

    # The budget is `epochs` when set (the paper: 200), else `steps` optimiser steps rounded up
    # to whole epochs and at least `min_epochs` (see `training_epochs`), so small sets get enough
    # updates and large ones do not waste time, yet see every image more than a couple of times.
    # `lr_milestones` are epochs; () keeps the rate constant.
    epochs: int | None = 200
    steps: int = 1000
    min_epochs: int = 1
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 2e-5
    lr_milestones: tuple[int, ...] = (200,)
    lr_gamma: float = 0.1
    # "multistep" (the paper: MultiStepLR at `lr_milestones`) or "cosine" (decay to 0 over the
    # run, stepped per epoch).
    lr_schedule: str = "multistep"
    # Arithmetic of the training steps: "auto" runs them under bfloat16 autocast where the device
    # computes bf16 natively (`ulsad.devices.native_bfloat16`: CUDA, x86 CPUs with AVX512-BF16 or
    # AMX), float32 elsewhere; "float32" and "bfloat16" force one. Weights, features, selection
    # and inference stay float32.
    training_precision: str = "auto"
    # Attention loss over this many query positions per training step, drawn at random (0: all,
    # the paper). The loss is a mean over positions, so a random subset estimates it without
    # bias, and the cross-attention's cost shrinks in proportion. An estimate of the model's
    # loss, so a training setting: the network and its maps do not depend on it.
    attention_queries: int = 0
    # Seed of the heads' initialisation, the held-out split, the batches, the attention queries,
    # the augmentation and the synthetic defects.
    seed: int = DEFAULT_SEED
    # Held-out good images, when the dataset has no validation split: this fraction of the
    # training images (they set the map quantiles and the thresholds, never the weights).
    val_fraction: float = 0.1
    # Augmentation for small training sets: `augment_copies` randomly transformed copies of every
    # training image (rotation up to +-`augment_rotation` degrees, mirrored with probability 1/2
    # when `augment_flip`) are cached next to it; each epoch draws one version of every image, so
    # an epoch costs the same. Off by default: orientation can be part of what "normal" means.
    augment_copies: int = 0
    augment_rotation: float = 0.0
    augment_flip: bool = False
    # Model selection without defect images (`ulsad.selection`): this many synthetic defects
    # pasted onto the held-out good images (0: off). They choose which of `selection_points`
    # evenly spaced epochs to keep, a best-F1 threshold and, with `choose_local_weight`, the
    # model's fusion weight (`ULSADConfig.local_weight`), written to its config.
    synthetic_defects: int = 0
    selection_points: int = 1
    choose_local_weight: bool = False
    # Stop training the global branch once a selection point gives it no weight (local_weight
    # 1.0), or a weight that scores within 0.001 (a tie) of the local map alone: more than half
    # of every later step would train a map that adds nothing measurable. Its autoencoder is
    # then frozen; later selection points still compare every weight. Without a global branch or
    # synthetic defects there is nothing to prune.
    prune_global: bool = False
    # The largest fusion weight the choice may give the local map. Synthetic defects all leave
    # some trace that the local map sees (even a region of another good image, registered and
    # blended in: local map alone 0.94 image AUROC on juice_bottle, the global map alone 0.59),
    # so they cannot show what the global map adds on defects only it sees. 0.75 keeps it a
    # quarter whatever they say: for products whose defects are about the layout (elongated
    # layout set: image AUROC +0.15 to +0.46 over the local map alone at 3 seeds), at a cost on
    # structural ones (commutator: image AUROC -0.020, AUPRO -0.083). Not a default: see
    # docs/presets.md, "A share for the global map".
    max_local_weight: float = 1.0

    def __post_init__(self) -> None:
        check_fields(self, RANGES)  # types and ranges; lists -> tuples
        if (self.epochs is not None and self.epochs < 1) or self.steps < 1:
            raise ULSADError(
                f"epochs (or null) and steps must be >= 1, got {self.epochs} and {self.steps}."
            )
        if self.lr_schedule not in ("multistep", "cosine"):
            raise ULSADError(
                f"lr_schedule must be 'multistep' or 'cosine', got {self.lr_schedule!r}."
            )
        if self.training_precision not in ("auto", "float32", "bfloat16"):
            raise ULSADError(
                "training_precision must be 'auto', 'float32' or 'bfloat16', got "
                f"{self.training_precision!r}."
            )
        if self.synthetic_defects < 0 or self.selection_points < 1:
            raise ULSADError(
                "synthetic_defects must be >= 0 and selection_points >= 1, got "
                f"{self.synthetic_defects} and {self.selection_points}."
            )
        if self.choose_local_weight and not self.synthetic_defects:
            raise ULSADError(
                "choosing the fusion weight (local_weight=null) needs synthetic_defects > 0."
            )

    def steps_per_epoch(self, n_train: int) -> int:
        """Optimiser steps in one epoch over `n_train` images (a last batch of one is dropped:
        BatchNorm needs two)."""
        full, rest = divmod(n_train, self.batch_size)
        return max(1, full + (rest > 1))

    def training_epochs(self, n_train: int) -> int:
        """Epochs to train on `n_train` images: `epochs` if set, else `steps` rounded up to whole
        epochs, and no fewer than `min_epochs`."""
        if self.epochs is not None:
            return self.epochs
        return max(self.min_epochs, math.ceil(self.steps / self.steps_per_epoch(n_train)))

    def chosen_fields(self) -> frozenset[str]:
        """The model config's fields this recipe chooses in training: `local_weight`, if asked."""
        return frozenset({"local_weight"} if self.choose_local_weight else ())

    def replace(self, **changes: Any) -> TrainingRecipe:
        changes = {LEGACY_NAMES.get(k, k): v for k, v in changes.items()}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ULSADError(f"Unknown training field(s): {sorted(unknown)}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingRecipe:
        """A recipe from its record (`training.json`), earlier names included (`LEGACY_NAMES`)."""
        return cls().replace(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# Range of each numeric field (see `ulsad.fields.check_fields`).
RANGES: dict[str, Range] = {
    "epochs": (1, None, True, True),
    "min_epochs": (1, None, True, True),
    "batch_size": (2, None, True, True),  # BatchNorm needs two samples per training batch
    "lr": (0.0, None, False, True),
    "weight_decay": (0.0, None, True, True),
    "lr_milestones": (0, None, True, True),
    "lr_gamma": (0.0, None, False, True),
    "attention_queries": (0, None, True, True),
    "seed": (0, 2**32 - 1, True, True),
    "val_fraction": (0.0, 1.0, False, False),
    "augment_copies": (0, None, True, True),
    "augment_rotation": (0.0, 180.0, True, True),
    "max_local_weight": (0.0, 1.0, True, True),
}
