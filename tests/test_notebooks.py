"""The notebooks: committed clean and in sync with their jupytext source, and runnable end to end.

Every notebook is executed in smoke mode (ULSAD_SMOKE=1: tiny synthetic data, plus a few real
images where ../shared/data is present) with nbclient, from notebooks/ as working directory, on
the `python3` kernel of the interpreter running the tests. The last cell each notebook ends with
defines `summary`; the test appends a cell that prints it as JSON and checks its numbers.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
REAL_DATA = REPO.parent / "shared" / "data"
EXPECTED = [
    "00_quickstart",
    "01_mvtec_ad",
    "02_mvtec_loco",
    "03_visa",
    "04_mpdd",
    "05_btad",
    "06_ablations",
    "07_efficiency",
]
NOTEBOOKS = [NOTEBOOK_DIR / f"{name}.ipynb" for name in EXPECTED]
SMOKE_SWITCH = 'SMOKE = SMOKE or os.environ.get("ULSAD_SMOKE") == "1"'
CELL_TIMEOUT_S = 300
PLOTLY = "application/vnd.plotly.v1+json"


def execute(nb) -> None:
    """Run every cell in the notebooks' folder; CellExecutionError (cell and traceback) on error."""
    from nbclient import NotebookClient

    NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    ).execute()


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_every_notebook_is_committed():
    found = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert found == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_one_parameters_cell(path):
    nb = read(path)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    with_outputs = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not with_outputs, f"code cells {with_outputs} have outputs: clear them before committing"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells are tagged parameters"
    params = nb.cells[tagged[0]]
    assert params.cell_type == "code" and "SMOKE = False" in params.source
    assert SMOKE_SWITCH in nb.cells[tagged[0] + 1].source  # ULSAD_SMOKE=1 overrides the cell


def test_notebooks_match_their_jupytext_source():
    import jupytext

    sources = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
    assert [p.stem for p in sources] == EXPECTED
    for source in sources:
        built = jupytext.read(source)  # what `jupytext --sync` writes into the .ipynb
        committed = read(source.with_suffix(".ipynb"))
        assert built.metadata.kernelspec == committed.metadata.kernelspec
        assert [(c.cell_type, c.source, c.metadata) for c in committed.cells] == [
            (c.cell_type, c.source, c.metadata) for c in built.cells
        ], f"{source.stem}.ipynb differs from {source.name}: run jupytext --sync notebooks/*.py"


# ------------------------------------------------------------------------------ execution
def committed_full_runs(dataset: str) -> int:
    folder = NOTEBOOK_DIR / "full_runs" / dataset
    records = [json.loads(p.read_text()) for p in folder.glob("*/*.json")]
    return sum(r.get("format") == "ulsad-benchmark-1" and "metrics" in r for r in records)


def in_unit_range(*values) -> bool:
    return all(v is not None and 0.0 <= v <= 1.0 for v in values)


def check_quickstart(s):
    assert s["images"] == len(s["scores"]) == len(s["labels"]) == 6
    assert sorted(s["labels"]) == [0, 0, 0, 1, 1, 1]
    assert all(math.isfinite(x) for x in s["scores"])
    thresholds = s["thresholds"]
    assert thresholds["checkpoint default"] > 0  # calibrated on held-out good images
    scores, labels = s["scores"], s["labels"]

    def f1(threshold: float) -> float:  # flagged: score > threshold, as Prediction.is_anomalous
        tp = sum(x > threshold and y == 1 for x, y in zip(scores, labels, strict=True))
        fp = sum(x > threshold and y == 0 for x, y in zip(scores, labels, strict=True))
        return 2 * tp / (2 * tp + fp + labels.count(1) - tp)

    best = thresholds["best F1 on these images (optimistic)"]
    assert f1(best) == max(f1(x - 1e-9) for x in scores)
    good = [x for x, y in zip(s["scores"], s["labels"], strict=True) if y == 0]
    assert min(good) <= thresholds["5% false alarms on good images"] <= max(good)


def check_dataset(dataset: str, real: str | None = None):
    def check(s):
        assert s["dataset"] == dataset
        expected = ["synthetic"]
        if real and (REAL_DATA / dataset / real).is_dir():
            expected = sorted([real, "synthetic"])
            assert s["category"] == real
        assert s["categories"] == expected
        assert s["benchmark_done"] + s["benchmark_skipped"] == len(expected)
        assert s["benchmark_skipped"] == 1  # the category trained step by step is reused
        assert s["full_runs"] == committed_full_runs(dataset)
        m = s["metrics"]
        assert in_unit_range(m["image_auroc"])
        if s["category"] == "synthetic" or dataset == "mpdd":  # masks: pixel metrics
            assert in_unit_range(m["pixel_auroc"], m["aupro"])
        if s["category"] == "synthetic":  # 10 epochs suffice to localise the synthetic defects
            assert m["pixel_auroc"] > 0.85
        if dataset == "mvtec_loco":
            assert sorted(s["per_group"]) == ["logical", "structural"]
            assert in_unit_range(m["spro_0.05"], *(g["spro_0.05"] for g in s["per_group"].values()))
        else:
            assert s["per_group"] == {} and m["spro_0.05"] is None

    return check


def check_ablations(s):
    variants = s["variants"]
    assert list(variants) == ["dfr", "dfr_cosine", "global", "full", "lambda0"]
    for metrics in variants.values():
        assert all(0 <= v <= 100 for v in metrics.values())
    # The switches change the model: every variant localises differently.
    assert len({round(m["pixel_auroc"], 6) for m in variants.values()}) == 5
    assert sorted(s["lambdas"]) == ["0", "0.5", "1"]
    assert s["lambdas"]["0.5"] == variants["full"]["image_auroc"]
    assert s["lambdas"]["0"] == variants["lambda0"]["image_auroc"]
    assert s["backbones"] == {"lite": variants["full"]["image_auroc"]}


