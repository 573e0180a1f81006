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
# 2. scores images and shows the anomaly maps, as pictures and as interactive figures;
# 3. picks a threshold, and explains what each choice costs.
#
# It runs on a fresh clone, with no GPU and no dataset: it scores the example images shipped
# with the checkpoint (`weights/<name>/examples/`). Once the checkpoint's dataset is on disk
# (see "Next" at the end) it scores `N_IMAGES` of its test images instead.

# %% tags=["parameters"]
CHECKPOINT = "bottle"  # an embedded name, a checkpoint folder, or a Hub repo id "owner/name"
REVISION = None  # for a Hub repo: a branch, tag or commit to pin; None: the main branch
IMAGES = None  # a folder or a list of image files; None: the dataset's test images, or examples
DATASET, CATEGORY = None, None  # the test images' category; None: the checkpoint's own
DATA_ROOT = None  # the dataset's root; None: where `ulsad download` puts it ($ULSAD_DATA)
N_IMAGES = 24  # how many test images to score when the dataset is there (half good)
SMOKE = False  # True: score a handful of images (also ULSAD_SMOKE=1)

# %%
from helpers import smoke_mode

SMOKE = smoke_mode(SMOKE)  # or ULSAD_SMOKE=1 in the environment, as the tests run it

import json
from pathlib import Path

import numpy as np
from IPython.display import Image, Markdown, display

from ulsad import ULSAD, ULSADError
from ulsad.data import load_split
from ulsad.data.download import SOURCES, default_cache
from ulsad.hub import available_checkpoints, read_manifest, resolve_checkpoint
from ulsad.images import find_images, load_image
from ulsad.visualize import overlay

from helpers import opening
from helpers.plots import (
    branch_maps_png,
    maps_figure,
    maps_png,
    markdown_table,
    png,
    score_histogram,
)

print(opening(SMOKE))
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


model = load_checkpoint(CHECKPOINT, REVISION)
source = CHECKPOINT
folder, _ = resolve_checkpoint(CHECKPOINT)  # the local folder (examples, eval.json), if any
cfg = model.config
rule = (
    "the maximum of the anomaly map"
    if model.score_pixels == 1
    else f"the mean of the anomaly map's highest {cfg.image_score_fraction:.0%} of pixels "
    f"({model.score_pixels} of {cfg.image_size} x {cfg.image_size})"
)
print(
    f"{source}: preset {cfg.preset}, backbone {cfg.backbone}, {cfg.image_size} px, "
    f"calibrated: {model.calibrated}, default threshold {model.threshold.item():.4f}\n"
    f"image score: {rule}; weight of the local map: {model.fusion_weight}"
)

# %% [markdown]
# ## 2. Score images
#
# `model.predict` takes a path, a PIL image, a numpy array, a tensor, or a list of them, and
# returns one `Prediction` per image: `score`, `anomaly_map`, `local_map`, `global_map`
# (float32, at the image's original size), `threshold` and `is_anomalous` (`score >
# threshold`).
#
# **The image score** comes from the anomaly map at the model's input size. The `paper`
# preset takes its maximum (`image_score_fraction = 0`); `lite`, the preset of the embedded
# checkpoints, takes the mean of its highest 2% of pixels (`image_score_fraction = 0.02`),
# because a defect covers an area while a good image's brightest spot is often a few pixels
# wide. The previous cell printed this checkpoint's rule.
#
# Which images: `IMAGES` if set; else the test images of the checkpoint's category where its
# dataset is on disk (`DATA_ROOT`); else the examples shipped with the checkpoint, whose file
# names say what they show (`good_000.png`, `contamination_000.png`).

# %%
entry = manifest["checkpoints"].get(CHECKPOINT, {})
dataset, category = DATASET or entry.get("dataset"), CATEGORY or entry.get("category")
root = None  # where `ulsad download` puts the dataset, unless DATA_ROOT says otherwise
if DATA_ROOT:
    root = Path(DATA_ROOT).expanduser()
elif dataset in SOURCES:
    root = default_cache() / dataset / SOURCES[dataset].subdir
examples = folder / "examples" if folder else None
if IMAGES is not None:
    paths = find_images(IMAGES) if isinstance(IMAGES, (str, Path)) else [Path(p) for p in IMAGES]
    truth, origin = ["?"] * len(paths), "IMAGES"
