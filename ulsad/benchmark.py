"""Benchmark runner: train and evaluate every category of a dataset, resumably, here or on Ray.

`ulsad benchmark --dataset mvtec_ad --root ROOT --preset paper --out RESULTS` reproduces one of
the paper's tables. Layout of RESULTS (one folder per variant, "full" unless `--ablation`):

    <variant>/<category>.json          metrics (per defect type; LOCO: logical / structural / both),
                                       timings, full config, seed, git commit, hardware, versions
    <variant>/<category>.error.json    why a category failed (deleted once it succeeds)
    <variant>/<category>/checkpoint/   the trained model (and its resume state while training)
    <variant>/summary.csv, summary.md  one row per category, dataset means, the paper's numbers
    variants.csv, variants.md          with two or more variants: the ablation table

Re-running the same command skips categories whose JSON exists and resumes interrupted training;
a category that fails is recorded and the others continue. With `executor="ray"` every
(category, variant) is one Ray task (one GPU each when the cluster has GPUs, else one CPU); the
tasks write their JSONs and the driver writes the tables. On a multi-node cluster ROOT and
RESULTS must be the same shared path on every node.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ulsad.errors import ULSADError

if TYPE_CHECKING:
    from ulsad.config import ULSADConfig

FORMAT = "ulsad-benchmark-1"
EXIT_FAILED = 1

# The paper's dataset means (percent; Patra & Ben Taieb 2024, see ../shared/ULSAD.md). The paper
# text available to us gives no per-category numbers, so only means are compared.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "mvtec_ad": {"image_auroc": 97.65, "pixel_auroc": 97.61},
    "visa": {"image_auroc": 92.46, "pixel_auroc": 98.24},
    "mpdd": {"image_auroc": 95.73, "pixel_auroc": 97.45},
    "btad": {"pixel_auroc": 96.73},
    "mvtec_loco": {"image_auroc": 84.1},
}
# The paper's seeds: 40, except 42 for MPDD (applied unless the seed is set explicitly).
PAPER_SEEDS: dict[str, int] = {"mpdd": 42}

# The paper's ablation (DFR -> + cosine loss -> + global branch -> + attention loss) as config
# overrides, plus the refined objective without its cosine terms.
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "dfr": {"global_branch": False, "attention_loss": False, "cosine_loss": False},
    "dfr_cosine": {"global_branch": False, "attention_loss": False},
    "global": {"attention_loss": False},
    "lambda0": {"lambda_local": 0.0, "lambda_attention": 0.0, "lambda_global": 0.0},
}

# Summary columns: (key, header); metrics are shown in percent.
METRIC_COLUMNS = [
    ("image_auroc", "image AUROC"),
    ("pixel_auroc", "pixel AUROC"),
    ("aupro", "AUPRO"),
    ("image_f1_max", "image F1-max"),
    ("pixel_f1_max", "pixel F1-max"),
]
GROUP_COLUMNS = [  # MVTec LOCO: logical and structural anomalies separately
    ("logical_image_auroc", "logical image AUROC"),
    ("structural_image_auroc", "structural image AUROC"),
    ("spro_0.05", "sPRO@0.05"),
    ("logical_spro_0.05", "logical sPRO@0.05"),
    ("structural_spro_0.05", "structural sPRO@0.05"),
]
TIMING_COLUMNS = [("train_s", "train s"), ("eval_ms_per_image", "eval ms/img")]


@dataclass(frozen=True)
class Job:
    """One (category, variant) to train and evaluate; picklable, so it can be sent to Ray."""

    dataset: str
    root: str
    category: str
    preset: str
    variant: str
    overrides: dict[str, Any]
    out: str  # RESULTS_DIR
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
        from ulsad.config import preset_config

        return preset_config(self.preset, **self.overrides)


@dataclass
class BenchmarkReport:
    """What `run_benchmark` did: finished, skipped (already done) and failed (category, variant)."""

    done: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (category, variant, error)
    summaries: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------------- environment
def _git_commit() -> dict[str, Any]:
    """HEAD of the git checkout holding this package and whether it has local changes, if any."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=here, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: Any) -> dict[str, Any]:
    """Versions and hardware recorded with every result."""
    import torch

    import ulsad

    cuda = torch.cuda.is_available()
    return {
        "ulsad": ulsad.__version__,
        **_git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "device": str(device),
    }


