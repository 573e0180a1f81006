"""Run benchmark jobs here, one after another, or on Ray, one task each; then rebuild the tables.

Finished jobs (their JSON exists) are skipped and a failing job is recorded while the others
continue, so re-running the same jobs resumes a run. With Ray every job is one task (one GPU each
when the cluster has GPUs, else one CPU); the tasks write their JSONs and the driver the tables.
On a multi-node cluster the dataset root and the results folder must be the same shared path on
every node. Progress is logged (`logging`, INFO) one line per finished job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ulsad.errors import ULSADError
from ulsad.experiments.jobs import Job, failure, run_category
from ulsad.experiments.provenance import write_json
from ulsad.experiments.tables import METRIC_COLUMNS, summarize

log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray")


@dataclass
class BenchmarkReport:
    """What `run_benchmark` did: finished, skipped (already done) and failed (category, variant)."""

    done: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (category, variant, error)
    summaries: list[Path] = field(default_factory=list)


def log_progress(job: Job, record: dict[str, Any], index: int, total: int) -> None:
    """One line per finished job: its main metrics and training time, or why it failed."""
    name = f"[{index}/{total}] {job.variant}/{job.category}"
    if "error" in record:
        log.error("%s: FAILED: %s", name, record["error"])
        return
    metrics = record["metrics"]
    shown = [f"{h} {100 * metrics[k]:.2f}" for k, h in METRIC_COLUMNS[:3] if k in metrics]
    log.info("%s: %s (%.0f s training)", name, ", ".join(shown), record["timings"]["train_s"])


def run_local(jobs: list[Job]) -> list[dict[str, Any]]:
    """The jobs' records, running them one after another in this process."""
    records = []
    for index, job in enumerate(jobs, 1):
        records.append(run_category(job))
        log_progress(job, records[-1], index, len(jobs))
    return records


def run_ray(jobs: list[Job], address: str | None) -> list[dict[str, Any]]:
    """The jobs' records, one Ray task per job (num_gpus=1 on a cluster with GPUs, else num_cpus=1)."""
    try:
        import ray
    except ImportError:
        raise ULSADError(
            "{executor_ray} needs Ray: pip install 'ulsad[ray]'.", executor_ray='executor="ray"'
        ) from None
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
                write_json(job.result_path if "error" not in record else job.error_path, record)
            except ray.exceptions.RayError as error:  # the worker died (e.g. out of memory)
                record = failure(job, f"Ray task failed: {error}")
                write_json(job.error_path, record)
            records[index] = record
            log_progress(job, record, len(records), len(jobs))
        return [records[i] for i in range(len(jobs))]
    finally:
        if started_here:
            ray.shutdown()


def run_benchmark(
    jobs: list[Job], executor: str = "local", address: str | None = None
) -> BenchmarkReport:
    """Run the jobs (skipping finished ones), then rebuild the summary tables of their folders."""
    if executor not in EXECUTORS:
        raise ULSADError(f"unknown executor {executor!r}; choose {' or '.join(EXECUTORS)}.")
    report = BenchmarkReport()
    todo = []
    for job in jobs:
        if job.result_path.is_file():
            report.skipped.append((job.category, job.variant))
        else:
            todo.append(job)
    if report.skipped:
        log.info(
            "Skipping %d finished category run(s) (delete their JSON to redo).", len(report.skipped)
        )
    if todo:
        records = run_local(todo) if executor == "local" else run_ray(todo, address)
        for job, record in zip(todo, records, strict=True):
            if "error" in record:
                report.failed.append((job.category, job.variant, record["error"]))
            else:
                report.done.append((job.category, job.variant))
    outs = {Path(job.out) for job in jobs}
    report.summaries = [p for out in sorted(outs) for p in summarize(out)]
    return report
