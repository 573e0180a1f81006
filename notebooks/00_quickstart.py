# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: score images with a trained ULSAD checkpoint
#
# ULSAD finds defects after training on defect-free images only: **structural** ones
# (scratches, dents, contamination) with its local branch and **logical** ones (a missing,
# extra or misplaced part) with its global branch. This notebook
# 1. loads a checkpoint: one embedded in the package (`weights/`), or one published on the
#    Hugging Face Hub (downloaded once into the Hugging Face cache, pinned with `REVISION`);
# 2. scores images and shows the anomaly maps;
# 3. picks a threshold, and explains what each choice costs.
#
# It needs no GPU. In smoke mode (`SMOKE = True` or `ULSAD_SMOKE=1`) it scores only a few
# images; if no checkpoint can be loaded (no embedded one, the Hub unreachable) it trains a
# tiny model on a synthetic dataset first, so that it always runs.

# %% tags=["parameters"]
CHECKPOINT = "bottle"  # an embedded name, a checkpoint folder, or a Hub repo id "owner/name"
REVISION = None  # for a Hub repo: a branch, tag or commit to pin; None: the main branch
IMAGES = None  # a folder or a list of image files; None: test images of a dataset category
DATASET, CATEGORY = None, None  # that category; None: the checkpoint's own (weights/manifest.json)
DATA_ROOT = None  # the dataset's root; None: ../../shared/data/<dataset> if present
N_IMAGES = 24  # how many test images to score (half good, half defective)
SMOKE = False  # True: score a handful of images (also ULSAD_SMOKE=1)

# %%
import os

SMOKE = SMOKE or os.environ.get("ULSAD_SMOKE") == "1"  # CI runs every notebook with ULSAD_SMOKE=1

import json
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # text progress bars are fine

import numpy as np
import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display
from tqdm.auto import tqdm

import ulsad
from ulsad import ULSAD, ULSADError
from ulsad.data import load_split, make_synthetic_dataset
from ulsad.devices import resolve_device
from ulsad.hub import available_checkpoints, read_manifest
from ulsad.images import find_images, load_image
from ulsad.visualize import overlay

from helpers.plots import hide_axes, maps_figure, markdown_table, score_histogram

NOTEBOOKS = Path.cwd()  # run from notebooks/ (as CI does)
SHARED_DATA = NOTEBOOKS.parent.parent / "shared" / "data"  # real data beside the repository, if any
print(
    f"ulsad {ulsad.__version__}, torch {torch.__version__}, device {resolve_device(None)}, "
    f"smoke mode: {SMOKE}"
)

if SMOKE:
    N_IMAGES = 6

# %% [markdown]
# ## 1. Load a checkpoint
#
# A checkpoint is a folder with `model.safetensors` (weights, feature statistics, map
# quantiles, default threshold) and `config.json`; it loads without pickle. `weights/manifest.json`
# lists the embedded checkpoints and the Hub repositories where published ones live.
# `ULSAD.from_pretrained(name)` tries a folder, then an embedded name, then a Hub repo id; from the
# Hub it downloads `config.json` and `model.safetensors` with `huggingface_hub` into its cache
# (`HF_HOME`), so that the next load works offline (`HF_HUB_OFFLINE=1`). The cell shows where
# the files came from.

# %%
manifest = read_manifest()
print("embedded checkpoints installed:", available_checkpoints() or "none")
for name, entry in manifest["checkpoints"].items():
    print(f"  {name}: {entry['title']} (Hub: {entry['hub_repo_id']})")


def load_checkpoint(name, revision=None):
    if Path(name).expanduser().is_dir() or name in available_checkpoints():
        print(f"{name}: local or embedded files")
        return ULSAD.from_pretrained(name)
    from huggingface_hub import try_to_load_from_cache

    entry = manifest["checkpoints"].get(name)
    repo_id = entry["hub_repo_id"] if entry else name
    loaded = ULSAD.from_pretrained(repo_id, revision=revision)  # downloads once, then cached
    cached = try_to_load_from_cache(repo_id, "model.safetensors", revision=revision)
    print(f"{name}: Hub repo {repo_id} at {revision or 'main'}, cached in {Path(cached).parent}")
    return loaded