# --------------------------------------------------------------------------------- one category
def jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become null (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path: Path, record: dict[str, Any]) -> None:
    from ulsad.files import write_text_atomic

    write_text_atomic(path, json.dumps(jsonable(record), indent=2) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _trained_model(job: Job, device: Any) -> tuple[Any, dict[str, Any], bool]:
    """(model, its training.json, trained now?): load a finished checkpoint, or fit (resuming)."""
    from ulsad.model import ULSAD

    ckpt = job.checkpoint_dir
    config = job.config()
    if (ckpt / "training.json").is_file() and (ckpt / "model.safetensors").is_file():
        model = ULSAD.from_pretrained(ckpt, device=device)
        if not config.matches(model.config):
            raise ULSADError(
                f"{ckpt} holds a model trained with another config: delete that folder or use "
                "another --out."
            )
        training = json.loads((ckpt / "training.json").read_text(encoding="utf-8"))
        return model, training, False
    model = ULSAD.from_preset(job.preset, **job.overrides)
    model.fit(job.root, category=job.category, dataset=job.dataset, device=device,
              out_dir=ckpt, progress=job.progress)  # fmt: skip
    training = json.loads((ckpt / "training.json").read_text(encoding="utf-8"))
    return model, training, True


def run_category(job: Job) -> dict[str, Any]:
    """Train (or resume) and evaluate one category; write and return its record.

    Never raises for a failing category (except KeyboardInterrupt): the error is written to
    `<category>.error.json` and returned as {"error": ...}.
    """
    if job.result_path.is_file():
        return json.loads(job.result_path.read_text(encoding="utf-8"))
    started_at = _now()
    try:
        from ulsad.data import load_mask, load_split
        from ulsad.devices import resolve_device
        from ulsad.evaluate import evaluate

        device = resolve_device(job.device)
        model, training, trained = _trained_model(job, device)
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
            "seed": model.config.seed,
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
            "finished": _now(),
            "scores": scores,
        }
        _write_json(job.result_path, record)
        job.error_path.unlink(missing_ok=True)
        return json.loads(job.result_path.read_text(encoding="utf-8"))
    except Exception as error:  # isolate the category: record it, let the others run
        message = (
            str(error) if isinstance(error, ULSADError) else f"{type(error).__name__}: {error}"
        )
        record = {"format": FORMAT, "dataset": job.dataset, "category": job.category,
                  "variant": job.variant, "error": message, "traceback": traceback.format_exc(),
                  "finished": _now()}  # fmt: skip
        _write_json(job.error_path, record)
        return record


# --------------------------------------------------------------------------------- the runner
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
        raise ULSADError(f"no {dataset} categories found under {root}; check --root and --dataset.")
    jobs = []
    for variant in variants:
        for category in categories:
            job = Job(dataset, str(root), category, preset, variant, {**ABLATIONS[variant], **user},
                      str(out), device, eval_batch_size, progress)  # fmt: skip
            _check_previous(job, job.config())
            jobs.append(job)
    return jobs


def _check_previous(job: Job, config: ULSADConfig) -> None:
    """A result already in RESULTS_DIR must come from the same dataset and config (else: error)."""
    if not job.result_path.is_file():
        return
    previous = json.loads(job.result_path.read_text(encoding="utf-8"))
    old, new = previous.get("config", {}), json.loads(json.dumps(config.to_dict()))
    chosen = config.chosen_in_training()
    changed = sorted(
        k
        for k in set(old) | set(new)
        if k != "preset" and k not in chosen and old.get(k) != new.get(k)
    )
    if previous.get("dataset") != job.dataset or changed:
        what = ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in changed[:4])
        what = what or f"dataset {previous.get('dataset')} -> {job.dataset}"
        raise ULSADError(
            f"{job.result_path} comes from another setup ({what}); use another --out, or delete "
            "it to recompute."
        )


def _log(job: Job, record: dict[str, Any], index: int, total: int) -> None:
    name = f"[{index}/{total}] {job.variant}/{job.category}"
    if "error" in record:
        print(f"{name}: FAILED: {record['error']}", file=sys.stderr, flush=True)
        return
    metrics = record["metrics"]
    shown = [f"{h} {100 * metrics[k]:.2f}" for k, h in METRIC_COLUMNS[:3] if k in metrics]
    print(f"{name}: {', '.join(shown)} ({record['timings']['train_s']:.0f} s training)", flush=True)