def check_efficiency(s):
    presets = {r["preset"]: r for r in s["presets"]}
    assert sorted(presets) == ["lite", "paper"]
    paper, lite = presets["paper"], presets["lite"]
    assert sum(paper["params_M"].values()) == pytest.approx(91.4, abs=0.3)  # ../shared/ULSAD.md
    assert sum(lite["params_M"].values()) == pytest.approx(5.0, abs=0.3)
    assert paper["total_gflops"] == pytest.approx(51.2, rel=0.05)  # measured in ULSAD.md
    assert lite["total_gflops"] < paper["total_gflops"] / 10
    for r in presets.values():
        parts = r["gflops"]["extractor"] + r["gflops"]["featae"] + r["gflops"]["global_ae"]
        assert parts <= r["total_gflops"] < 1.05 * parts  # the rest: upsampling and blur
        # Every parameter and buffer saved in fp32: size ~ 4 bytes x parameters (+ pool buffers).
        assert r["checkpoint_fp32_MiB"] * 2**20 >= 4e6 * sum(r["params_M"].values())
        assert r["checkpoint_fp16_MiB"] / r["checkpoint_fp32_MiB"] == pytest.approx(0.5, abs=0.02)
        assert r["latency_ms"] > 0 and r["throughput"] > 0
        assert r["floor_ms"] > 0
        if r.get("peak_rss_MiB") is not None:  # smoke mode measures the lite preset only
            assert r["peak_rss_MiB"] > r["rss_after_import_MiB"] > 0
    assert paper["checkpoint_fp32_MiB"] > 10 * lite["checkpoint_fp32_MiB"]
    # Compact default for lite (backbone by hash, FeatAE fp16); the paper preset stays full fp32.
    assert lite["checkpoint_default_MiB"] < 0.5 * lite["checkpoint_fp32_MiB"]
    assert paper["checkpoint_default_MiB"] == pytest.approx(paper["checkpoint_fp32_MiB"], rel=1e-3)
    assert lite.get("peak_gpu_MiB" if s["device"] == "cuda" else "peak_rss_MiB") is not None
    assert s["matmul_gflops"] > 0
    benchmarks = REPO / "benchmarks"
    assert s["reports"] == len(list(benchmarks.glob("**/inference*.json")))  # committed reports
    assert s["patchcore"] is None or s["patchcore"]["latency_ms"] > 0


CHECKS = {
    "00_quickstart": (check_quickstart, 3),
    "01_mvtec_ad": (check_dataset("mvtec_ad", "bottle"), 6),
    "02_mvtec_loco": (check_dataset("mvtec_loco"), 7),
    "03_visa": (check_dataset("visa"), 6),
    "04_mpdd": (check_dataset("mpdd", "metal_plate"), 6),
    "05_btad": (check_dataset("btad"), 6),
    "06_ablations": (check_ablations, 3),
    "07_efficiency": (check_efficiency, 1),
}  # notebook: (check of its summary, number of plotly figures it shows)


@pytest.fixture
def smoke_env(monkeypatch):
    """The kernel inherits this process's environment."""
    monkeypatch.setenv("ULSAD_SMOKE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never touch the network
    # OpenMP threads that spin while waiting slow torch down many times over when the cores are
    # shared with other processes (as in CI); waiting passively costs nothing measurable.
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, smoke_env):

    nb = read(path)
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import json as _json, sys as _sys\n"
            "print(_json.dumps({'prefix': _sys.prefix, 'summary': summary}, default=float))"
        )
    )
    # Fails with CellExecutionError (the cell and its traceback) on any error.
    execute(nb)

    result = json.loads(nb.cells[-1].outputs[-1]["text"])
    assert result["prefix"] == sys.prefix  # the kernel runs in this environment
    assert result["summary"]["smoke"] is True
    check, n_figures = CHECKS[path.stem]
    check(result["summary"])
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if PLOTLY in o.get("data", {})]
    assert len(figures) >= n_figures


@pytest.mark.slow
def test_quickstart_loads_a_checkpoint_from_the_hub(
    hub, trained_checkpoint, smoke_env, monkeypatch
):
    """The quickstart, given a Hub repo id and a pinned revision, loads it from the Hub (the local
    server of tests/hub_server.py; the kernel inherits HF_ENDPOINT and the fresh cache)."""

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # smoke_env turned it on; the Hub is local
    files = {n: (trained_checkpoint / n).read_bytes() for n in ("config.json", "model.safetensors")}
    pinned = hub.commit("acme/quickstart", files)
    hub.commit("acme/quickstart", {"README.md": b"# a later commit\n"})
    nb = read(NOTEBOOK_DIR / "00_quickstart.ipynb")
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert 'CHECKPOINT = "bottle"' in params.source and "REVISION = None" in params.source
    params.source = params.source.replace('CHECKPOINT = "bottle"', 'CHECKPOINT = "acme/quickstart"')
    params.source = params.source.replace("REVISION = None", f"REVISION = {pinned!r}")
    nb.cells.append(
        nbformat.v4.new_code_cell("print(source, model.threshold.item(), summary['images'])")
    )
    execute(nb)
    printed = nb.cells[-1].outputs[-1]["text"].split()
    expected = json.loads((trained_checkpoint / "training.json").read_text())["threshold"]
    assert printed[0] == "acme/quickstart"
    assert float(printed[1]) == pytest.approx(expected, rel=1e-6)
    downloads = [p for _, p in hub.requests if "/acme/quickstart/resolve/" in p]
    assert downloads and all(f"/resolve/{pinned}/" in p for p in downloads)
