"""Inference speed and memory of each preset, against the paper architecture's plain eager baseline.

    python -m benchmarks.inference --out benchmarks/results/inference_cpu.json

Per image at each preset's input size (`paper` 256x256, `lite` 320x320), on CPU (and CUDA when
present): latency at batch 1 (median after warm-up), throughput at batch 16, peak memory,
parameters, FLOPs (torch's FLOP counter) and checkpoint size, for our PyTorch path, our ONNX Runtime
path and (with --compile) torch.compile. In the same run and on the same inputs it times
`tests/reference.py`, a straightforward eager fp32 reimplementation of the reference forward pass
(paper configuration), checks that its maps equal ours on the same weights, and reports each time
over the baseline's. Timings are interleaved (baseline, ours, baseline, ...) so that other load on
the machine hits all of them alike; the fp32 matmul rate measured in the same run gives each model's
compute floor (FLOPs / rate).
"""

from __future__ import annotations

import os

# Before torch starts OpenMP: idle threads sleep instead of spinning. On a CPU shared with other
# jobs, spinning made PyTorch up to 50x slower here (lite: 4 s instead of 0.08 s per image).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    REPOSITORY,
    interleaved,
    machine,
    matmul_gflops,
    median,
    peak_rss_mb,
    python_module,
    table,
    write_json,
)
from tests.reference import ReferenceULSAD, reference_from_ulsad, set_statistics
from ulsad import ULSAD, ULSADConfig, preset_config
from ulsad.checkpoint import save_pretrained

REFERENCE = "reference paper (eager fp32)"


def benchmark_model(preset: str, images: torch.Tensor, device: torch.device) -> ULSAD:
    """A preset's model with untrained heads (speed does not depend on the weights) and statistics
    set from `images` as training would set them: normalisation runs as in a trained model."""
    torch.manual_seed(0)
    model = ULSAD.from_preset(preset, pretrained_backbone=preset == "lite")  # lite's are offline
    return set_statistics(model, images).to(device)