entry = manifest["checkpoints"].get(CHECKPOINT, {})
try:
    model = load_checkpoint(CHECKPOINT, REVISION)
    source = CHECKPOINT
except Exception as error:  # no embedded copy, and the Hub is unreachable (offline, CI)
    if not SMOKE:
        raise
    print(
        f"could not load {CHECKPOINT!r} ({type(error).__name__}: {error}); smoke mode: "
        "training a small model on synthetic images instead"
    )
    WORK = tempfile.TemporaryDirectory(prefix="ulsad-smoke-")
    make_synthetic_dataset(
        WORK.name, "synthetic", n_train=16, n_test_good=6, n_test_defect=8, size=128
    )
    model = ULSAD.from_preset(
        "lite", image_size=128, epochs=10, lr=1e-3, lr_milestones=[10], batch_size=4
    )
    model.fit(WORK.name, category="synthetic", device="cpu")
    DATASET, CATEGORY, DATA_ROOT, source = "mvtec_ad", "synthetic", WORK.name, "synthetic"
cfg = model.config
print(
    f"{source}: backbone {cfg.backbone}, {cfg.image_size} px, calibrated: {model.calibrated}, "
    f"default threshold {model.threshold.item():.4f}"
)

# %% [markdown]
# ## 2. Score images
#
# `model.predict` takes a path, a PIL image, a numpy array, a tensor, or a list of them, and
# returns one `Prediction` per image: `score` (the maximum of the anomaly map), `anomaly_map`,
# `local_map`, `global_map` (float32, at the image's original size), `threshold` and
# `is_anomalous`. Here: test images of the checkpoint's category, when the dataset is found.

# %%
samples = []
dataset, category = DATASET or entry.get("dataset"), CATEGORY or entry.get("category")
root = Path(DATA_ROOT) if DATA_ROOT else SHARED_DATA / str(dataset)
if IMAGES is None and not (dataset and (root / category).is_dir()):
    if not SMOKE:
        raise ULSADError(f"no test images of {category!r} under {root}: set DATA_ROOT or IMAGES.")
    print(f"no test images of {category!r} under {root}; smoke mode: scoring synthetic images")
    IMAGES_DIR = tempfile.TemporaryDirectory(prefix="ulsad-smoke-")
    dataset, root, category = "mvtec_ad", Path(IMAGES_DIR.name), "synthetic"
    make_synthetic_dataset(root, category, n_train=1, n_test_good=3, n_test_defect=3, size=256)
if IMAGES is not None:
    paths = find_images(IMAGES) if isinstance(IMAGES, (str, Path)) else [Path(p) for p in IMAGES]
