"""ULSAD's lite preset against anomalib's PatchCore and PaDiM, trained and scored in one run.

    python -m benchmarks.peers --category mpdd:/data/mpdd:metal_plate \\
        --category mvtec_ad:/data/kolektorsdd:commutator --out benchmarks/reports/peers_cpu.json

Each `--category DATASET:ROOT:CATEGORY` (a `ulsad.data` layout name, its root, a category) is
used by four methods, on the same images, the same ImageNet backbone weights
(`tf_efficientnet_lite0`, feature maps blocks.2 and blocks.4, strides 8 and 16) and the same
256x256 input size (each method's defaults: ulsad cuts images of aspect ratio 2 or more into
square tiles of that size, anomalib resizes every image to one square):

- ulsad: `ULSAD.from_preset("lite").fit(root, category=..., dataset=..., progress=False)`, what
  `ulsad train` does without flags (its defaults; it holds out 10% of the good training images for
  its own calibration);
- anomalib 2's PatchCore (`PatchcoreModel`, coreset sampling ratio 0.01 and 0.1, 9 neighbours) and
  PaDiM (`PadimModel`, 100 random features), their plain torch models as the Lightning modules
  drive them: one pass in train mode over all good training images (batches of 32, anomalib's
  default) collects embeddings, then `subsample_embedding(ratio)` / `fit()`. Their backbone is
  built with `pre_trained=False` and gets the offline weights ulsad uses
  (`ulsad.backbones.lite_state_dict`, loaded strict and checked equal to ulsad's backbone).

Inputs of the peers are made as anomalib makes them: `anomalib.data.utils.image.read_image` (RGB,
float in [0, 1]), then the Lightning module's default pre-processor, taken from
`Patchcore.configure_pre_processor()` (Resize to 256x256, bilinear with antialiasing, then
ImageNet mean/std). Note that anomalib normalises with ImageNet statistics whatever the backbone:
tf_efficientnet_lite0 was trained on inputs scaled with mean = std = 0.5, which ulsad uses.
`--peer-normalization backbone` gives the peers that normalisation instead (not anomalib's
behaviour; to see how much it matters). anomalib's timm extractor also runs every block of the
backbone (blocks 5 and 6 are computed and discarded); ulsad stops after block 4. Both are
anomalib's own behaviour and are kept.

Measured per category and method, on the test split:

- accuracy: image AUROC, pixel AUROC, AUPRO (and F1-max), all from `ulsad.evaluate.evaluate`
  with `ulsad.data.load_mask`, on anomaly maps at each image's original size (the peers' 256x256
  maps are resized bilinearly, as ulsad's are);
- fit time: wall clock of training, image reading included (model construction excluded); the
  methods are fitted one after the other, so unlike latency this is not interleaved;
- latency: median seconds of batch-1 forward passes over the test images (already read and
  resized to 256x256; normalisation, network and post-processing to the 256x256 map timed; an
  elongated image is, for ulsad's default `tile`, the batch of its square tiles, so a
  commutator image costs three forward passes' worth, while the peers squash it to one square),
  after warm-up, with the methods interleaved in rounds (`benchmarks.common.interleaved`) so
  that other load on the machine affects all of them alike. The backbone pass alone (ulsad's at
  its input size; the peers' shared one at 256 px) is timed in the same rounds: no method is
  faster than its backbone, so peer latency / ulsad's backbone bounds the speed ratio that any
  ulsad head could reach;
- memory: each fitted model is saved, then loaded in a fresh child process (this script with
  `--memory-probe`) that scores `--memory-images` test images at batch 1 with `predict`. After
  the imports, the child resets the kernel's peak-RSS counter (`/proc/self/clear_refs`, 5), so
  VmHWM afterwards is the peak of model loading and scoring alone; it resets it again after
  loading. Reported: `model_mb` (RSS after loading - RSS after imports) and
  `inference_peak_mb` (peak RSS while scoring - RSS after imports: weights plus working memory,
  the figure compared; `file_pages_mb` is the part of the RSS after scoring that is pages of
  mapped files, mostly shared-library code run for the first time, not the model's own
  memory). Where the counter cannot be reset, VmHWM - RSS after imports is
  reported instead (it then also includes transient peaks of loading), flagged in the JSON.

Ratios are ulsad against each peer: accuracy differences (ulsad - peer, > 0: ulsad better),
speed ratio (peer latency / ulsad latency, > 1: ulsad faster), memory ratio (peer / ulsad, > 1:
ulsad leaner) and fit-time ratio (peer / ulsad). Writes a JSON report and a Markdown summary
beside it (same name, .md). anomalib is not a dependency of ulsad: install it to run this
(`pip install "anomalib>=2,<3"`). `--quick` (8 training and 8 test images, 2 ulsad epochs) is a
smoke run for development only; its numbers mean nothing.
"""

