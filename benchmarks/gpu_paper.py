"""The paper configuration on a GPU: train 200 epochs on one real category, time it, evaluate it.

    python -m benchmarks.gpu_paper ../shared/data/mvtec_ad bottle --out benchmarks/results/gpu_paper_bottle.json

Trains the `paper` preset with `ULSAD.fit` (cached backbone features, bf16 autocast on CUDA) and
writes a JSON report: seconds per epoch, total time, peak GPU memory, inference throughput at
batch 64 (fp32, as `predict` runs, and under bf16 autocast), and the test metrics (image AUROC;
pixel AUROC and AUPRO where the category has masks) next to the paper's dataset means.

The paper's backbone needs ImageNet weights for wide_resnet50_2. timm downloads them when it can;
offline, pass them as a file (`--backbone-weights`, a torchvision or timm state dict, .pth or
.safetensors; layers after layer3 are ignored). `--device cpu --preset lite --epochs 1` is a quick
smoke test on a machine without a GPU.
"""

from __future__ import annotations

import os

# Before torch starts OpenMP (matters on CPU only): see benchmarks/inference.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import interleaved, machine, median, peak_rss_mb, write_json
from ulsad import ULSAD, ULSADError
from ulsad.data import load_mask, load_split
from ulsad.evaluate import evaluate
from ulsad.experiments import PAPER_RESULTS


def load_backbone_weights(model: ULSAD, path: Path) -> None:
    """Copy ImageNet weights from a state-dict file into the (truncated) backbone."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    body = model.extractor.body
    wanted = body.state_dict()
    missing = sorted(set(wanted) - set(state))
    wrong = sorted(k for k in wanted if k in state and state[k].shape != wanted[k].shape)
    if missing or wrong:
        raise ULSADError(
            f"{path} does not hold {model.config.backbone} weights (missing {missing[:3]}, wrong "
            f"shape {wrong[:3]}): pass a state dict of that network."
        )
    body.load_state_dict({k: state[k].to(wanted[k].dtype) for k in wanted})


def build_model(args: argparse.Namespace) -> tuple[ULSAD, str]:
    """The preset's model and where its backbone weights came from."""
    overrides = {"epochs": args.epochs, "lr_milestones": (args.epochs,)}  # paper: milestone = last
    if args.backbone_weights:
        model = ULSAD.from_preset(args.preset, pretrained_backbone=False, **overrides)
        load_backbone_weights(model, Path(args.backbone_weights))
        return model, str(args.backbone_weights)
    try:
        return ULSAD.from_preset(args.preset, **overrides), "pretrained (timm / offline package)"
    except ULSADError:
        if not args.allow_random_backbone:
            raise
        print("warning: no ImageNet weights: random backbone (timing only; metrics meaningless)")
        return ULSAD.from_preset(args.preset, pretrained_backbone=False, **overrides), "random"


@torch.inference_mode()
def throughput(model: ULSAD, device: torch.device, batch: int, repeats: int) -> dict[str, float]:
    """Images per second of `model(images)` at `batch`, fp32 and under bf16 autocast."""
    s = model.config.image_size
    images = torch.rand(batch, 3, s, s, device=device)
    model.eval()
    result = {}
    for name, dtype in (("fp32", None), ("bf16_autocast", torch.bfloat16)):
        if dtype is not None and device.type == "cpu":
            continue  # bf16 is emulated on most CPUs: not worth timing
        autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype))

        def run(autocast: Any = autocast) -> None:
            with autocast:
                model(images)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = interleaved({"run": run}, device, repeats, warmup=3)["run"]
        result[f"throughput_{name}_img_s"] = batch / median(times)
        if device.type == "cuda":
            result[f"peak_gpu_{name}_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_root", help="dataset root, e.g. ../shared/data/mvtec_ad")
    parser.add_argument("category")
    parser.add_argument("--dataset", default="mvtec_ad", help="on-disk layout (see ulsad.data)")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--device", default="cuda", help="default cuda; cpu for a smoke test")
    parser.add_argument("--batch", type=int, default=64, help="inference throughput batch size")
    parser.add_argument("--repeats", type=int, default=10, help="timed inference batches")
    parser.add_argument("--backbone-weights", help="ImageNet state dict for the backbone (offline)")
    parser.add_argument("--allow-random-backbone", action="store_true",
                        help="without ImageNet weights, time a random backbone (no metrics)")  # fmt: skip
    parser.add_argument("--checkpoint", help="also save the trained model to this folder")
    parser.add_argument("--out", help="JSON report path (default: print only)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)

    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        print(f"error: bad --device {args.device!r}: {error}", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU here (torch.cuda.is_available() is False). Run this on a GPU "
              "machine, or pass --device cpu --preset lite --epochs 1 for a smoke test.",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        model, backbone = build_model(args)
        test = load_split(args.dataset, args.data_root, args.category, "test")
    except ULSADError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    epoch_ends: list[float] = []
    history: list[dict[str, float]] = []

    def on_epoch(epoch: int, epochs: int, train_loss: float, val_loss: float) -> None:
        epoch_ends.append(time.perf_counter())
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    model.fit(args.data_root, category=args.category, dataset=args.dataset, device=device,
              epochs=args.epochs, progress=True, callback=on_epoch)  # fmt: skip
    total_s = time.perf_counter() - start
    epoch_s = [b - a for a, b in itertools.pairwise(epoch_ends)]
    report: dict[str, Any] = {
        "benchmark": "gpu_paper",
        "machine": machine(device),
        "settings": vars(args),
        "backbone_weights": backbone,
        "epochs": args.epochs,
        "train_total_s": total_s,  # loading, feature cache, all epochs, calibration
        "train_setup_s": epoch_ends[0] - start - (median(epoch_s) if epoch_s else 0.0),
        "epoch_s_median": median(epoch_s) if epoch_s else epoch_ends[0] - start,
        "epoch_s_mean": sum(epoch_s) / len(epoch_s) if epoch_s else None,
        "history": history,
        "threshold": float(model.threshold),
    }
    if device.type == "cuda":
        report["peak_gpu_train_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    report["peak_rss_mb"] = peak_rss_mb()
    report.update(throughput(model, device, args.batch, args.repeats))
    report["batch"] = args.batch

    start = time.perf_counter()
    metrics = evaluate(model, test, batch_size=32, progress=True, load_mask=load_mask)
    report["evaluate_s"] = time.perf_counter() - start
    metrics.pop("scores", None)
    report["metrics"] = metrics
    report["paper_dataset_mean_percent"] = PAPER_RESULTS.get(args.dataset)
    if args.checkpoint:
        model.save_pretrained(args.checkpoint)
    write_json(args.out, report)
    shown = {
        k: report.get(k)
        for k in (
            "epoch_s_median",
            "train_total_s",
            "peak_gpu_train_mb",
            "throughput_fp32_img_s",
            "throughput_bf16_autocast_img_s",
        )
    }
    shown.update({k: metrics.get(k) for k in ("image_auroc", "pixel_auroc", "aupro")})
    for key, value in shown.items():
        if value is not None:
            print(f"{key:>32}: {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