else:
    test = load_split(dataset, root, category, "test")
    good = [s for s in test if s.label == 0]
    defective = [s for s in test if s.label == 1]
    step = max(1, len(defective) // (N_IMAGES - N_IMAGES // 2))  # spread over the defect types
    samples = good[: N_IMAGES // 2] + defective[::step][: N_IMAGES - N_IMAGES // 2]
    paths = [s.path for s in samples]
predictions = []
for start in tqdm(range(0, len(paths), 4), desc="scoring", unit="batch"):
    predictions += model.predict(paths[start : start + 4])
labels = [s.label for s in samples] if samples else None
verdicts = {True: "anomalous", False: "good", None: "-"}
rows = [
    [
        paths[i].name,
        samples[i].defect if samples else "?",
        f"{predictions[i].score:.4f}",
        verdicts[predictions[i].is_anomalous],
    ]
    for i in np.argsort([-p.score for p in predictions])
]
display(Markdown(markdown_table(["image", "truth", "score", "default verdict"], rows)))


# %% [markdown]
# **The maps.** The local map is the feature reconstruction error (wrong texture: structural
# defects); the global map is the disagreement between the global branch, which only knows the
# image's overall layout, and the local branch (wrong arrangement: logical defects). Both are
# normalised on held-out good images (0 = their 90th, 0.1 = their 99.5th percentile), then
# averaged into the anomaly map. Hover over a heatmap to read values.

# %%
order = np.argsort([-p.score for p in predictions])
picked = [
    int(order[0]),
    int(order[len(order) // 2]),
    int(order[-1]),
]  # most, middle, least anomalous
maps_figure(
    [paths[i] for i in picked],
    [predictions[i] for i in picked],
    model.threshold.item() if model.calibrated else None,
    row_titles=[f"{paths[i].name}<br>{predictions[i].score:.3f}" for i in picked],
    columns=["image", "local map", "global map", "anomaly map"],
    side=192,
).show()

# %% [markdown]
# ## 3. Pick a threshold
#
# Scores rank images; deciding needs a threshold, and every choice trades missed defects
# against false alarms.
# - **The checkpoint's default**: the highest score among the good images held out of training.
#   It needs no defective images and flags anything more unusual than every held-out good
#   image; with few held-out images it tends to be strict (few false alarms).
# - **A false-alarm budget**: a quantile of scores of good images you trust (here the good test
#   images; in production, a fresh set of good images), e.g. accept 5% false alarms.
# - **The best F1 on labelled images**: needs defective examples, and when chosen on the same
#   images it is evaluated on, it is optimistic. Never report metrics with a threshold picked
#   on the test set.

# %%
scores = np.array([p.score for p in predictions])
candidates = {}
if model.calibrated:
    candidates["checkpoint default"] = model.threshold.item()
if labels is not None:
    from sklearn.metrics import precision_recall_curve

    y = np.array(labels)
    candidates["5% false alarms on good images"] = float(np.quantile(scores[y == 0], 0.95))
    precision, recall, cuts = precision_recall_curve(y, scores)  # anomalous: score >= cut
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    cut = cuts[np.argmax(f1[:-1])]
    below = scores[scores < cut]  # halfway to the next lower score, for `score > threshold`
    candidates["best F1 on these images (optimistic)"] = float(
        (cut + below.max()) / 2 if below.size else cut - 1e-6
    )
    n_good, n_defective = int((y == 0).sum()), int((y == 1).sum())
    rows = []
    for name, t in candidates.items():
        found, alarms = int(((scores > t) & (y == 1)).sum()), int(((scores > t) & (y == 0)).sum())
        f1_at = 2 * found / max(2 * found + alarms + n_defective - found, 1)
        rows.append(
            [name, f"{t:.4f}", f"{found}/{n_defective}", f"{alarms}/{n_good}", f"{f1_at:.2f}"]
        )
    header = ["threshold", "value", "defects found", "false alarms", "F1"]
    display(Markdown(markdown_table(header, rows)))
title = "image scores and candidate thresholds"
score_histogram(scores, labels, candidates, title, nbins=20).show()

# %% [markdown]
# With a threshold chosen, `ulsad.visualize.overlay` draws the anomaly map over the image and
# outlines the region above it; `Prediction.is_anomalous` uses the checkpoint's default.

# %%
chosen = next(iter(candidates.values()), None)
top = int(np.argmax(scores))
image = overlay(load_image(paths[top]), predictions[top].anomaly_map, chosen)
title = f"{paths[top].name}: score {scores[top]:.3f}, threshold {chosen or float('nan'):.3f}"
fig = hide_axes(go.Figure(go.Image(z=np.asarray(image))))
fig.update_layout(title=title, width=520, height=540).show()

# %% [markdown]
# ## Next
#
# - The same from the command line: `ulsad predict --checkpoint bottle --out preds --save-maps
#   IMAGES/` writes `scores.csv` and the maps; `ulsad eval --checkpoint bottle --data ROOT
#   --category bottle` computes AUROC and AUPRO.
# - Train on your own good images: `ULSAD.from_preset("lite").fit("my_good_images/")`, or the
#   app (`python app.py`).
# - The dataset notebooks (`01` to `05`) train and benchmark on the paper's datasets; `06`
#   reproduces the ablation, `07` measures speed and memory.

# %%
summary = {
    "smoke": SMOKE,
    "checkpoint": source,
    "images": len(predictions),
    "scores": [float(s) for s in scores],
    "labels": labels,
    "thresholds": candidates,
}
print(json.dumps(summary, indent=1))