def _run_local(jobs: list[Job]) -> list[dict[str, Any]]:
    records = []
    for index, job in enumerate(jobs, 1):
        records.append(run_category(job))
        _log(job, records[-1], index, len(jobs))
    return records


def _run_ray(jobs: list[Job], address: str | None) -> list[dict[str, Any]]:
    """One Ray task per job (num_gpus=1 on a cluster with GPUs, else num_cpus=1)."""
    try:
        import ray
    except ImportError:
        raise ULSADError("--executor ray needs Ray: pip install 'ulsad[ray]'.") from None
    started_here = not ray.is_initialized()
    try:
        if started_here and address:
            ray.init(address=address)
        elif started_here:
            ray.init(include_dashboard=False)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ULSADError(f"cannot start or reach {where}: {error}") from error
    try:
        resources = {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) else {"num_cpus": 1}
        task = ray.remote(run_category).options(max_retries=0, **resources)
        pending = {task.remote(job): i for i, job in enumerate(jobs)}
        records: dict[int, dict[str, Any]] = {}
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ref)
            job = jobs[index]
            try:
                record = ray.get(ref)
                _write_json(job.result_path if "error" not in record else job.error_path, record)
            except ray.exceptions.RayError as error:  # the worker died (e.g. out of memory)
                record = {"format": FORMAT, "dataset": job.dataset, "category": job.category,
                          "variant": job.variant, "error": f"Ray task failed: {error}",
                          "finished": _now()}  # fmt: skip
                _write_json(job.error_path, record)
            records[index] = record
            _log(job, record, len(records), len(jobs))
        return [records[i] for i in range(len(jobs))]
    finally:
        if started_here:
            ray.shutdown()


def run_benchmark(
    jobs: list[Job], executor: str = "local", address: str | None = None
) -> BenchmarkReport:
    """Run the jobs (skipping finished ones), then rebuild the summary tables of RESULTS_DIR."""
    if executor not in ("local", "ray"):
        raise ULSADError(f"unknown executor {executor!r}; choose local or ray.")
    report = BenchmarkReport()
    todo = []
    for job in jobs:
        if job.result_path.is_file():
            report.skipped.append((job.category, job.variant))
        else:
            todo.append(job)
    if report.skipped:
        print(
            f"Skipping {len(report.skipped)} finished category run(s) (delete their JSON to redo)."
        )
    if todo:
        records = _run_local(todo) if executor == "local" else _run_ray(todo, address)
        for job, record in zip(todo, records, strict=True):
            if "error" in record:
                report.failed.append((job.category, job.variant, record["error"]))
            else:
                report.done.append((job.category, job.variant))
    outs = {Path(job.out) for job in jobs}
    report.summaries = [p for out in sorted(outs) for p in summarize(out)]
    return report


# --------------------------------------------------------------------------------- summaries
def _row(record: dict[str, Any]) -> dict[str, Any]:
    """Summary values of one category record (metrics in percent)."""
    metrics = record["metrics"]
    row: dict[str, Any] = {"dataset": record["dataset"], "category": record["category"]}
    for key, _ in METRIC_COLUMNS:
        row[key] = 100 * metrics[key] if metrics.get(key) is not None else None
    groups = metrics.get("per_group", {})
    row["spro_0.05"] = 100 * metrics["spro_0.05"] if metrics.get("spro_0.05") is not None else None
    for group in ("logical", "structural"):
        values = groups.get(group, {})
        for key in ("image_auroc", "spro_0.05"):
            value = values.get(key)
            row[f"{group}_{key}"] = None if value is None else 100 * value
    row["train_s"] = record["timings"]["train_s"]
    row["eval_ms_per_image"] = record["timings"]["eval_ms_per_image"]
    return row