def gflops_per_image(fn: Any, images: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn(images)
    return counter.get_total_flops() / 1e9 / len(images)


@torch.inference_mode()
def max_difference(a: Any, b: Any, images: torch.Tensor) -> float:
    """Largest |a - b| over score and the three maps."""
    return max(float((x - y).abs().max()) for x, y in zip(a(images), b(images), strict=True))


def memory_probe(kind: str, path: str, batch_sizes: list[int], threads: int | None) -> None:
    """Child process: load one model, score a batch of each size, print peak RSS (MiB) as JSON."""
    if threads:
        torch.set_num_threads(threads)
    result = {"rss_after_import_mb": peak_rss_mb()}
    if kind == "onnx":
        from ulsad.export import OnnxPredictor

        run = OnnxPredictor(path, threads=threads)
        size = run.image_size
    else:
        config = json.loads((Path(path) / "config.json").read_text())
        config.pop("format")
        size = config["image_size"]
        if kind == "reference":  # the baseline's own memory: random weights, same architecture
            run = ReferenceULSAD(ULSADConfig.from_dict(config)).eval()
        else:
            run = ULSAD.from_pretrained(path)
    for batch in batch_sizes:
        with torch.inference_mode():
            run(torch.rand(batch, 3, size, size))
        result[f"peak_rss_batch{batch}_mb"] = peak_rss_mb()
    print(json.dumps(result))


def cpu_memory(kind: str, path: Path, batch_sizes: list[int], threads: int | None) -> dict:
    command = [*python_module(__spec__.name), "--memory-probe", kind, str(Path(path).resolve()),
               "--batch-sizes", *map(str, batch_sizes)]  # fmt: skip
    if threads:
        command += ["--threads", str(threads)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPOSITORY).stdout
    return json.loads(out.strip().splitlines()[-1])


def cuda_memory(fn: Any, images: dict[int, torch.Tensor], device: torch.device) -> dict:
    result = {}
    for batch, x in images.items():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            fn(x)
        result[f"peak_cuda_batch{batch}_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def run_device(args: argparse.Namespace, device: torch.device, workdir: Path) -> dict[str, Any]:
    rate = matmul_gflops(device)
    print(f"[{device}] fp32 matmul: {rate:.0f} GFLOP/s")

    def inputs(size: int) -> dict[str, torch.Tensor]:
        """Batch 1, batch `--batch` and calibration images at a preset's own input size. Statistics
        come from the calibration images, and maps are compared on them: there they have a trained
        model's scale (~0.1 at the 99.5% quantile). Far from them an untrained model's maps reach
        tens, where fp32 rounding alone (the reference's own error against fp64) nears 1e-4."""
        shapes = {"x1": (1, 3, size, size), "xb": (args.batch, 3, size, size),
                  "calibration": (2, 3, size, size)}  # fmt: skip
        return {name: torch.rand(shape, generator=torch.Generator().manual_seed(seed)).to(device)
                for seed, (name, shape) in zip((1, 2, 0), shapes.items(), strict=True)}  # fmt: skip

    presets = sorted({"paper", *args.presets})
    sized = {p: inputs(preset_config(p).image_size) for p in presets}
    candidates: dict[str, dict[str, Any]] = {}
    models = {p: benchmark_model(p, sized[p]["calibration"].cpu(), device) for p in presets}
    reference = reference_from_ulsad(models["paper"])
    candidates[REFERENCE] = {"preset": "paper", "backend": "reference", "fn": reference,
                             "model": models["paper"]}  # fmt: skip
    for preset in args.presets:
        model = models[preset]
        folder = save_pretrained(model, workdir / preset)
        candidates[preset] = {"preset": preset, "backend": "torch", "fn": model, "model": model,
                              "checkpoint": folder}  # fmt: skip
        if args.onnx and device.type == "cpu":
            from ulsad.export import OnnxPredictor, export_onnx

            path = export_onnx(model, workdir / f"{preset}.onnx")
            candidates[f"{preset} (onnx)"] = {
                "preset": preset, "backend": "onnx", "model": model, "onnx": path,
                "fn": OnnxPredictor(path, threads=args.threads or torch.get_num_threads()),
            }  # fmt: skip
        if args.compile:
            print(f"[{device}] compiling {preset} (torch.compile, freezing; takes minutes)")
            torch._logging.set_logs(dynamo=logging.ERROR)  # the graph break at `calibrated`
            compiled = torch.compile(model, dynamic=False, options={"freezing": True})
            with torch.no_grad():
                compiled(sized[preset]["x1"]), compiled(sized[preset]["xb"])
            candidates[f"{preset} (compiled)"] = {"preset": preset, "backend": "compiled",
                                                  "fn": compiled, "model": model}  # fmt: skip

    # Same weights, same inputs: every path must give the maps of the reference (<= 1e-4).
    checks = {}
    for name, c in candidates.items():
        ref = reference if c["preset"] == "paper" else reference_from_ulsad(c["model"])
        with torch.no_grad():
            checks[name] = max_difference(c["fn"], ref, sized[c["preset"]]["calibration"])
    print(f"[{device}] max |maps - reference maps|: " + ", ".join(f"{k} {v:.1e}" for k, v in
                                                                     checks.items()))  # fmt: skip

    def runner(fn: Any, x: torch.Tensor) -> Any:
        grad = torch.no_grad if fn.__class__.__name__ == "OptimizedModule" else torch.inference_mode

        def call() -> None:
            with grad():
                fn(x)

        return call

    print(f"[{device}] latency at batch 1: {args.repeats} rounds")
    latency = interleaved({n: runner(c["fn"], sized[c["preset"]]["x1"])
                           for n, c in candidates.items()}, device, args.repeats, args.warmup)  # fmt: skip
    print(f"[{device}] throughput at batch {args.batch}: {args.batch_repeats} rounds")
    throughput = interleaved({n: runner(c["fn"], sized[c["preset"]]["xb"])
                              for n, c in candidates.items()}, device, args.batch_repeats, 1)  # fmt: skip

    rows = []
    base_latency, base_batch = median(latency[REFERENCE]), median(throughput[REFERENCE])
    for name, c in candidates.items():
        model, x1, xb = c["model"], sized[c["preset"]]["x1"], sized[c["preset"]]["xb"]
        flops = gflops_per_image(c["fn"] if c["backend"] == "reference" else model, x1)
        row = {
            "name": name, "preset": c["preset"], "backend": c["backend"], "device": str(device),
            "latency_ms": 1000 * median(latency[name]), "latency_min_ms": 1000 * min(latency[name]),
            "latency_samples_ms": [1000 * t for t in latency[name]],
            "throughput_img_s": args.batch / median(throughput[name]),
            "time_over_reference": median(latency[name]) / base_latency,
            "batch_time_over_reference": median(throughput[name]) / base_batch,
            "max_abs_map_difference_vs_reference": checks[name],
            "gflop_per_image": flops,
            "compute_floor_ms": 1000 * flops / rate,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        }  # fmt: skip
        row["time_over_floor"] = row["latency_ms"] / row["compute_floor_ms"]
        if "checkpoint" in c:
            weights = c["checkpoint"] / "model.safetensors"
            row["checkpoint_mb"] = weights.stat().st_size / 2**20
            half = save_pretrained(model, workdir / f"{c['preset']}_fp16", dtype=torch.float16)
            row["checkpoint_fp16_mb"] = (half / "model.safetensors").stat().st_size / 2**20
        if "onnx" in c:
            row["checkpoint_mb"] = c["onnx"].stat().st_size / 2**20
        sizes = [1, args.batch]
        if args.memory and device.type == "cpu" and c["backend"] != "compiled":
            kind, path = c["backend"], c.get("onnx") or c.get("checkpoint")
            if kind == "reference":
                path = save_pretrained(model, workdir / "reference_config")
            row.update(cpu_memory(kind, path, sizes, args.threads))
        elif args.memory and device.type == "cuda":
            row.update(cuda_memory(c["fn"], {1: x1, args.batch: xb}, device))
        rows.append(row)
    return {"matmul_gflops": rate, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["lite", "paper"])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="all: CPU, and CUDA when present")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: all)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds at batch 1")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="throughput batch size")
    parser.add_argument("--batch-repeats", type=int, default=2, help="timed rounds at --batch")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip ONNX Runtime")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip peak memory (one child process per model on CPU)")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="also torch.compile (slow to build)")
    parser.add_argument("--out", help="JSON report path")
    parser.add_argument("--memory-probe", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.memory_probe:
        memory_probe(*args.memory_probe, args.batch_sizes, args.threads)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if not devices:
        parser.error("--device cuda: no CUDA device here")
    report: dict[str, Any] = {"benchmark": "inference", "machine": machine(devices[-1]),
                              "settings": {k: v for k, v in vars(args).items()
                                           if k not in ("memory_probe", "batch_sizes")}}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            result = run_device(args, device, Path(tmp) / device.type)
            report.setdefault("matmul_gflops", {})[device.type] = result["matmul_gflops"]
            rows += result["rows"]
    report["rows"] = rows
    write_json(args.out, report)

    for device in devices:
        by_name = {r["name"]: r for r in rows if r["device"] == str(device)}
        if "lite" in by_name and "paper" in by_name:
            ratio = by_name["lite"]["throughput_img_s"] / by_name["paper"]["throughput_img_s"]
            print(f"[{device}] lite throughput / paper throughput: {ratio:.1f}x")
    columns = [
        ("device", "device", "s"), ("name", "model", "s"), ("latency_ms", "batch-1 ms", ".1f"),
        ("throughput_img_s", f"img/s @{args.batch}", ".2f"),
        ("time_over_reference", "time/ref", ".3f"),
        ("batch_time_over_reference", f"time/ref @{args.batch}", ".3f"),
        ("time_over_floor", "time/floor", ".2f"), ("gflop_per_image", "GFLOP", ".2f"),
        ("params_m", "params M", ".1f"), ("checkpoint_mb", "file MiB", ".1f"),
        ("peak_rss_batch1_mb", "RSS@1 MiB", ".0f"),
        (f"peak_rss_batch{args.batch}_mb", f"RSS@{args.batch} MiB", ".0f"),
        ("peak_cuda_batch1_mb", "CUDA@1 MiB", ".0f"),
        ("max_abs_map_difference_vs_reference", "max|diff|", ".0e"),
    ]  # fmt: skip
    print(table(rows, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