from __future__ import annotations

import os

# Before torch starts OpenMP: idle threads sleep instead of spinning (see benchmarks/inference.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# No progress bars (anomalib's coreset selection draws one per fit), unless asked for.
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import gc
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import (
    REPOSITORY,
    interleaved,
    machine,
    median,
    peak_rss_mb,
    python_module,
    status_mb,
    table,
    write_json,
)
from ulsad import ULSAD
from ulsad.backbones import lite_state_dict
from ulsad.data import load_mask, load_split
from ulsad.devices import resolve_device
from ulsad.evaluate import evaluate
from ulsad.images import load_image, to_tiles
from ulsad.presets import preset_config
from ulsad.train import split_holdout

ULSAD_NAME = "ulsad lite"
# The backbone pass alone, timed with the methods: no method on it can be faster than its backbone.
BACKBONE_ROWS = ("ulsad lite: backbone alone", "PatchCore / PaDiM: backbone alone")
BACKBONE = "tf_efficientnet_lite0"
LAYERS = ["blocks.2", "blocks.4"]  # strides 8 and 16: ulsad lite's layers (2, 3)
IMAGE_SIZE = 256
TRAIN_BATCH = 32  # anomalib's default train_batch_size
PEERS: dict[str, dict[str, Any]] = {
    "PatchCore (coreset 0.01)": {
        "kind": "patchcore",
        "key": "patchcore-0.01",
        "coreset_sampling_ratio": 0.01,
    },
    "PatchCore (coreset 0.1)": {
        "kind": "patchcore",
        "key": "patchcore-0.1",
        "coreset_sampling_ratio": 0.1,
    },
    "PaDiM (100 features)": {"kind": "padim", "key": "padim", "n_features": 100},
}
METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")


# ----------------------------------------------------------------------------------- anomalib
def import_anomalib() -> SimpleNamespace:
    """anomalib's pieces used here, imported on demand: it is not a dependency of ulsad."""
    try:
        import anomalib
        from anomalib.data.utils.image import read_image
        from anomalib.models import Padim, Patchcore
        from anomalib.models.image.padim.torch_model import PadimModel
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel
    except ImportError as error:
        raise SystemExit(
            f"benchmarks/peers.py needs anomalib 2, which ulsad does not depend on ({error}).\n"
            'Install it into this environment: pip install "anomalib>=2,<3"'
        ) from error
    return SimpleNamespace(version=anomalib.__version__, read_image=read_image,
                           Patchcore=Patchcore, Padim=Padim, PatchcoreModel=PatchcoreModel,
                           PadimModel=PadimModel)  # fmt: skip


class AnomalibInput:
    """anomalib 2's input pipeline for these models: `read_image`, then the Lightning module's
    default pre-processor transform (Resize 256x256 antialiased, Normalize ImageNet)."""

    def __init__(self, normalization: str = "imagenet"):
        from torchvision.transforms.v2 import Compose, Normalize, Resize

        self.anomalib = import_anomalib()
        transform = self.anomalib.Patchcore.configure_pre_processor().transform
        if repr(transform) != repr(self.anomalib.Padim.configure_pre_processor().transform):
            raise RuntimeError("anomalib's PatchCore and PaDiM pre-processors differ: check them")
        steps = transform.transforms if isinstance(transform, Compose) else [transform]
        if not (len(steps) == 2 and isinstance(steps[0], Resize)
                and list(steps[0].size) == [IMAGE_SIZE, IMAGE_SIZE]
                and isinstance(steps[1], Normalize)):  # fmt: skip
            raise RuntimeError(
                f"unexpected anomalib pre-processor (update this script): {transform}"
            )
        self.resize, self.normalize = steps
        if normalization == "backbone":  # not anomalib's behaviour: the backbone's own statistics
            self.normalize = Normalize(mean=[0.5] * 3, std=[0.5] * 3)
        n = self.normalize
        self.description = (
            f"anomalib read_image -> Resize({list(self.resize.size)}, bilinear, antialias="
            f"{self.resize.antialias}) -> Normalize(mean={list(n.mean)}, std={list(n.std)})"
        ) + (
            " (the backbone's statistics: not anomalib's default)"
            if normalization == "backbone"
            else ""
        )

    def resized(self, path: Path) -> tuple[Tensor, tuple[int, int]]:
        """(3, 256, 256) float image in [0, 1] and the original (H, W)."""
        image = self.anomalib.read_image(path, as_tensor=True)
        return self.resize(image), tuple(image.shape[-2:])


