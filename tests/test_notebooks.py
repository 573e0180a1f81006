"""The notebooks: committed in sync with their jupytext source, and runnable end to end.

The quickstart is committed with its outputs (pictures a reader sees without a kernel) and runs as
a newcomer runs it, on a fresh clone: no dataset anywhere, the Hub unreachable. The others are
committed without outputs and executed in smoke mode (ULSAD_SMOKE=1: tiny synthetic data, plus a
few real images where ../shared/data is present); the dataset notebook once per dataset, its
parameters set as papermill does (a cell after the `parameters` cell). All run with nbclient, from
notebooks/ as working directory, on the `python3` kernel of the interpreter running the tests. The
last cell each notebook ends with defines `summary`; the test appends a cell that prints it as JSON
and checks its numbers.
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
EXPECTED = ["00_quickstart", "01_dataset", "06_ablations", "07_efficiency"]
NOTEBOOKS = [NOTEBOOK_DIR / f"{name}.ipynb" for name in EXPECTED]
QUICKSTART = NOTEBOOK_DIR / "00_quickstart.ipynb"
DATASETS = ["mvtec_ad", "mvtec_loco", "visa", "mpdd", "btad"]  # notebooks/datasets/<name>.md
SMOKE_SWITCH = "SMOKE = smoke_mode(SMOKE)"  # notebooks/helpers: ULSAD_SMOKE=1 turns it on
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


def parameters_cell(nb) -> int:
    (index,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    return index


def with_parameters(nb, **values):
    """Set parameters as papermill does: a cell after the `parameters` cell assigns them."""
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    nb.cells.insert(parameters_cell(nb) + 1, nbformat.v4.new_code_cell(source))
    return nb


def outputs(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


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
    if path == QUICKSTART:  # committed executed, top to bottom
        assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    else:
        assert not with_outputs, f"code cells {with_outputs} have outputs: clear them first"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells are tagged parameters"
    params = nb.cells[tagged[0]]
    assert params.cell_type == "code" and "SMOKE = False" in params.source
    assert SMOKE_SWITCH in nb.cells[tagged[0] + 1].source  # ULSAD_SMOKE=1 overrides the cell


def test_quickstart_is_committed_with_pictures_a_reader_sees_without_a_kernel():
    """GitHub and the Hub's viewer render image/png outputs, not plotly's JSON; nothing in the
    outputs names this machine's folders or ../shared."""
    found = outputs(read(QUICKSTART))
    pictures = [o for o in found if "image/png" in o.get("data", {})]
    assert len(pictures) >= 2  # the maps, and the overlay at the chosen threshold
    assert any(PLOTLY in o.get("data", {}) for o in found)  # interactive, next to the pictures
    assert not [o for o in found if o.output_type == "error"]
    text = json.dumps([o for o in found if PLOTLY not in o.get("data", {})])
    assert "examples shipped with bottle" in text  # what a fresh clone scores
    for leak in (str(REPO), str(Path.home()), "shared/data", "/tmp/"):
        assert leak not in text
    assert (QUICKSTART.stat().st_size) < 2 * 10**6  # figures at thumbnail size


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
    """A fresh clone: the three examples shipped with bottle, thresholds on its recorded test set."""
    assert s["origin"] == "the examples shipped with bottle"
    assert s["images"] == len(s["scores"]) == len(s["labels"]) == 3
    assert sorted(s["labels"]) == [0, 1, 1]
    assert all(math.isfinite(x) for x in s["scores"])
    good = [x for x, y in zip(s["scores"], s["labels"], strict=True) if y == 0]
    assert max(good) < min(x for x, y in zip(s["scores"], s["labels"], strict=True) if y == 1)
    recorded = json.loads((REPO / "weights" / "bottle" / "eval.json").read_text())["scores"]
    assert s["basis_scores"] == [r["score"] for r in recorded]  # eval.json: 83 test images
    thresholds = s["thresholds"]
    assert thresholds["checkpoint default"] > 0  # calibrated on held-out good images
    assert max(good) < thresholds["checkpoint default"]  # the good example passes
    scores, labels = s["basis_scores"], s["basis_labels"]

    def f1(threshold: float) -> float:  # flagged: score > threshold, as Prediction.is_anomalous
        tp = sum(x > threshold and y == 1 for x, y in zip(scores, labels, strict=True))
        fp = sum(x > threshold and y == 0 for x, y in zip(scores, labels, strict=True))
        return 2 * tp / (2 * tp + fp + labels.count(1) - tp)

    best = thresholds["best F1 on these images (optimistic)"]
    assert f1(best) == max(f1(x - 1e-9) for x in scores)
    good = [x for x, y in zip(scores, labels, strict=True) if y == 0]
    assert min(good) <= thresholds["5% false alarms on good images"] <= max(good)
    # The layout checkpoint's logical example: the global map lifts it over the threshold.
    layout = s["layout_example"]
    assert layout["local_only"] < layout["threshold"] < layout["score"], layout


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


