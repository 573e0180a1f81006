"""Summary tables of a results folder, rebuilt from its JSON records (CSV and Markdown).

<variant>/summary.csv, summary.md  one row per category, dataset means, the paper's numbers
variants.csv, variants.md          with two or more variants: the ablation table
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ulsad.errors import ULSADError
from ulsad.experiments.jobs import FORMAT
from ulsad.experiments.paper import ABLATIONS, PAPER_RESULTS
from ulsad.files import atomic_path, write_text_atomic

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
PAPER_COLUMNS = [("paper_image_auroc", "paper image AUROC"),
                 ("paper_pixel_auroc", "paper pixel AUROC")]  # fmt: skip
ABLATION_KEYS = ["image_auroc", "pixel_auroc", "aupro"]


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A CSV file with a header row, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (reports here, and the notebooks' tables); cells written with `str`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def cell(value: Any, digits: int) -> str:
    """A table cell: floats with `digits` decimals, None empty."""
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def category_row(record: dict[str, Any]) -> dict[str, Any]:
    """Summary values of one category record (metrics in percent)."""
    metrics = record["metrics"]
    row: dict[str, Any] = {"dataset": record["dataset"], "category": record["category"]}
    for key in [k for k, _ in METRIC_COLUMNS] + ["spro_0.05"]:
        row[key] = percent(metrics.get(key))
    for group in ("logical", "structural"):
        values = metrics.get("per_group", {}).get(group, {})
        for key in ("image_auroc", "spro_0.05"):
            row[f"{group}_{key}"] = percent(values.get(key))
    for key, _ in TIMING_COLUMNS:
        row[key] = record["timings"][key]
    return row


def mean_row(dataset: str, rows: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
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


def summary_table(
    records: list[dict[str, Any]],
) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """(columns, rows): the category rows of each dataset followed by its mean row."""
    rows = [category_row(r) for r in sorted(records, key=lambda r: (r["dataset"], r["category"]))]
    groups = [c for c in GROUP_COLUMNS if any(r[c[0]] is not None for r in rows)]
    values = [*METRIC_COLUMNS, *groups, *TIMING_COLUMNS]
    columns = [("dataset", "dataset"), ("category", "category"), *values, *PAPER_COLUMNS]
    table = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        table += [*mine, mean_row(dataset, mine, [k for k, _ in values])]
    return columns, table


def commit(record: dict[str, Any]) -> str:
    """The git commit a record was made with (10 digits), "+local changes" if it had some."""
    env = record.get("environment", {})
    return (env.get("git_commit") or "unknown")[:10] + (
        "+local changes" if env.get("git_dirty") else ""
    )


def setup_line(records: list[dict[str, Any]]) -> str:
    """One line on how the results were made; values that differ between categories are listed."""

    def values(get) -> str:
        return " / ".join(sorted({str(get(r)) for r in records}))

    def config(key: str) -> str:  # the recipe's own record, else an earlier version's config
        return values(lambda r: r.get("recipe", r.get("config", {})).get(key, r["config"].get(key)))

    def env(key: str) -> str:
        return values(lambda r: r.get("environment", {}).get(key))

    hardware = values(lambda r: (e := r.get("environment", {})).get("cuda_device") or e.get("cpu"))
    return (
        f"preset {values(lambda r: r.get('preset'))} ({config('backbone')}, "
        f"C={config('channels')}, {config('image_size')} px, "
        f"{config('epochs')} epochs, seed {config('seed')}), ulsad {env('ulsad')}, "
        f"commit {values(commit)}, device {env('device')} ({hardware}). "
        "Metrics in percent; the paper's numbers are dataset means; full configs in the JSONs."
    )


def summary_markdown(variant: str, columns, table, records, errors) -> str:
    """The Markdown summary of one variant: setup, table, caveats, failed categories."""
    lines = [f"# Benchmark: variant `{variant}`", ""]
    if records:
        lines += [setup_line(records), ""]
    cells = []
    for row in table:
        line = [cell(row.get(k), 1 if k in ("train_s", "eval_ms_per_image") else 2)
                for k, _ in columns]  # fmt: skip
        cells.append([f"**{c}**" if c else c for c in line] if row.get("mean") else line)
    lines.append(markdown_table([h for _, h in columns], cells))
    if any(r.get("mean") and r["n_categories"] < r["n_official"] for r in table):
        lines += ["", "Means over fewer categories than the dataset has are not comparable with "
                  "the paper's means."]  # fmt: skip
    if errors:
        lines += ["", "Failed (see `<category>.error.json`; re-run the same command to retry):"]
        lines += [f"- {e['dataset']}/{e['category']}: {e['error']}" for e in errors]
    return "\n".join(lines) + "\n"


def load_records(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(results, failures) of one variant folder; failures of categories that later succeeded are
    left out."""
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
    out = Path(out)
    if not out.is_dir():
        raise ULSADError(
            f"no results folder {out}; pass the results folder ({{out}}) of a benchmark run.",
            out="out",
        )
    written, means = [], {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        records, errors = load_records(folder)
        if not records and not errors:
            continue
        columns, table = summary_table(records)
        write_csv(folder / "summary.csv", [k for k, _ in columns],
                  [[cell(row.get(k), 4) for k, _ in columns] for row in table])  # fmt: skip
        markdown = summary_markdown(folder.name, columns, table, records, errors)
        write_text_atomic(folder / "summary.md", markdown)
        written += [folder / "summary.csv", folder / "summary.md"]
        means[folder.name] = [r for r in table if r.get("mean")]
    if not written:
        raise ULSADError(
            f"no benchmark results under {out} (expected {out}/<variant>/<category>.json)."
        )
    if len(means) > 1:
        written += write_ablation_table(out, means)
    return written


def write_ablation_table(out: Path, means: dict[str, list[dict[str, Any]]]) -> list[Path]:
    """`variants.{csv,md}`: one row per (variant, dataset) with the dataset means."""
    order = [v for v in ABLATIONS if v in means] + sorted(set(means) - set(ABLATIONS))
    rows = [(v, m) for v in order for m in means[v]]
    header = ["variant", "dataset", "categories", *ABLATION_KEYS]

    def cells(digits: int) -> list[list[str]]:
        return [[v, m["dataset"], f"{m['n_categories']}/{m['n_official']}",
                 *(cell(m.get(k), digits) for k in ABLATION_KEYS)] for v, m in rows]  # fmt: skip

    write_csv(out / "variants.csv", header, cells(4))
    lines = [
        "# Ablation: dataset means per variant (percent)",
        "",
        markdown_table(header, cells(2)),
    ]
    write_text_atomic(out / "variants.md", "\n".join(lines) + "\n")
    return [out / "variants.csv", out / "variants.md"]