def build_peer(spec: dict[str, Any], imagenet: bool) -> nn.Module:
    """A peer's torch model; `imagenet`: put the offline ImageNet weights into its backbone."""
    a = import_anomalib()
    if spec["kind"] == "patchcore":
        model = a.PatchcoreModel(layers=LAYERS, backbone=BACKBONE, pre_trained=False)
    else:
        model = a.PadimModel(backbone=BACKBONE, layers=LAYERS, pre_trained=False,
                             n_features=spec["n_features"])  # fmt: skip
    if imagenet:
        body = model.feature_extractor.feature_extractor
        result = body.load_state_dict(lite_state_dict(body, BACKBONE[-5:]), strict=True)
        assert not result.missing_keys and not result.unexpected_keys, result
    return model


def check_same_backbone(ulsad: ULSAD, peer: nn.Module) -> None:
    """Every tensor of ulsad's (truncated) backbone equals the peer's, running statistics too."""
    theirs = peer.feature_extractor.feature_extractor.state_dict()
    for key, value in ulsad.extractor.body.state_dict().items():
        if not torch.equal(theirs[key].cpu(), value.cpu()):
            raise RuntimeError(f"backbone weights differ at {key}")


class PeerPredictor:
    """A peer behind `ulsad.evaluate`'s `predict(paths, batch_size)`: scores and maps at original size."""

    def __init__(self, model: nn.Module, pipeline: AnomalibInput, device: torch.device):
        self.model, self.pipeline, self.device = model, pipeline, device

    @torch.inference_mode()
    def forward(self, resized: Tensor, module: nn.Module | None = None) -> Any:
        """(B, 3, 256, 256) in [0, 1] -> anomalib's InferenceBatch (pred_score, anomaly_map);
        `module`: run that part of the model (its backbone) on the normalised input instead."""
        return (module or self.model)(self.pipeline.normalize(resized.to(self.device)))

    def predict(self, paths: Sequence[Path], batch_size: int = 16) -> list[SimpleNamespace]:
        self.model.eval()
        results = []
        for start in range(0, len(paths), batch_size):
            loaded = [self.pipeline.resized(p) for p in paths[start : start + batch_size]]
            out = self.forward(torch.stack([x for x, _ in loaded]))
            scores = out.pred_score.reshape(len(loaded)).float().cpu()
            for i, (_, size) in enumerate(loaded):
                amap = F.interpolate(out.anomaly_map[i].reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE),
                                     size=size, mode="bilinear", align_corners=False)  # fmt: skip
                results.append(SimpleNamespace(score=float(scores[i]),
                                               anomaly_map=amap[0, 0].float().cpu().numpy()))  # fmt: skip
        return results


def fit_peer(
    model: nn.Module, spec: dict[str, Any], paths: Sequence[Path], pipeline: AnomalibInput,
    device: torch.device,
) -> None:  # fmt: skip
    """What anomalib's Lightning module does in its one epoch: embeddings in train mode, then fit."""
    model.to(device).train()
    for start in range(0, len(paths), TRAIN_BATCH):
        batch = torch.stack([pipeline.resized(p)[0] for p in paths[start : start + TRAIN_BATCH]])
        model(pipeline.normalize(batch.to(device)))
    if spec["kind"] == "patchcore":
        model.subsample_embedding(spec["coreset_sampling_ratio"])
    else:
        model.fit()
    model.eval()


