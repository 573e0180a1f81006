"""Benchmark runner: tiny synthetic categories (2 epochs, 128 px) through `ulsad benchmark`.

One module-scoped CLI run trains two categories and fails on a third (a corrupt training image);
the other tests read its results, resume from it, or rebuild its tables.
"""

from __future__ import annotations

import csv
import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import torch
from sklearn.metrics import roc_auc_score

from ulsad import ULSAD
from ulsad.cli import main
from ulsad.data import make_synthetic_dataset
from ulsad.errors import ULSADError
from ulsad.experiments import (
    ABLATIONS,
    PAPER_RESULTS,
    make_jobs,
    run_benchmark,
    summarize,
)

GOOD = ["alpha", "beta"]
SETTINGS = ["--epochs", "2", "--set", "image_size=128", "--device", "cpu"]


def _make_data(root: Path, names: list[str]) -> None:
    for seed, name in enumerate(names):
        make_synthetic_dataset(root, name, n_train=10, n_test_good=4, n_test_defect=4, size=64,
                               seed=seed)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(data root, results dir, exit code) of one CLI run over alpha, beta and a broken category."""
    root = tmp_path_factory.mktemp("data")
    _make_data(root, [*GOOD, "broken"])
    (root / "broken" / "train" / "good" / "003.png").write_bytes(b"not an image")
    out = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        argv = ["benchmark", "--dataset", "mvtec_ad", "--root", str(root), "--categories",
                *GOOD, "broken", *SETTINGS, "--out", str(out)]  # fmt: skip
        code = main(argv)
    return root, out, code


@pytest.fixture
def no_training(monkeypatch):
    """Make any training attempt fail the test."""

    def fail(*args, **kwargs):
        raise AssertionError("training must not run")

    monkeypatch.setattr(ULSAD, "fit", fail)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_failed_category_is_recorded_and_others_finish(run):
    _, out, code = run
    assert code == 1
    assert sorted(p.name for p in (out / "full").glob("*.json")) == [
        "alpha.json", "beta.json", "broken.error.json"]  # fmt: skip
    error = json.loads((out / "full" / "broken.error.json").read_text())
    assert "003.png" in error["error"] and error["category"] == "broken"
    assert "broken" in (out / "full" / "summary.md").read_text()


def test_category_json_has_metrics_timings_config_and_environment(run):
    _, out, _ = run
    record = json.loads((out / "full" / "alpha.json").read_text())
    assert (record["dataset"], record["category"], record["variant"]) == (
        "mvtec_ad",
        "alpha",
        "full",
    )
    config, recipe = record["config"], record["recipe"]
    assert (recipe["epochs"], recipe["lr_milestones"], config["image_size"]) == (2, [2], 128)
    assert config["backbone"] == "tf_efficientnet_lite0" and record["seed"] == recipe["seed"] == 40
    metrics = record["metrics"]
    assert (metrics["n_good"], metrics["n_anomalous"]) == (4, 4)
    assert set(metrics["per_defect"]) == {"scratch", "contamination"}
    assert all(d["n"] == 2 for d in metrics["per_defect"].values())
    # The stored image AUROC is the one of the stored per-image scores, and the model learned.
    scores = record["scores"]
    assert len(scores) == 8
    expected = roc_auc_score([s["label"] for s in scores], [s["score"] for s in scores])
    assert metrics["image_auroc"] == pytest.approx(expected)
    assert metrics["image_auroc"] > 0.6
    for key in ("pixel_auroc", "aupro", "pixel_f1_max"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["pixel_auroc"] > 0.6
    timings = record["timings"]
    assert timings["trained_in_this_run"] and timings["train_s"] > 0 and timings["eval_s"] > 0
    assert timings["eval_ms_per_image"] == pytest.approx(1000 * timings["eval_s"] / 8)
    assert record["training"]["epochs"] == 2 and len(record["training"]["history"]) == 2
    env = record["environment"]
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["ulsad"]
    assert "git_commit" in env and env["cpu"]
    assert (out / "full" / "alpha" / "checkpoint" / "model.safetensors").is_file()


def test_summary_rows_mean_and_paper_column(run):
    _, out, _ = run
    rows = _csv(out / "full" / "summary.csv")
    assert [r["category"] for r in rows] == [*GOOD, "mean (2/15)"]
    records = [json.loads((out / "full" / f"{c}.json").read_text()) for c in GOOD]
    for key in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max"):
        values = [100 * r["metrics"][key] for r in records]
        assert [float(rows[i][key]) for i in range(2)] == pytest.approx(values, abs=1e-4)
        assert float(rows[2][key]) == pytest.approx(sum(values) / 2, abs=1e-4)
    assert float(rows[2]["paper_image_auroc"]) == PAPER_RESULTS["mvtec_ad"]["image_auroc"] == 97.65
    assert float(rows[2]["paper_pixel_auroc"]) == 97.61
    assert rows[0]["paper_image_auroc"] == ""  # no per-category numbers from the paper
    markdown = (out / "full" / "summary.md").read_text()
    assert "| **mvtec_ad** | **mean (2/15)** |" in markdown and "**97.65**" in markdown
    assert "not comparable" in markdown  # 2 of 15 categories


def test_rerun_skips_finished_categories(run, no_training):
    root, out, _ = run
    before = {c: (out / "full" / f"{c}.json").read_text() for c in GOOD}
    argv = ["benchmark", "--dataset", "mvtec_ad", "--root", str(root), "--categories", *GOOD,
            *SETTINGS, "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert {c: (out / "full" / f"{c}.json").read_text() for c in GOOD} == before


def test_finished_checkpoint_is_evaluated_without_retraining(run, no_training, tmp_path):
    root, out, _ = run
    copy = shutil.copytree(out, tmp_path / "results")
    old = json.loads((copy / "full" / "alpha.json").read_text())
    (copy / "full" / "alpha.json").unlink()
    jobs = make_jobs("mvtec_ad", root, copy, ["alpha"], epochs=2, overrides={"image_size": 128},
                     device="cpu")  # fmt: skip
    report = run_benchmark(jobs)
    assert report.done == [("alpha", "full")] and not report.failed
    new = json.loads((copy / "full" / "alpha.json").read_text())
    assert not new["timings"]["trained_in_this_run"]
    assert new["timings"]["train_s"] == pytest.approx(old["timings"]["train_s"])
    assert new["metrics"]["image_auroc"] == pytest.approx(old["metrics"]["image_auroc"])
    assert new["metrics"]["pixel_auroc"] == pytest.approx(old["metrics"]["pixel_auroc"], abs=1e-5)


def test_results_from_another_config_are_refused(run, no_training, capsys):
    root, out, _ = run
    argv = ["benchmark", "--dataset", "mvtec_ad", "--root", str(root), "--categories", "alpha",
            "--epochs", "3", "--set", "image_size=128", "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    assert "epochs: 2 -> 3" in capsys.readouterr().err


def test_a_record_of_an_earlier_version_is_read_with_its_recipe_in_its_config(
    run, no_training, tmp_path
):
    """Records before the recipe had its own entry held it in "config" (and no "recipe"): the
    same setup is still recognised, another one still refused."""
    root, out, _ = run
    copy = shutil.copytree(out, tmp_path / "results")
    path = copy / "full" / "alpha.json"
    record = json.loads(path.read_text())
    record["config"] = {**record["config"], **record.pop("recipe")}
    record["config"]["validation_points"] = record["config"].pop("selection_points")
    del record["config"]["choose_local_weight"]
    path.write_text(json.dumps(record))
    settings = {"epochs": 2, "overrides": {"image_size": 128}, "device": "cpu"}
    assert make_jobs("mvtec_ad", root, copy, ["alpha"], **settings)
    with pytest.raises(ULSADError, match="epochs: 2 -> 3"):
        make_jobs("mvtec_ad", root, copy, ["alpha"], **{**settings, "epochs": 3})


def test_summarize_rebuilds_the_tables(run, tmp_path, capsys):
    _, out, _ = run
    copy = shutil.copytree(out, tmp_path / "results")
    expected = (copy / "full" / "summary.csv").read_text()
    (copy / "full" / "summary.csv").unlink()
    (copy / "full" / "summary.md").unlink()
    assert main(["benchmark", "--summarize", str(copy)]) == 0
    assert (copy / "full" / "summary.csv").read_text() == expected
    assert "mean (2/15)" in capsys.readouterr().out
    assert main(["benchmark", "--summarize", str(tmp_path / "nothing")]) == 2
    assert main(["benchmark", "--root", str(copy)]) == 2  # --dataset and --out missing


def _fake_record(dataset: str, category: str, variant: str, metrics: dict) -> dict:
    return {"format": "ulsad-benchmark-1", "dataset": dataset, "category": category,
            "variant": variant, "preset": "lite", "config": {}, "metrics": metrics,
            "timings": {"train_s": 1.0, "eval_ms_per_image": 2.0}, "environment": {}}  # fmt: skip


def test_summary_of_variants_and_loco_groups(tmp_path):
    """Hand-made records: dataset means per variant, LOCO logical/structural columns."""
    loco = {"logical": {"image_auroc": 0.7, "spro_0.05": 0.4},
            "structural": {"image_auroc": 0.9, "spro_0.05": 0.6}}  # fmt: skip
    for variant, base in (("full", 0.9), ("dfr", 0.8)):
        for i, category in enumerate(["breakfast_box", "pushpins"]):
            metrics = {"image_auroc": base + 0.02 * i, "image_f1_max": 0.5, "per_group": loco}
            record = _fake_record("mvtec_loco", category, variant, metrics)
            (tmp_path / variant).mkdir(exist_ok=True)
            (tmp_path / variant / f"{category}.json").write_text(json.dumps(record))
    written = summarize(tmp_path)
    assert tmp_path / "variants.md" in written
    rows = _csv(tmp_path / "full" / "summary.csv")
    assert float(rows[2]["image_auroc"]) == pytest.approx(91.0)
    assert float(rows[2]["logical_image_auroc"]) == pytest.approx(70.0)
    assert float(rows[2]["structural_spro_0.05"]) == pytest.approx(60.0)
    assert rows[2]["pixel_auroc"] == ""  # no category has it
    assert float(rows[2]["paper_image_auroc"]) == 84.1
    variants = _csv(tmp_path / "variants.csv")
    assert [(v["variant"], v["categories"]) for v in variants] == [("full", "2/5"), ("dfr", "2/5")]
    assert [float(v["image_auroc"]) for v in variants] == pytest.approx([91.0, 81.0])


def test_ablation_variants_map_to_config_overrides(tmp_path):
    _make_data(tmp_path / "data", ["alpha"])
    jobs = make_jobs("mpdd", tmp_path / "data", tmp_path / "out", ["alpha"], variants=["all"])
    configs = {job.variant: job.config() for job in jobs}
    assert list(configs) == list(ABLATIONS)
    dfr, cosine, glob, full = (
        configs["dfr"],
        configs["dfr_cosine"],
        configs["global"],
        configs["full"],
    )
    assert (dfr.global_branch, dfr.attention_loss, dfr.cosine_loss) == (False, False, False)
    assert (cosine.global_branch, cosine.attention_loss, cosine.cosine_loss) == (False, False, True)
    assert (glob.global_branch, glob.attention_loss) == (True, False)
    assert (full.global_branch, full.attention_loss, full.cosine_loss) == (True, True, True)
    assert configs["lambda0"].lambda_attention == 0.0
    assert {job.recipe().seed for job in jobs} == {42}  # the paper's MPDD seed
    assert {str(j.result_path.relative_to(tmp_path)) for j in jobs} == {
        f"out/{v}/alpha.json" for v in ABLATIONS}  # fmt: skip
    with pytest.raises(ULSADError, match="unknown ablation"):
        make_jobs("mvtec_ad", tmp_path / "data", tmp_path / "out", variants=["nope"])
    with pytest.raises(ULSADError, match="attention_loss"):  # invalid overrides fail up front
        make_jobs("mvtec_ad", tmp_path / "data", tmp_path / "out", variants=["dfr"],
                  overrides={"attention_loss": True})  # fmt: skip


def test_download_command(monkeypatch, tmp_path, capsys):
    calls = []

    def fake_download(dataset, dest=None, *, accept_licence=False, progress=False):
        calls.append((dataset, dest, accept_licence))
        assert progress is False  # stderr is no terminal here: no bar
        return tmp_path / dataset

    monkeypatch.setattr("ulsad.data.download.download", fake_download)
    assert main(["download", "mvtec_ad", "--dest", str(tmp_path), "--accept-licence"]) == 0
    assert main(["download", "visa"]) == 0
    assert calls == [("mvtec_ad", str(tmp_path), True), ("visa", None, False)]
    assert f"--root {tmp_path / 'visa'}" in capsys.readouterr().out
    monkeypatch.undo()
    assert main(["download", "mpdd", "--dest", str(tmp_path)]) == 2  # no direct link: by hand
    assert "by hand" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_executor_runs_categories_in_parallel(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # inherited by the Ray workers
    _make_data(tmp_path / "data", GOOD)
    jobs = make_jobs("mvtec_ad", tmp_path / "data", tmp_path / "out", epochs=1,
                     overrides={"image_size": 128}, device="cpu")  # fmt: skip
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        report = run_benchmark(jobs, executor="ray")
    finally:
        ray.shutdown()
    assert sorted(report.done) == [(c, "full") for c in GOOD] and not report.failed
    records = [json.loads((tmp_path / "out" / "full" / f"{c}.json").read_text()) for c in GOOD]
    for record in records:
        assert record["recipe"]["epochs"] == 1 and 0.5 < record["metrics"]["image_auroc"] <= 1.0
    spans = [(datetime.fromisoformat(r["started"]), datetime.fromisoformat(r["finished"]))
             for r in records]  # fmt: skip
    assert max(s for s, _ in spans) < min(f for _, f in spans)  # the two tasks overlapped
    rows = _csv(tmp_path / "out" / "full" / "summary.csv")
    assert [r["category"] for r in rows] == [*GOOD, "mean (2/15)"]
    mean = sum(100 * r["metrics"]["image_auroc"] for r in records) / 2
    assert float(rows[2]["image_auroc"]) == pytest.approx(mean, abs=1e-4)