elif root is not None and category and (root / category / "test").is_dir():
    test = load_split(dataset, root, category, "test")
    good = [s for s in test if s.label == 0]
    defective = [s for s in test if s.label == 1]
    step = max(1, len(defective) // (N_IMAGES - N_IMAGES // 2))  # spread over the defect types
    samples = good[: N_IMAGES // 2] + defective[::step][: N_IMAGES - N_IMAGES // 2]
    paths, truth = [s.path for s in samples], [s.defect for s in samples]
    origin = f"test images of {dataset}/{category}"
elif examples is not None and examples.is_dir():
    paths = find_images(examples)
    truth = [p.stem.rsplit("_", 1)[0] for p in paths]  # good_000.png: "good"
    origin = f"the examples shipped with {CHECKPOINT}"
else:
    raise ULSADError(
        f"no images to score for {CHECKPOINT!r}: set IMAGES to a folder or a list of images, "
        "or DATA_ROOT to the folder holding its dataset's categories."
    )
labels = None if "?" in truth else [int(t != "good") for t in truth]
predictions = model.predict(paths)  # in batches of 8
scores = np.array([p.score for p in predictions])
order = np.argsort(-scores)
verdicts = {True: "anomalous", False: "good", None: "-"}
rows = [
    [paths[i].name, truth[i], f"{scores[i]:.4f}", verdicts[predictions[i].is_anomalous]]
    for i in order
]
print(f"{len(paths)} images: {origin}")
display(Markdown(markdown_table(["image", "truth", "score", "default verdict"], rows)))

# %% [markdown]
# **The maps.** The local map is the feature reconstruction error (wrong texture: structural
# defects); the global map is the disagreement between the global branch, which only knows the
# image's overall layout, and the local branch (wrong arrangement: logical defects). Both are
# normalised on held-out good images (0 = their 90th, 0.1 = their 99.5th percentile), then
# weighted into the anomaly map: `local_weight` x local + (1 - `local_weight`) x global. The
# paper averages them (0.5); `lite` chooses the weight in training, on synthetic defects, and
# where the global map adds nothing there (weight 1.0) the anomaly map is the local map and the
# global branch is not run at all (its map is zeros). The previous cell printed this
# checkpoint's weight.
#
# The picture below shows, for the most, a middle and the least anomalous image: the image, its
# anomaly map (colours from 0 to twice the default threshold) and the overlay outlining in green
# the region above the default threshold. The interactive figure after it has each map; hover
# over a heatmap to read values (it needs a running notebook, the picture does not).

# %%
picked = list(dict.fromkeys([int(order[0]), int(order[len(order) // 2]), int(order[-1])]))
threshold = model.threshold.item() if model.calibrated else None
display(Markdown(" / ".join(f"`{paths[i].name}` {scores[i]:.3f}" for i in picked)))
display(
    Image(data=maps_png([paths[i] for i in picked], [predictions[i] for i in picked], threshold))
)
# Without the global map (weight 1.0) the anomaly map is the local map: one column shows both.
columns = ["image", "local map", "global map", "anomaly map"]
columns = columns if model.uses_global_map else ["image", "anomaly map"]
maps_figure(
    [paths[i] for i in picked],
    [predictions[i] for i in picked],
    threshold,
    row_titles=[f"{paths[i].name}<br>{scores[i]:.3f}" for i in picked],
    columns=columns,
    side=128,
).show()

# %% [markdown]
# **Both branches at work.** The embedded bottle and metal_plate checkpoints score with their
# local map alone: on their synthetic defects training found that the global map adds nothing.
# The embedded `layout` checkpoint is trained on a synthetic category of logical defects
# (`ulsad.data.make_layout_dataset`: two discs that must match in colour; its card says how it
# was made), where training gave the global map weight. On its colour-mismatch example every
# patch looks normal: the local map sees nothing, the global map finds the wrong pairing, and
# the combined map's score crosses the threshold. Below: the image, the local map, the global
# map and the combined map, outlined above the threshold.

# %%
layout = ULSAD.from_pretrained("layout")
layout_example = Path(resolve_checkpoint("layout")[0]) / "examples" / "mismatched_004.png"
layout_pred = layout.predict(layout_example)
layout_threshold = layout.threshold.item()
layout_local = ULSAD.from_pretrained("layout")
layout_local.config.local_weight = 1.0  # the same model, its local map alone
layout_local_score = layout_local.predict(layout_example).score
print(
    f"layout: weight of the local map {layout.fusion_weight}, threshold {layout_threshold:.4f}\n"
    f"{layout_example.name}: score {layout_pred.score:.3f} ({verdicts[layout_pred.is_anomalous]}); "
    f"the local map alone {layout_local_score:.3f}"
)
display(Image(data=branch_maps_png(layout_example, layout_pred, layout_threshold)))

# %% [markdown]
# ## 3. Pick a threshold
#
# Scores rank images; deciding needs a threshold, and every choice trades missed defects
# against false alarms.
# - **The checkpoint's default**: the highest score among the good images held out of training.
#   It needs no defective images and flags anything more unusual than every held-out good
#   image; with few held-out images it tends to be strict (few false alarms).
# - **A false-alarm budget**: a quantile of scores of good images you trust (here good test
#   images; in production, a fresh set of good images), e.g. accept 5% false alarms.
# - **The best F1 on labelled images**: needs defective examples, and when chosen on the same
#   images it is evaluated on, it is optimistic. Never report metrics with a threshold picked
#   on the test set.
#
# A handful of examples is too few to choose from. Where the scored images are not a test set,
# the choices are made on the scores of the checkpoint's whole test set, recorded when it was
# published (`eval.json` in the checkpoint's folder; the shipped examples are resized copies of
# three of those images, so their scores differ a little from the recorded ones).

# %%
recorded = folder / "eval.json" if folder else None
if origin.startswith("test images") or recorded is None or not recorded.is_file():
    basis, basis_scores, basis_labels = origin, scores, labels
else:
    evaluation = json.loads(recorded.read_text())
    basis_scores = np.array([r["score"] for r in evaluation["scores"]])
    basis_labels = [r["label"] for r in evaluation["scores"]]
    basis = (
        f"the {len(basis_scores)} test images of {evaluation['dataset']}/"
        f"{evaluation['category']} ({basis_labels.count(0)} good, {basis_labels.count(1)} "
        "defective), recorded in eval.json"
    )
candidates = {}
if model.calibrated:
    candidates["checkpoint default"] = model.threshold.item()
if basis_labels is not None:
    from sklearn.metrics import precision_recall_curve

    y = np.array(basis_labels)
    candidates["5% false alarms on good images"] = float(np.quantile(basis_scores[y == 0], 0.95))
    precision, recall, cuts = precision_recall_curve(y, basis_scores)  # anomalous: score >= cut
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    cut = cuts[np.argmax(f1[:-1])]
    below = basis_scores[basis_scores < cut]  # halfway to the next lower score, for `>`
    candidates["best F1 on these images (optimistic)"] = float(
        (cut + below.max()) / 2 if below.size else cut - 1e-6
    )
    n_good, n_defective = int((y == 0).sum()), int((y == 1).sum())
    rows = []
    for name, t in candidates.items():
        found = int(((basis_scores > t) & (y == 1)).sum())
        alarms = int(((basis_scores > t) & (y == 0)).sum())
        f1_at = 2 * found / max(2 * found + alarms + n_defective - found, 1)
        rows.append(
            [name, f"{t:.4f}", f"{found}/{n_defective}", f"{alarms}/{n_good}", f"{f1_at:.2f}"]
        )
    header = ["threshold", "value", "defects found", "false alarms", "F1"]
    display(Markdown(f"On {basis}:\n\n" + markdown_table(header, rows)))
title = f"image scores and candidate thresholds ({basis})"
score_histogram(basis_scores, basis_labels, candidates, title, nbins=20).show()

# %% [markdown]
# With a threshold chosen, `ulsad.visualize.overlay` draws the anomaly map over the image and
# outlines the region above it; `Prediction.is_anomalous` uses the checkpoint's default.

# %%
chosen = next(iter(candidates.values()), None)
top = int(order[0])
picture = overlay(load_image(paths[top]), predictions[top].anomaly_map, chosen)
print(f"{paths[top].name}: score {scores[top]:.3f}, threshold {chosen or float('nan'):.3f}")
display(Image(data=png(picture, side=384)))

# %% [markdown]
# ## Next
#
# - **Real data.** `ulsad download mvtec_ad --accept-licence` (after reading the licence on the
#   dataset's page) puts MVTec AD under `~/.cache/ulsad/datasets/mvtec_ad/` (or
#   `$ULSAD_DATA/mvtec_ad/` where `ULSAD_DATA` is set); run this notebook again and it scores
#   `N_IMAGES` test images of the checkpoint's category, and picks the thresholds on them. A copy
#   elsewhere: set `DATA_ROOT` to the folder that holds the categories (`DATA_ROOT/bottle/test/`).
# - The same from the command line: `ulsad predict --checkpoint bottle --out preds --save-maps
#   IMAGES/` writes `scores.csv` and the maps; `ulsad eval --checkpoint bottle --data ROOT
#   --category bottle` computes AUROC and AUPRO.
# - Train on your own good images: `ULSAD.from_preset("lite").fit("my_good_images/")`, or the
#   app (`python app.py`).
# - The dataset notebook (`01_dataset`, with `DATASET` one of the paper's five datasets) trains
#   and benchmarks on the paper's datasets; `06` reproduces the ablation, `07` measures speed
#   and memory.

# %%
summary = {
    "smoke": SMOKE,
    "checkpoint": source,
    "origin": origin,
    "images": len(predictions),
    "scores": [float(s) for s in scores],
    "labels": labels,
    "threshold_basis": basis,
    "basis_scores": [float(s) for s in basis_scores],
    "basis_labels": basis_labels,
    "thresholds": candidates,
    "layout_example": {
        "score": float(layout_pred.score),
        "local_only": float(layout_local_score),
        "threshold": layout_threshold,
    },
}
print(json.dumps({k: v for k, v in summary.items() if not k.startswith("basis_")}, indent=1))
