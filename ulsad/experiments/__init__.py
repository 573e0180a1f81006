"""Benchmark runner: train and evaluate every category of a dataset, resumably, here or on Ray.

`make_jobs("mvtec_ad", ROOT, RESULTS, preset="paper")` then `run_benchmark(jobs)` reproduces one
of the paper's tables (the CLI: `ulsad benchmark`). Layout of RESULTS (one folder per variant,
"full" unless other `variants` are asked for):

    <variant>/<category>.json          metrics (per defect type; LOCO: logical / structural / both),
                                       timings, full config, seed, git commit, hardware, versions
    <variant>/<category>.error.json    why a category failed (deleted once it succeeds)
    <variant>/<category>/checkpoint/   the trained model (and its resume state while training)
    <variant>/summary.csv, summary.md  one row per category, dataset means, the paper's numbers
    variants.csv, variants.md          with two or more variants: the ablation table

Re-running the same jobs skips categories whose JSON exists and resumes interrupted training;
a category that fails is recorded and the others continue.

Modules: `paper` (the paper's numbers, seeds and ablation variants), `provenance` (environment,
git commit, strict JSON), `jobs` (one category: train, evaluate, record), `runner` (local and Ray
execution), `tables` (summary CSV and Markdown).
"""

from ulsad.experiments.jobs import FORMAT, Job, make_jobs, run_category
from ulsad.experiments.paper import ABLATIONS, PAPER_RESULTS, PAPER_SEEDS
from ulsad.experiments.provenance import environment, jsonable, write_json
from ulsad.experiments.runner import EXECUTORS, BenchmarkReport, run_benchmark
from ulsad.experiments.tables import summarize

__all__ = [
    "ABLATIONS",
    "EXECUTORS",
    "FORMAT",
    "PAPER_RESULTS",
    "PAPER_SEEDS",
    "BenchmarkReport",
    "Job",
    "environment",
    "jsonable",
    "make_jobs",
    "run_benchmark",
    "run_category",
    "summarize",
    "write_json",
]
