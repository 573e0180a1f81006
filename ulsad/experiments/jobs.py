"""One benchmark job: train (or resume) and evaluate one (category, variant), and record it.

A job's files, under its results folder `out`: `<variant>/<category>.json` (the record),
`<variant>/<category>.error.json` (why it failed; deleted once it succeeds) and
`<variant>/<category>/checkpoint/` (the trained model and its resume state).
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ulsad.errors import ULSADError
from ulsad.experiments.paper import ABLATIONS, PAPER_SEEDS
from ulsad.experiments.provenance import environment, write_json

if TYPE_CHECKING:
    from ulsad import ULSAD
    from ulsad.config import ULSADConfig
    from ulsad.presets import Preset
    from ulsad.recipe import TrainingRecipe

FORMAT = "ulsad-benchmark-1"


@dataclass(frozen=True)
class Job:
    """One (category, variant) to train and evaluate; picklable, so it can be sent to Ray."""

    dataset: str
    root: str
    category: str
    preset: str
    variant: str
    overrides: dict[str, Any]
    out: str  # the results folder
    device: str | None = None
    eval_batch_size: int = 8
    progress: bool = False

    @property
    def result_path(self) -> Path:
        return Path(self.out) / self.variant / f"{self.category}.json"

    @property
    def error_path(self) -> Path:
        return Path(self.out) / self.variant / f"{self.category}.error.json"

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.out) / self.variant / self.category / "checkpoint"

    def config(self) -> ULSADConfig:
        """The model config of this job (`plan().config`)."""
        return self.plan().config

    def recipe(self) -> TrainingRecipe:
        """The training recipe of this job (`plan().recipe`)."""
        return self.plan().recipe

    def plan(self) -> Preset:
        """The preset with this job's overrides: the model config and its training recipe."""
        from ulsad.presets import preset

        return preset(self.preset, **self.overrides)


def now() -> str:
    """The current UTC time, ISO 8601 to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def make_jobs(
    dataset: str,
    root: str | Path,
    out: str | Path,
    categories: Sequence[str] | None = None,
    *,
    preset: str = "lite",
    variants: Sequence[str] = ("full",),
    overrides: dict[str, Any] | None = None,
    epochs: int | None = None,
    device: str | None = None,
    eval_batch_size: int = 8,
    progress: bool = False,
) -> list[Job]:
    """The (category, variant) jobs of a run, checked up front (configs, earlier results)."""
    from ulsad.data import get_dataset, list_categories

    get_dataset(dataset)
    if not Path(root).is_dir():
        raise ULSADError(f"dataset root {root} does not exist; pass the folder that holds it.")
    variants = list(ABLATIONS) if "all" in variants else list(dict.fromkeys(variants))
    unknown = [v for v in variants if v not in ABLATIONS]
    if unknown:
        raise ULSADError(
            f"unknown ablation {unknown[0]!r}; choose from {', '.join(ABLATIONS)} or all."
        )
    user = dict(overrides or {})
    if epochs is not None:
        user["epochs"] = epochs
        user.setdefault("lr_milestones", [epochs])  # the paper's milestone is the last epoch
    if "seed" not in user and dataset in PAPER_SEEDS:
        user["seed"] = PAPER_SEEDS[dataset]
    categories = list(categories or list_categories(dataset, root))
    if not categories:
        raise ULSADError(
            f"no {dataset} categories found under {root}; check {{root}} and {{dataset}}.",
            root="root", dataset="dataset",
        )  # fmt: skip
    jobs = []
    for variant in variants:
        for category in categories:
            job = Job(dataset, str(root), category, preset, variant, {**ABLATIONS[variant], **user},
                      str(out), device, eval_batch_size, progress)  # fmt: skip
            check_previous(job, job.plan())
            jobs.append(job)
    return jobs


def check_previous(job: Job, plan: Preset) -> None:
    """A result already in the results folder must come from the same dataset, config and
    recipe (an earlier version's record, whose config held the recipe, is read as such)."""
    if not job.result_path.is_file():
        return
    from ulsad.config import split_legacy
    from ulsad.recipe import TrainingRecipe as Recipe

    previous = json.loads(job.result_path.read_text(encoding="utf-8"))
    old_config, old_recipe = split_legacy(previous.get("config", {}))
    old_recipe = Recipe.from_dict({**old_recipe, **previous.get("recipe", {})})
    old = json.loads(json.dumps({**old_config, **old_recipe.to_dict()}))
    new = json.loads(json.dumps({**plan.config.to_dict(), **plan.recipe.to_dict()}))
    skip = plan.recipe.chosen_fields() | {"preset"}
    if "recipe" not in previous:  # an earlier version's record does not say what it chose
        skip |= {"choose_local_weight"}
    changed = sorted(k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k))
    if previous.get("dataset") != job.dataset or changed:
        what = ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in changed[:4])
        what = what or f"dataset {previous.get('dataset')} -> {job.dataset}"
        raise ULSADError(
            f"{job.result_path} comes from another setup ({what}); use another {{out}}, or "
            "delete it to recompute.",
            out="out",
        )