def _mean_row(dataset: str, rows: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """Mean over categories; a column is left empty unless every category has a value."""
    from ulsad.data import get_dataset

    official = len(get_dataset(dataset).categories) or len(rows)
    mean = {"dataset": dataset, "category": f"mean ({len(rows)}/{official})", "mean": True,
            "n_categories": len(rows), "n_official": official}  # fmt: skip
    for key in keys:
        values = [r[key] for r in rows]
        mean[key] = None if any(v is None for v in values) else sum(values) / len(values)
    for key, value in PAPER_RESULTS.get(dataset, {}).items():
        mean[f"paper_{key}"] = value
    return mean


def _table(records: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """(columns, rows): the category rows of each dataset followed by its mean row."""
    rows = [_row(r) for r in sorted(records, key=lambda r: (r["dataset"], r["category"]))]
    extra = [c for c in GROUP_COLUMNS if any(r[c[0]] is not None for r in rows)]
    columns = [("dataset", "dataset"), ("category", "category"), *METRIC_COLUMNS, *extra,
               *TIMING_COLUMNS, ("paper_image_auroc", "paper image AUROC"),
               ("paper_pixel_auroc", "paper pixel AUROC")]  # fmt: skip
    keys = [k for k, _ in [*METRIC_COLUMNS, *extra, *TIMING_COLUMNS]]
    table = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        table += [*mine, _mean_row(dataset, mine, keys)]
    return columns, table


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _commit(record: dict[str, Any]) -> str:
    env = record.get("environment", {})
    commit = (env.get("git_commit") or "unknown")[:10]
    return commit + ("+local changes" if env.get("git_dirty") else "")


def _setup_line(records: list[dict[str, Any]]) -> str:
    """One line on how the results were made; values that differ between categories are listed."""

    def values(get) -> str:
        found = sorted({str(get(r)) for r in records})
        return " / ".join(found)

    def cfg(key: str):
        return lambda r: r.get("config", {}).get(key)

    def env(key: str):
        return lambda r: r.get("environment", {}).get(key)

    hardware = values(lambda r: r.get("environment", {}).get("cuda_device") or env("cpu")(r))
    return (
        f"preset {values(lambda r: r.get('preset'))} ({values(cfg('backbone'))}, "
        f"C={values(cfg('channels'))}, {values(cfg('image_size'))} px, "
        f"{values(cfg('epochs'))} epochs, seed {values(cfg('seed'))}), ulsad {values(env('ulsad'))}, "
        f"commit {values(_commit)}, device {values(env('device'))} ({hardware}). "
        "Metrics in percent; the paper's numbers are dataset means; full configs in the JSONs."
    )


def _markdown(variant: str, columns, table, records, errors) -> str:
    lines = [f"# Benchmark: variant `{variant}`", ""]
    if records:
        lines += [_setup_line(records), ""]
    lines += ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        cells = [_fmt(row.get(k), 1 if k in ("train_s", "eval_ms_per_image") else 2)
                 for k, _ in columns]  # fmt: skip
        if row.get("mean"):
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.get("mean") and r["n_categories"] < r["n_official"] for r in table):
        lines += ["", "Means over fewer categories than the dataset has are not comparable with "
                  "the paper's means."]  # fmt: skip
    if errors:
        lines += ["", "Failed (see `<category>.error.json`; re-run the same command to retry):"]
        lines += [f"- {e['dataset']}/{e['category']}: {e['error']}" for e in errors]
    return "\n".join(lines) + "\n"


def _load_records(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    records, errors = [], []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ULSADError(
                f"{path} is not readable JSON ({error}): delete it and re-run."
            ) from error
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            continue
        (errors if path.name.endswith(".error.json") else records).append(record)
    done = {(r["dataset"], r["category"]) for r in records}
    return records, [e for e in errors if (e["dataset"], e["category"]) not in done]


def summarize(out: str | Path) -> list[Path]:
    """(Re)build `<variant>/summary.{csv,md}` (and `variants.*` for 2+ variants) from the JSONs."""
    from ulsad.files import write_text_atomic

    out = Path(out)
    if not out.is_dir():
        raise ULSADError(f"no results folder {out}; pass the --out of a benchmark run.")
    written, means = [], {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        records, errors = _load_records(folder)
        if not records and not errors:
            continue
        columns, table = _table(records)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([k for k, _ in columns])
        writer.writerows([_fmt(row.get(k), 4) for k, _ in columns] for row in table)
        write_text_atomic(folder / "summary.csv", buffer.getvalue())
        write_text_atomic(
            folder / "summary.md", _markdown(folder.name, columns, table, records, errors)
        )
        written += [folder / "summary.csv", folder / "summary.md"]
        means[folder.name] = [r for r in table if r.get("mean")]
    if not written:
        raise ULSADError(
            f"no benchmark results under {out} (expected {out}/<variant>/<category>.json)."
        )
    if len(means) > 1:
        written += _write_variants(out, means)
    return written


def _write_variants(out: Path, means: dict[str, list[dict[str, Any]]]) -> list[Path]:
    """The ablation table: one row per (variant, dataset) with the dataset means."""
    from ulsad.files import write_text_atomic

    keys = ["image_auroc", "pixel_auroc", "aupro"]
    order = [v for v in ABLATIONS if v in means] + sorted(set(means) - set(ABLATIONS))
    rows = [(v, m) for v in order for m in means[v]]
    header = ["variant", "dataset", "categories", *keys]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    cells = [[v, m["dataset"], f"{m['n_categories']}/{m['n_official']}"] for v, m in rows]
    writer.writerows(
        [*c, *(_fmt(m.get(k), 4) for k in keys)] for c, (_, m) in zip(cells, rows, strict=True)
    )
    lines = ["# Ablation: dataset means per variant (percent)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # fmt: skip
    lines += ["| " + " | ".join([*c, *(_fmt(m.get(k), 2) for k in keys)]) + " |"
              for c, (_, m) in zip(cells, rows, strict=True)]  # fmt: skip
    write_text_atomic(out / "variants.csv", buffer.getvalue())
    write_text_atomic(out / "variants.md", "\n".join(lines) + "\n")
    return [out / "variants.csv", out / "variants.md"]


# --------------------------------------------------------------------------------- command line
def cmd_benchmark(args: argparse.Namespace) -> int:
    from ulsad.cli import _parse_overrides

    if args.summarize:
        for path in summarize(args.summarize):
            if path.suffix == ".md":
                print(path.read_text(encoding="utf-8"))
        return 0
    missing = [f"--{n}" for n in ("dataset", "root", "out") if getattr(args, n) is None]
    if missing:
        raise ULSADError(f"benchmark needs {', '.join(missing)} (or --summarize RESULTS_DIR).")
    jobs = make_jobs(args.dataset, args.root, args.out, args.categories, preset=args.preset,
                     variants=args.ablation, overrides=_parse_overrides(args.set),
                     epochs=args.epochs, device=args.device, eval_batch_size=args.batch_size,
                     progress=args.executor == "local")  # fmt: skip
    report = run_benchmark(jobs, args.executor, args.address)
    for path in report.summaries:
        if path.suffix == ".md" and path.parent.name in {j.variant for j in jobs}:
            print(f"\n{path}:\n{path.read_text(encoding='utf-8')}")
    if report.failed:
        print(f"error: {len(report.failed)} category run(s) failed:", file=sys.stderr)
        for category, variant, error in report.failed:
            print(f"  {variant}/{category}: {error}", file=sys.stderr)
        print("Fix the cause and run the same command again (finished ones are skipped).",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ulsad.data.download import download

    path = download(args.dataset, args.dest, accept_licence=args.accept_licence)
    print(f"{args.dataset} is in {path}: pass --root {path}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register the `benchmark` and `download` subcommands on the CLI's subparsers."""
    from ulsad.cli import positive_int
    from ulsad.config import PRESETS
    from ulsad.data import DATASETS
    from ulsad.data.download import SOURCES

    p = sub.add_parser("benchmark", help="train + evaluate every category; JSONs + summary tables")
    p.add_argument("--dataset", choices=list(DATASETS), help="on-disk layout of --root")
    p.add_argument("--root", help="dataset root (the folder holding the category folders)")
    p.add_argument("--categories", nargs="+", help="default: every category found under --root")
    p.add_argument("--preset", default="lite", choices=sorted(PRESETS))
    p.add_argument("--ablation", nargs="+", default=["full"], metavar="NAME",
                   help=f"variant(s): {', '.join(ABLATIONS)}, or all (default: full)")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, help="default: the preset's")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set image_size=128")  # fmt: skip
    p.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="evaluation batch size")
    p.add_argument("--out", help="results folder (re-use it to resume)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: categories one after another; ray: one Ray task each")  # fmt: skip
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--summarize", metavar="RESULTS_DIR",
                   help="only rebuild the summary tables from RESULTS_DIR's JSONs")  # fmt: skip
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("download", help="download and extract a benchmark dataset")
    p.add_argument("dataset", choices=list(SOURCES))
    p.add_argument("--dest", help="parent folder (default: $ULSAD_DATA or ~/.cache/ulsad/datasets)")
    p.add_argument("--accept-licence", action="store_true",
                   help="accept the dataset's licence (MVTec datasets ask for it)")  # fmt: skip
    p.set_defaults(func=cmd_download)