# ----------------------------------------------------------------------------------- memory
def rss_mb() -> float:
    """Resident memory of this process now (MiB, Linux), or its peak where VmRSS is unknown."""
    rss = status_mb("VmRSS")
    return peak_rss_mb() if rss is None else rss


def reset_peak_rss() -> bool:
    """Set VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def memory_probe(kind: str, path: str, args: argparse.Namespace) -> None:
    """Child process: load one fitted model, score images at batch 1, print memory (MiB) as JSON."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    paths = [Path(p) for p in json.loads(Path(args.probe_images).read_text())]
    pipeline = None if kind == "ulsad" else AnomalibInput(args.peer_normalization)
    reset = reset_peak_rss()
    base, base_file = rss_mb(), status_mb("RssFile")  # RssFile: pages of mapped files
    if kind == "ulsad":
        model = ULSAD.from_pretrained(path).to(device)
        predictor: Any = model
    else:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = build_peer(json.loads(saved["spec"]), imagenet=False)
        model.load_state_dict(saved["state_dict"], strict=True)
        del saved  # the loaded copy: not part of the model's footprint
        gc.collect()
        predictor = PeerPredictor(model.to(device).eval(), pipeline, device)
    loaded = rss_mb()
    reset = reset_peak_rss() and reset
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for p in paths:
        predictor.predict([p], batch_size=1)
    file_pages = status_mb("RssFile")
    result = {"rss_after_import_mb": base, "model_mb": loaded - base,
              "inference_peak_mb": peak_rss_mb() - base, "peak_counter_reset": reset,
              "file_pages_mb": None if file_pages is None else file_pages - base_file,
              "images_scored": len(paths)}  # fmt: skip
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(result))


