"""What the benchmark scripts share: machine description, timing (`ulsad.experiments.timing`),
peak memory, tables, JSON.

The scripts run as modules from the repository root (`python -m benchmarks.inference`), so they
import `benchmarks.common` and the eager reference `tests.reference` without touching sys.path,
and `ulsad` is the installed package.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path
from typing import Any

import torch

# Timing lives with the experiments (the efficiency notebook measures with it too); the scripts
# import it from here, as before.
from ulsad.experiments.timing import interleaved, matmul_gflops, median, synchronize, timed

__all__ = ["REPOSITORY", "interleaved", "machine", "malloc_env", "matmul_gflops", "median",
           "peak_rss_mb", "python_module", "status_mb", "synchronize", "table", "timed",
           "write_json"]  # fmt: skip

REPOSITORY = Path(__file__).resolve().parents[1]


def python_module(module: str) -> list[str]:
    """The command that runs `module` (e.g. "benchmarks.inference") as `python -m`, from
    REPOSITORY (pass it as cwd): how a script re-runs itself as a memory probe."""
    return [sys.executable, "-m", module]


def malloc_env() -> dict[str, str]:
    """glibc malloc settings from the environment (`MALLOC_*_`, `GLIBC_TUNABLES`): fit times
    depend on them. With freed memory kept (`MALLOC_MMAP_THRESHOLD_=33554432
    MALLOC_TRIM_THRESHOLD_=1073741824`) PatchCore 10%'s fit on metal_plate took 24 s instead of
    105 s, ulsad's 51 s instead of 54 (docs/results.md, the peers tables)."""
    return {
        k: v
        for k, v in os.environ.items()
        if (k.startswith("MALLOC_") and k.endswith("_")) or k == "GLIBC_TUNABLES"
    }


def machine(device: torch.device) -> dict[str, Any]:
    """Where the numbers come from: hardware, versions, threads and the machine's load."""
    from ulsad.experiments.provenance import environment

    return {
        **environment(device),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "malloc_env": malloc_env(),
        "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def status_mb(field: str, pid: int | str = "self") -> float | None:
    """A memory field of /proc/<pid>/status in MiB (Linux: VmRSS, VmHWM, RssFile...); None where
    there is none."""
    status = Path(f"/proc/{pid}/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**10
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB).

    Linux: VmHWM, which starts afresh at exec (ru_maxrss would include the parent's peak)."""
    peak_mb = status_mb("VmHWM")
    if peak_mb is not None:
        return peak_mb
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table; `columns` are (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        line = []
        for key, _, fmt in columns:
            value = row.get(key)
            line.append("-" if value is None else format(value, fmt))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in cells]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str | Path | None, report: dict[str, Any]) -> None:
    report.setdefault("machine", {})["load_average_end"] = (
        os.getloadavg() if hasattr(os, "getloadavg") else None
    )
    if path is not None:
        from ulsad.experiments.provenance import write_json as write_strict_json

        write_strict_json(path, report)
        print(f"Wrote {path}")