RUNS = {
    "01_dataset-mvtec_ad": ("01_dataset", {"DATASET": "mvtec_ad"}, check_dataset("mvtec_ad", "bottle"), 6),
    "01_dataset-mvtec_loco": ("01_dataset", {"DATASET": "mvtec_loco"}, check_dataset("mvtec_loco"), 7),
    "01_dataset-visa": ("01_dataset", {"DATASET": "visa"}, check_dataset("visa"), 6),
    "01_dataset-mpdd": ("01_dataset", {"DATASET": "mpdd"}, check_dataset("mpdd", "metal_plate"), 6),
    "01_dataset-btad": ("01_dataset", {"DATASET": "btad"}, check_dataset("btad"), 6),
    "06_ablations": ("06_ablations", {}, check_ablations, 3),
    "07_efficiency": ("07_efficiency", {}, check_efficiency, 1),
}  # fmt: skip
# run: (notebook, parameters, check of its summary, number of plotly figures it shows)


def test_every_dataset_has_a_note_and_a_smoke_run():
    notes = sorted(p.stem for p in (NOTEBOOK_DIR / "datasets").glob("*.md"))
    assert notes == sorted(DATASETS)
    assert sorted(k.split("-", 1)[1] for k in RUNS if k.startswith("01_dataset")) == notes


@pytest.mark.parametrize("dataset", DATASETS)
def test_dataset_notes_have_the_sections_the_notebook_shows_and_the_papers_numbers(dataset):
    from ulsad.experiments import PAPER_RESULTS

    note = (NOTEBOOK_DIR / "datasets" / f"{dataset}.md").read_text()
    for section in ("Training time", "Get the data", "Layout", "Splits"):
        assert f"\n## {section}\n" in note
    assert ("\n## Logical and structural anomalies\n" in note) == (dataset == "mvtec_loco")
    opening = note.split("\n## ", 1)[0]
    for metric, value in PAPER_RESULTS[dataset].items():  # the numbers the notebook compares with
        assert f"{metric.replace('_', ' ').replace('auroc', 'AUROC')} {value}" in " ".join(
            opening.split()
        )


@pytest.fixture
def smoke_env(monkeypatch, tmp_path):
    """The kernel inherits this process's environment."""
    monkeypatch.setenv("ULSAD_SMOKE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never touch the network
    (tmp_path / "no-data").mkdir()
    monkeypatch.setenv("ULSAD_DATA", str(tmp_path / "no-data"))  # `ulsad download`'s folder: empty
    # OpenMP threads that spin while waiting slow torch down many times over when the cores are
    # shared with other processes (as in CI); waiting passively costs nothing measurable.
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))


def run_to_summary(nb) -> dict:
    """Execute `nb` with a last cell printing its `summary`; fails with CellExecutionError (the
    cell and its traceback) on any error."""
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import json as _json, sys as _sys\n"
            "print(_json.dumps({'prefix': _sys.prefix, 'summary': summary}, default=float))"
        )
    )
    execute(nb)
    result = json.loads(nb.cells[-1].outputs[-1]["text"])
    assert result["prefix"] == sys.prefix  # the kernel runs in this environment
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    return result["summary"]


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_notebook_runs_in_smoke_mode(run, smoke_env):
    name, parameters, check, n_figures = RUNS[run]
    nb = with_parameters(read(NOTEBOOK_DIR / f"{name}.ipynb"), **parameters)
    summary = run_to_summary(nb)
    assert summary["smoke"] is True
    check(summary)
    figures = [o for o in outputs(nb) if PLOTLY in o.get("data", {})]
    assert len(figures) >= n_figures


@pytest.mark.slow
def test_quickstart_runs_on_a_fresh_clone(smoke_env, monkeypatch):
    """As a newcomer runs it (not in smoke mode): no dataset where `ulsad download` puts one, no
    ../shared read (the notebook never looks there), the Hub unreachable."""
    monkeypatch.delenv("ULSAD_SMOKE")
    nb = read(QUICKSTART)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "shared" not in code
    summary = run_to_summary(nb)
    assert summary["smoke"] is False
    check_quickstart(summary)
    found = outputs(nb)
    assert sum("image/png" in o.get("data", {}) for o in found) >= 2
    assert sum(PLOTLY in o.get("data", {}) for o in found) >= 2


@pytest.mark.slow
@pytest.mark.realdata
def test_quickstart_scores_the_test_set_once_the_dataset_is_there(smoke_env, real_data):
    """The next step the quickstart names: with DATA_ROOT set it scores test images of the
    checkpoint's category (smoke mode: 6, half good) and picks the thresholds on them."""
    nb = with_parameters(read(QUICKSTART), DATA_ROOT=str(real_data / "mvtec_ad"))
    summary = run_to_summary(nb)
    assert summary["origin"] == "test images of mvtec_ad/bottle"
    assert sorted(summary["labels"]) == [0, 0, 0, 1, 1, 1]
    assert summary["threshold_basis"] == summary["origin"]
    assert summary["basis_scores"] == summary["scores"]
    good = [x for x, y in zip(summary["scores"], summary["labels"], strict=True) if y == 0]
    assert min(good) <= summary["thresholds"]["5% false alarms on good images"] <= max(good)


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
    nb = read(QUICKSTART)
    params = nb.cells[parameters_cell(nb)]
    assert 'CHECKPOINT = "bottle"' in params.source and "REVISION = None" in params.source
    examples = str(REPO / "weights" / "bottle" / "examples")  # the Hub repo has none
    with_parameters(nb, CHECKPOINT="acme/quickstart", REVISION=pinned, IMAGES=examples)
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