def measure_memory(kind: str, path: Path, images: Path, args: argparse.Namespace) -> dict:
    command = [*python_module(__spec__.name), "--memory-probe", kind, str(Path(path).resolve()),
               "--probe-images", str(Path(images).resolve()),
               "--peer-normalization", args.peer_normalization]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.device:
        command += ["--device", args.device]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY)
    if done.returncode:
        raise RuntimeError(f"memory probe of {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------- one category
def parse_category(text: str) -> tuple[str, str, str]:
    dataset, sep, rest = text.partition(":")
    root, sep2, category = rest.rpartition(":")
    if not (sep and sep2 and dataset and root and category):
        raise argparse.ArgumentTypeError(f"expected DATASET:ROOT:CATEGORY, got {text!r}")
    return dataset, root, category


def cycling(fn: Callable[[Tensor], Any], inputs: list[Tensor]) -> Callable[[], None]:
    """A call that runs `fn` on the next input, round and round."""
    items = itertools.cycle(inputs)

    def call() -> None:
        fn(next(items))

    return call


def run_category(
    dataset: str, root: str, category: str, args: argparse.Namespace, device: torch.device,
    pipeline: AnomalibInput, workdir: Path,
) -> dict[str, Any]:  # fmt: skip
    name = f"{dataset}/{category}"
    train = [s.path for s in load_split(dataset, root, category, "train") if s.label == 0]
    test = load_split(dataset, root, category, "test")
    if args.quick:  # smoke run: a few training images, 4 good and 4 defective test images
        train = train[:8]
        test = [s for s in test if s.label == 0][:4] + [s for s in test if s.label == 1][:4]
    print(f"[{name}] {len(train)} good training images, {len(test)} test images")
    rows: list[dict[str, Any]] = []
    predictors: dict[str, Any] = {}
    latency_fns: dict[str, Callable[[], None]] = {}
    latency_images = [s.path for s in test][: args.latency_images or None]
    folder = workdir / f"{dataset}_{category}"
    folder.mkdir(parents=True)
    memory_images = folder / "memory_images.json"
    memory_images.write_text(json.dumps([str(s.path) for s in test][: args.memory_images]))

    # ulsad: `ulsad train` without flags (in --quick: a list of 8 images, 2 epochs).
    torch.manual_seed(0)
    model = ULSAD.from_preset("lite", **({"epochs": 2} if args.quick else {}))
    fit_kwargs: dict[str, Any] = {"progress": False}
    if args.device:
        fit_kwargs["device"] = args.device
    start = time.perf_counter()
    if args.quick:
        model.fit(train, **fit_kwargs)
    else:
        model.fit(root, category=category, dataset=dataset, **fit_kwargs)
    fit_s = time.perf_counter() - start
    model.eval()
    cfg, recipe = model.config, model.recipe
    has_validation = not args.quick and bool(load_split(dataset, root, category, "validation"))
    ulsad_train = (
        len(train)
        if has_validation
        else len(split_holdout(train, recipe.val_fraction, recipe.seed)[0])
    )
    print(f"[{name}] {ULSAD_NAME}: fit {fit_s:.1f} s")
    rows.append({"method": ULSAD_NAME, "fit_s": fit_s, "train_images": ulsad_train,
                 "config": cfg.to_dict(), "recipe": recipe.to_dict()})  # fmt: skip
    predictors[ULSAD_NAME] = model
    # An elongated image is all its tiles at once (`tile`): one image, one forward call.
    ulsad_inputs = [to_tiles(load_image(p), cfg.image_size, cfg.tile)[0].to(model.device)
                    for p in latency_images]  # fmt: skip

    def ulsad_forward(x: Tensor) -> None:
        with torch.inference_mode():
            model(x)

    latency_fns[ULSAD_NAME] = cycling(ulsad_forward, ulsad_inputs)

    def ulsad_backbone(x: Tensor) -> None:
        with torch.inference_mode():
            model.features(model.backbone_input(x))

    latency_fns[BACKBONE_ROWS[0]] = cycling(ulsad_backbone, ulsad_inputs)
    saved = model.save_pretrained(folder / "ulsad")
    if args.keep_ulsad:  # for later study (e.g. benchmarks.score_rules) without refitting
        shutil.copytree(saved, Path(args.keep_ulsad) / f"{dataset}_{category}", dirs_exist_ok=True)
    checkpoints = {ULSAD_NAME: ("ulsad", saved)}

    peer_inputs = [pipeline.resized(p)[0][None] for p in latency_images]
    for method, spec in PEERS.items():
        if spec["key"] in args.without:
            continue
        # PaDiM's feature choice and the coreset's first point draw from torch; the coreset's
        # sparse random projection from NumPy's global generator (anomalib passes no
        # random_state): unseeded, PatchCore 1% moved by up to 0.04 AUPRO between runs.
        torch.manual_seed(0)
        np.random.seed(0)
        peer = build_peer(spec, imagenet=True)
        check_same_backbone(model, peer)
        start = time.perf_counter()
        fit_peer(peer, spec, train, pipeline, device)
        fit_s = time.perf_counter() - start
        print(f"[{name}] {method}: fit {fit_s:.1f} s")
        row: dict[str, Any] = {"method": method, "fit_s": fit_s, "train_images": len(train),
                               **spec}  # fmt: skip
        if spec["kind"] == "patchcore":
            row["memory_bank"] = list(peer.memory_bank.shape)
        rows.append(row)
        predictor = PeerPredictor(peer, pipeline, device)
        predictors[method] = predictor
        latency_fns[method] = cycling(predictor.forward, peer_inputs)
        if BACKBONE_ROWS[1] not in latency_fns:  # every peer runs the same backbone (checked)
            backbone = partial(predictor.forward, module=peer.feature_extractor)
            latency_fns[BACKBONE_ROWS[1]] = cycling(backbone, peer_inputs)
        path = folder / f"{spec['kind']}_{len(checkpoints)}.pt"
        torch.save({"spec": json.dumps(spec), "state_dict": peer.state_dict()}, path)
        checkpoints[method] = (spec["kind"], path)

    for row in rows:
        method = row["method"]
        print(f"[{name}] {method}: evaluating {len(test)} test images")
        metrics = evaluate(predictors[method], test, batch_size=16, progress=False,
                           load_mask=load_mask)  # fmt: skip
        row.update({k: metrics.get(k) for k in METRICS})
        row["metrics"] = metrics

    repeats = len(latency_images) if args.repeats is None else args.repeats
    print(f"[{name}] latency at batch 1: {repeats} interleaved rounds over {len(latency_images)} "
          "test images")  # fmt: skip
    times = interleaved(latency_fns, device, repeats, args.warmup)
    for row in rows:
        samples = times[row["method"]]
        row["latency_ms"] = 1000 * median(samples)
        row["latency_min_ms"] = 1000 * min(samples)
        row["latency_samples_ms"] = [1000 * t for t in samples]
    backbones = [{"method": key, "latency_ms": 1000 * median(times[key])}
                 for key in BACKBONE_ROWS if key in times]  # fmt: skip

    if args.memory:
        for row in rows:
            print(f"[{name}] {row['method']}: memory probe (child process)")
            row.update(measure_memory(*checkpoints[row["method"]], memory_images, args))

    base = rows[0]
    ratios = []
    for row in rows[1:]:
        entry: dict[str, Any] = {"peer": row["method"]}
        for key in ("image_auroc", "pixel_auroc", "aupro"):
            both = base.get(key) is not None and row.get(key) is not None
            entry[f"{key}_diff"] = base[key] - row[key] if both else None
        entry["speed_ratio"] = row["latency_ms"] / base["latency_ms"]
        entry["bound_speed_ratio"] = row["latency_ms"] / backbones[0]["latency_ms"]
        entry["fit_time_ratio"] = row["fit_s"] / base["fit_s"]
        if "inference_peak_mb" in row:
            entry["memory_ratio"] = row["inference_peak_mb"] / base["inference_peak_mb"]
        ratios.append(entry)
    return {"name": name, "dataset": dataset, "root": root, "category": category,
            "n_train": len(train), "n_test": len(test), "rows": rows, "ratios": ratios,
            "backbones": backbones}  # fmt: skip


# ----------------------------------------------------------------------------------- report
COLUMNS = [
    ("method", "method", "s"), ("image_auroc", "image AUROC", ".3f"),
    ("pixel_auroc", "pixel AUROC", ".3f"), ("aupro", "AUPRO", ".3f"), ("fit_s", "fit s", ".1f"),
    ("latency_ms", "batch-1 ms", ".1f"), ("inference_peak_mb", "infer. MiB", ".0f"),
    ("file_pages_mb", "file pages MiB", ".0f"), ("model_mb", "model MiB", ".0f"),
    ("train_images", "train img", "d"),
]  # fmt: skip
RATIO_COLUMNS = [
    ("peer", "ulsad vs", "s"), ("image_auroc_diff", "d image AUROC", "+.3f"),
    ("pixel_auroc_diff", "d pixel AUROC", "+.3f"), ("aupro_diff", "d AUPRO", "+.3f"),
    ("speed_ratio", "peer/ulsad latency", ".2f"),
    ("bound_speed_ratio", "peer / ulsad backbone alone", ".2f"),
    ("memory_ratio", "peer/ulsad memory", ".2f"),
    ("fit_time_ratio", "peer/ulsad fit time", ".2f"),
]  # fmt: skip

BACKBONE_COLUMNS = [("method", "backbone", "s"), ("latency_ms", "batch-1 ms", ".1f")]


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        return "-" if row.get(key) is None else format(row[key], fmt)

    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]  # fmt: skip
    lines += ["| " + " | ".join(cell(r, k, f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    malloc = " ".join(f"{k}={v}" for k, v in (m.get("malloc_env") or {}).items())
    malloc_line = [f"glibc malloc settings: `{malloc}` (fit times depend on them: "
                   "docs/results.md, the peers tables)."] if malloc else []  # fmt: skip
    lines = [
        "# ulsad lite against anomalib PatchCore and PaDiM",
        "",
        f"`python -m benchmarks.peers {' '.join(report['argv'])}`"
        + (" (**--quick smoke run: numbers mean nothing**)" if s["quick"] else ""),
        "",
        f"Machine: {m.get('cpu')} ({m.get('cpu_count')} CPUs, {m.get('torch_threads')} torch "
        f"threads), device {m.get('device')}; ulsad {m.get('ulsad')} (commit "
        f"{m.get('git_commit', '?')}), anomalib {report['anomalib']}, torch {m.get('torch')}.",
        f"Same images, same `{BACKBONE}` ImageNet weights (blocks.2 + blocks.4); each method "
        f"at its default input size (ulsad lite {preset_config('lite').image_size} px, the peers "
        f"{IMAGE_SIZE} px). Peer inputs: {report['peer_preprocessing']}.",
        *malloc_line,
        "Latency: median batch-1 forward pass over the test images, methods interleaved. Memory: "
        "peak RSS of a fresh process loading the model and scoring "
        f"{s['memory_images']} test images, minus its RSS after imports (file pages: the part "
        "of the RSS after scoring that is mapped files, mostly torch's library code run for the "
        "first time). Ratios: accuracy "
        "ulsad - peer; latency, memory and fit time peer / ulsad.",
    ]
    for cat in report["categories"]:
        lines += ["", f"## {cat['name']} ({cat['n_train']} train, {cat['n_test']} test images)",
                  "", markdown_table(cat["rows"], COLUMNS), "",
                  markdown_table(cat["ratios"], RATIO_COLUMNS)]  # fmt: skip
        if cat.get("backbones"):  # reports before this column have none
            lines += ["", "Backbone alone, timed with the methods (batch 1; each at its method's "
                      "input size). No method is faster than its backbone, so 'peer / ulsad "
                      "backbone alone' bounds the speed ratio any ulsad head could reach:", "",
                      markdown_table(cat["backbones"], BACKBONE_COLUMNS)]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", action="append", type=parse_category, default=[],
                        metavar="DATASET:ROOT:CATEGORY",
                        help="e.g. mpdd:/data/mpdd:metal_plate (repeatable)")  # fmt: skip
    parser.add_argument("--device", help="cpu, cuda, ... (default: as `ulsad train`, the best)")
    parser.add_argument("--without", action="append", default=[],
                        choices=[spec["key"] for spec in PEERS.values()],
                        help="leave a peer out (PatchCore 0.1's coreset selection grows as "
                             "patches^2: hours on 2 CPU cores for 200+ images)")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--peer-normalization", choices=["imagenet", "backbone"],
                        default="imagenet",
                        help="imagenet: anomalib's default pre-processor (the default); backbone: "
                             "the backbone's own mean/std, 0.5 (not what anomalib does)")  # fmt: skip
    parser.add_argument("--latency-images", type=int,
                        help="test images cycled through for latency (default: all)")  # fmt: skip
    parser.add_argument("--repeats", type=int,
                        help="timed rounds at batch 1 (default: one per latency image)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls of each method first")
    parser.add_argument("--memory-images", type=int, default=16,
                        help="test images each memory probe scores")  # fmt: skip
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip peak memory (one child process per method)")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 8 train / 8 test images, 2 ulsad epochs (development)")  # fmt: skip
    parser.add_argument("--keep-ulsad", metavar="DIR",
                        help="also save ulsad's fitted model of each category under DIR/"
                        "DATASET_CATEGORY")  # fmt: skip
    parser.add_argument("--out", help="JSON report (a .md beside it); default "
                        "benchmarks/reports/peers_cpu.json, none with --quick")  # fmt: skip
    parser.add_argument("--memory-probe", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--probe-images", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.memory_probe:
        memory_probe(*args.memory_probe, args)
        return 0
    if not args.category:
        parser.error("give at least one --category DATASET:ROOT:CATEGORY")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.memory_images = min(args.memory_images, 4)
    out = args.out
    if out is None and not args.quick:
        out = str(Path(__file__).resolve().parent / "reports" / "peers_cpu.json")

    pipeline = AnomalibInput(args.peer_normalization)  # fails early, with a message, without it
    device = resolve_device(args.device)
    report: dict[str, Any] = {
        "benchmark": "peers", "machine": machine(device),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "settings": {k: v for k, v in vars(args).items() if k not in ("memory_probe",
                                                                      "probe_images")},
        "anomalib": pipeline.anomalib.version, "peer_preprocessing": pipeline.description,
        "backbone": BACKBONE, "layers": LAYERS, "image_size": IMAGE_SIZE,
        "peers": PEERS, "categories": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, root, category in args.category:
            result = run_category(dataset, root, category, args, device, pipeline, Path(tmp))
            report["categories"].append(result)
            print(f"\n{result['name']}")
            print(table(result["rows"], COLUMNS))
            print(table(result["ratios"], RATIO_COLUMNS) + "\n")
    write_json(out, report)
    if out is not None:
        from ulsad.files import write_text_atomic

        md = Path(out).with_suffix(".md")
        write_text_atomic(md, markdown_report(report))
        print(f"Wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