def trained_model(job: Job, device: Any) -> tuple[ULSAD, dict[str, Any], bool]:
    """(model, its training.json, trained now?): load a finished checkpoint, or fit (resuming)."""
    from ulsad import ULSAD

    ckpt = job.checkpoint_dir
    if (ckpt / "training.json").is_file() and (ckpt / "model.safetensors").is_file():
        model = ULSAD.from_pretrained(ckpt, device=device)
        if not job.plan().matches(model.config):
            raise ULSADError(
                f"{ckpt} holds a model trained with another config: delete that folder or use "
                "another {out}.",
                out="out",
            )
        trained = False
    else:
        model = ULSAD.from_preset(job.preset, **job.overrides)
        model.fit(job.root, category=job.category, dataset=job.dataset, device=device,
                  out_dir=ckpt, progress=job.progress)  # fmt: skip
        trained = True
    return model, json.loads((ckpt / "training.json").read_text(encoding="utf-8")), trained


def failure(job: Job, message: str, **details: Any) -> dict[str, Any]:
    """The record of a failed job (written to its `.error.json`)."""
    return {"format": FORMAT, "dataset": job.dataset, "category": job.category,
            "variant": job.variant, "error": message, **details, "finished": now()}  # fmt: skip


def run_category(job: Job) -> dict[str, Any]:
    """Train (or resume) and evaluate one category; write and return its record.

    Never raises for a failing category (except KeyboardInterrupt): the error is written to
    `<category>.error.json` and returned as {"error": ...}.
    """
    if job.result_path.is_file():
        return json.loads(job.result_path.read_text(encoding="utf-8"))
    started_at = now()
    try:
        from ulsad.data import load_mask, load_split
        from ulsad.devices import resolve_device
        from ulsad.evaluate import evaluate

        device = resolve_device(job.device)
        model, training, trained = trained_model(job, device)
        samples = load_split(job.dataset, job.root, job.category, "test")
        started = time.perf_counter()
        metrics = evaluate(model, samples, batch_size=job.eval_batch_size,
                           progress=job.progress, load_mask=load_mask)  # fmt: skip
        eval_s = time.perf_counter() - started
        scores = metrics.pop("scores")
        record = {
            "format": FORMAT,
            "dataset": job.dataset,
            "category": job.category,
            "root": str(Path(job.root).resolve()),
            "variant": job.variant,
            "preset": job.preset,
            "overrides": job.overrides,
            "config": model.config.to_dict(),
            "recipe": job.recipe().to_dict(),
            "seed": job.recipe().seed,
            "metrics": metrics,
            "timings": {
                "train_s": training["seconds"],  # the trainer's: data, features, epochs
                "trained_in_this_run": trained,
                "eval_s": eval_s,
                "eval_ms_per_image": 1000.0 * eval_s / max(len(samples), 1),
            },
            "training": {k: v for k, v in training.items() if k != "heldout_scores"},
            "environment": environment(device),
            "started": started_at,
            "finished": now(),
            "scores": scores,
        }
        write_json(job.result_path, record)
        job.error_path.unlink(missing_ok=True)
        return json.loads(job.result_path.read_text(encoding="utf-8"))
    except Exception as error:  # isolate the category: record it, let the others run
        message = (
            str(error) if isinstance(error, ULSADError) else f"{type(error).__name__}: {error}"
        )
        record = failure(job, message, traceback=traceback.format_exc())
        write_json(job.error_path, record)
        return record
