"""`benchmarks/peers.py` without anomalib (the peer comparison itself needs it, an optional
extra): the memory probe on ulsad's own model reports numbers that add up, and the report bounds
the speed ratio by the backbone alone and names the malloc settings it ran under."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.common import REPOSITORY

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/status").is_file(), reason="the probe's file pages are read from /proc"
)


@needs_proc
def test_memory_probe_splits_the_peak_into_model_and_file_pages(trained_checkpoint, synthetic_root,
                                                                 tmp_path):  # fmt: skip
    images = sorted((synthetic_root / "synthetic" / "test").rglob("*.png"))[:2]
    listed = tmp_path / "images.json"
    listed.write_text(json.dumps([str(p) for p in images]))
    command = [sys.executable, "-m", "benchmarks.peers", "--memory-probe", "ulsad",
               str(trained_checkpoint), "--probe-images", str(listed), "--threads", "1"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["images_scored"] == 2 and report["peak_counter_reset"]
    # The lite model's float32 weights alone are 19.5 MB; the peak while scoring starts from
    # the memory after loading; torch's code pages are part of that peak, never all of it.
    assert report["model_mb"] > 19
    assert report["inference_peak_mb"] >= report["model_mb"]
    assert 0 < report["file_pages_mb"] < report["inference_peak_mb"]


def _report(with_backbones: bool, malloc_env: dict | None = None) -> dict:
    rows = [
        {"method": "ulsad lite", "latency_ms": 40.0},
        {"method": "PatchCore", "latency_ms": 64.0},
    ]
    category = {"name": "mpdd/metal_plate", "n_train": 54, "n_test": 97, "rows": rows,
                "ratios": [{"peer": "PatchCore", "speed_ratio": 1.6}]}  # fmt: skip
    if with_backbones:
        category["backbones"] = [{"method": "ulsad lite: backbone alone", "latency_ms": 25.0}]
        category["ratios"][0]["bound_speed_ratio"] = 64.0 / 25.0
    return {"machine": {"malloc_env": malloc_env or {}}, "argv": [], "anomalib": "2.7.0",
            "settings": {"quick": False, "memory_images": 16}, "peer_preprocessing": "resize",
            "categories": [category]}  # fmt: skip


def test_report_bounds_the_speed_ratio_by_the_backbone_alone():
    from benchmarks.peers import markdown_report

    text = markdown_report(_report(with_backbones=True))
    assert "| peer/ulsad latency | peer / ulsad backbone alone |" in text
    assert "| PatchCore | - | - | - | 1.60 | 2.56 |" in text  # 64 ms over the backbone's 25 ms
    assert "| ulsad lite: backbone alone | 25.0 |" in text
    # A report written before the column (no "backbones") renders with the bound left empty.
    old = markdown_report(_report(with_backbones=False))
    assert "| PatchCore | - | - | - | 1.60 | - |" in old and "Backbone alone" not in old


def test_report_names_the_malloc_settings_it_ran_under(monkeypatch):
    from benchmarks.common import machine, malloc_env
    from benchmarks.peers import markdown_report

    for key in [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]:
        monkeypatch.delenv(key)
    assert malloc_env() == {}  # glibc's defaults
    tuned = {"MALLOC_TRIM_THRESHOLD_": "1073741824"}
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", tuned["MALLOC_TRIM_THRESHOLD_"])
    monkeypatch.setenv("MALLOCATOR", "not glibc's")  # no trailing underscore: not a tunable
    assert machine(torch.device("cpu"))["malloc_env"] == tuned

    assert "`MALLOC_TRIM_THRESHOLD_=1073741824`" in markdown_report(_report(True, tuned))
    assert "glibc malloc" not in markdown_report(_report(True))  # glibc's defaults: no line
