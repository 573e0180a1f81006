"""The resume state of a training run: what it must match (`run_key`), and its atomic save and
load. A run interrupted at any point continues from its last saved epoch with the same batches,
queries and selection as an uninterrupted one (`tests/test_train.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ulsad.errors import ULSADError
from ulsad.files import atomic_path
from ulsad.model import ULSADModel
from ulsad.recipe import TrainingRecipe
from ulsad.selection import EpochChoice, trainable_state

__all__ = ["STATE_NAME", "load_state", "run_key", "save_state"]

STATE_NAME = "train_state.pt"


def run_key(
    model: ULSADModel, recipe: TrainingRecipe, epochs: int, train_items: list, val_items: list
) -> str:
    """What a resume state must match: the config, the recipe, the budget and the exact images."""
    return json.dumps(
        {"config": model.config.to_dict(), "recipe": recipe.to_dict(), "epochs": epochs,
         "train": [str(x) for x in train_items], "val": [str(x) for x in val_items]},
        sort_keys=True, default=str,
    )  # fmt: skip


def save_state(path: Path, model: ULSADModel, optimizer, scheduler, epoch: int, history: list,
               key: str, choice: EpochChoice) -> None:  # fmt: skip
    """The resume state, atomically: trained weights, optimiser, schedule, history, kept epoch."""
    state = {"best": choice.state, "epoch": epoch, "key": key, "model": trainable_state(model),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "history": json.dumps(history)}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, key: str, model: ULSADModel, optimizer, scheduler,
               device: torch.device) -> tuple[int, list, EpochChoice]:  # fmt: skip
    """Restore a resume state of the same run; returns (epochs done, history, kept epoch).
    A corrupt, truncated or foreign file is one ULSADError that says how to start over."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or not isinstance(state.get("key"), str):
            raise ValueError("not a dictionary with a run key")
    except Exception as error:  # torch.load raises many kinds: zip, pickle, EOF, OS errors
        raise ULSADError(
            f"{path} is not a resume state this version can read ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else 'no detail'}): pass {{restart}} "
            "to discard it and train from the start.",
            restart="resume=False",
        ) from None
    if state["key"] != key:
        raise ULSADError(
            f"{path} belongs to a different training run (other data or settings): "
            "choose another {out_dir} folder, or pass {restart} to discard it.",
            out_dir="out_dir",
            restart="resume=False",
        )
    try:
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return state["epoch"], json.loads(state["history"]), EpochChoice(state.get("best"))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # same key, other contents
        raise ULSADError(
            f"{path} does not fit this model ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else 'no detail'}): pass "
            "{restart} to discard it and train from the start.",
            restart="resume=False",
        ) from None
