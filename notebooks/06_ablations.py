# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Ablation study: what each part of ULSAD contributes
#
# The paper builds ULSAD up from plain deep feature reconstruction (DFR) and reports the gain
# of each step. The benchmark runner has these steps as named variants
# (`ulsad.experiments.ABLATIONS`, i.e. `ulsad benchmark --ablation all`):
#
# | variant | model | loss |
# |---|---|---|
# | `dfr` | local branch only | MSE: plain deep feature reconstruction |
# | `dfr_cosine` | local branch only | MSE + lambda (1 - cosine): the refined local loss |
# | `global` | + global branch | + global-local loss (no attention loss) |
# | `full` | ULSAD | + attention loss |
# | `lambda0` | ULSAD | every cosine weight 0 (MSE everywhere) |
#
# We then vary the cosine weights lambda (`lambda_local = lambda_attention = lambda_global`)
# and compare the backbones of the two presets (`paper`: wide_resnet50_2; `lite`:
# tf_efficientnet_lite0).
#
# **What to expect.** The cosine term lets the local loss notice a feature vector that points
# the wrong way even when its length is right; the global branch is the only part that can
# see a *logical* anomaly (a missing or moved part), since every patch of such an image looks
# normal; the attention loss makes the global branch's output encode how parts relate.
# Logical anomalies therefore need the global branch; structural ones mostly don't.
#
# **The paper's numbers.** The paper text available to us gives no per-variant numbers, so
# this notebook shows ours only. Full mode on MVTec AD with the `paper` preset means 5
# variants x 15 categories x 200 epochs (about 5 times a full MVTec AD run: a GPU job;
# `executor="ray"` spreads it over GPUs). Smoke mode runs a synthetic category with logical
# and structural defects, `lite` preset, 128 px, a few epochs: about a minute on a CPU.

# %% tags=["parameters"]
DATASET = "mvtec_ad"  # any dataset of ulsad.data; "mvtec_loco" separates logical/structural
DATA_ROOT = None  # None: where `ulsad download` puts it
CATEGORIES = None  # None: every category found
PRESET = "paper"
VARIANTS = ["dfr", "dfr_cosine", "global", "full", "lambda0"]
LAMBDAS = [0.25, 1.0]  # cosine weights to try besides 0.5 (full) and 0 (lambda0)
BACKBONES = ["paper", "lite"]  # presets whose `full` variant is compared
EPOCHS = None  # None: the preset's
OVERRIDES = {}
DEVICE = None
EXECUTOR = "local"  # or "ray"
RESULTS_DIR = "runs/ablations"
SMOKE = False

# %%
from helpers import smoke_mode

SMOKE = smoke_mode(SMOKE)  # or ULSAD_SMOKE=1 in the environment, as the tests run it

import json
import tempfile
from pathlib import Path

import plotly.graph_objects as go
from IPython.display import Markdown, display
from tqdm.auto import tqdm

from ulsad import ULSADError
from ulsad.data import make_synthetic_dataset
from ulsad.data.download import SOURCES, default_cache
from ulsad.experiments import ABLATIONS, make_jobs, run_benchmark
from ulsad.experiments.tables import load_records

from helpers import opening
from helpers.plots import bar_chart, markdown_table

NOTEBOOKS = Path.cwd()  # run from notebooks/ (as CI does)
print(opening(SMOKE))

if SMOKE:
    WORK = tempfile.TemporaryDirectory(prefix="ulsad-smoke-")
    DATASET, DATA_ROOT, CATEGORIES = "mvtec_ad", Path(WORK.name) / "data", None
    make_synthetic_dataset(
        DATA_ROOT, "synthetic", n_train=16, n_test_good=6, n_test_defect=8, size=128, logical=True
    )
    PRESET, EPOCHS, DEVICE = "lite", 8, "cpu"
    OVERRIDES = {"image_size": 128, "lr": 1e-3, "batch_size": 4}
    LAMBDAS = [1.0]
    BACKBONES = ["lite"]  # the paper backbone's ImageNet weights need the Hub, and a GPU to train
    RESULTS_DIR = Path(WORK.name) / "results"
else:
    DATA_ROOT = (
        Path(DATA_ROOT).expanduser()
        if DATA_ROOT
        else default_cache() / DATASET / SOURCES[DATASET].subdir
    )
RESULTS_DIR = Path(RESULTS_DIR)
for name in VARIANTS:
    print(f"{name:11s} {ABLATIONS[name]}")

# %% [markdown]
# ## 1. The variants
#
# One job per (variant, category); each variant writes `RESULTS_DIR/variants/<variant>/`,
# and with two or more variants the runner also writes `variants.md`, one row of dataset
# means per variant. Re-running skips finished jobs.

# %%
common = dict(preset=PRESET, overrides=OVERRIDES, epochs=EPOCHS, device=DEVICE)
jobs = make_jobs(
    DATASET, DATA_ROOT, RESULTS_DIR / "variants", CATEGORIES, variants=VARIANTS, **common
)
report = run_benchmark(jobs, executor=EXECUTOR)
if report.failed:
    raise ULSADError(f"failed: {report.failed}")
table = (
    RESULTS_DIR / "variants" / ("variants.md" if len(VARIANTS) > 1 else f"{VARIANTS[0]}/summary.md")
)
display(Markdown(table.read_text()))


# %%
variant_records = {v: load_records(RESULTS_DIR / "variants" / v)[0] for v in VARIANTS}


def mean_metric(records, key):
    values = [r["metrics"].get(key) for r in records]
    return None if not values or None in values else 100 * sum(values) / len(values)


keys = ["image_auroc", "pixel_auroc", "aupro"]
bar_chart(
    VARIANTS,
    {k: [mean_metric(variant_records[v], k) for v in VARIANTS] for k in keys},
    f"{DATASET}: dataset mean per variant (percent)",
    height=380,
).show()

# %% [markdown]
# **Per defect type.** The mean hides the point of the global branch: split by defect type
# (or, on MVTec LOCO, by logical / structural group), the variants without a global branch
# should fall behind on the logical defects.

# %%
per_defect = {}
for v in VARIANTS:
    for r in variant_records[v]:
        groups = r["metrics"].get("per_group") or r["metrics"]["per_defect"]
        for name, values in groups.items():
            per_defect.setdefault(f"{r['category']}/{name}", {})[v] = 100 * values["image_auroc"]
names = sorted(per_defect)
bar_chart(
    names,
    {v: [per_defect[n].get(v) for n in names] for v in VARIANTS},
    "image AUROC per defect type and variant (percent)",
    height=400,
    yaxis_range=[0, 105],
).show()

# %% [markdown]
# ## 2. The cosine weights (lambdas)
#
# lambda weighs the cosine term against the MSE in all three losses (the paper uses 0.5
# everywhere). lambda = 0 is the `lambda0` variant, 0.5 the `full` one; the others are extra
# runs of the full model with all three lambdas overridden.


# %%
def run_full(out, **settings):
    """The runner's records of the `full` variant, with `settings` in place of the common ones."""
    jobs = make_jobs(DATASET, DATA_ROOT, out, CATEGORIES, **{**common, **settings})
    if run_benchmark(jobs, executor=EXECUTOR).failed:
        raise ULSADError(f"{out.name} failed: see {out}")
    return load_records(out / "full")[0]


lambda_records = {0.0: variant_records.get("lambda0"), 0.5: variant_records.get("full")}
for lam in tqdm(LAMBDAS, desc="lambdas"):
    overrides = {**OVERRIDES, "lambda_local": lam, "lambda_attention": lam, "lambda_global": lam}
    lambda_records[lam] = run_full(RESULTS_DIR / "lambdas" / f"lambda_{lam:g}", overrides=overrides)
lambdas = sorted(k for k, v in lambda_records.items() if v)
rows = [
    [f"{lam:g}", *(f"{mean_metric(lambda_records[lam], k) or float('nan'):.2f}" for k in keys)]
    for lam in lambdas
]
display(Markdown(markdown_table(["lambda", *keys], rows)))
fig = go.Figure(
    [
        go.Scatter(
            x=lambdas,
            y=[mean_metric(lambda_records[lam], k) for lam in lambdas],
            mode="lines+markers",
            name=k,
        )
        for k in keys
    ]
)
fig.update_layout(
    title="dataset mean vs cosine weight lambda (percent)", xaxis_title="lambda", height=350
)
fig.show()

# %% [markdown]
# ## 3. The backbone: paper vs lite
#
# The `full` variant with each preset's backbone and widths (`paper`: wide_resnet50_2,
# C = 384, 91 M parameters; `lite`: tf_efficientnet_lite0, C = 96, 5 M parameters). The
# paper backbone needs its ImageNet weights from the Hugging Face Hub (once) and a GPU.

# %%
backbone_records = {}
for preset in tqdm(BACKBONES, desc="backbones"):
    if preset == PRESET:
        backbone_records[preset] = variant_records.get("full") or []
        continue
    backbone_records[preset] = run_full(RESULTS_DIR / "backbones" / preset, preset=preset)
rows = []
for preset, records in backbone_records.items():
    train_s = sum(r["timings"]["train_s"] for r in records) / max(len(records), 1)
    backbone = records[0]["config"]["backbone"] if records else ""
    means = [f"{mean_metric(records, k) or float('nan'):.2f}" for k in keys]
    rows.append([preset, backbone, *means, f"{train_s:.0f}"])
display(Markdown(markdown_table(["preset", "backbone", *keys, "train s per category"], rows)))

# %% [markdown]
# ## Committed full runs
#
# Ablation results of full runs belong in `notebooks/full_runs/ablations/` (the runner's JSONs
# and `variants.md`, with hardware and commit).

# %%
committed = sorted((NOTEBOOKS / "full_runs" / "ablations").glob("**/variants.md"))
if committed:
    for path in committed:
        display(Markdown(f"`{path.relative_to(NOTEBOOKS)}`\n\n" + path.read_text()))
else:
    display(
        Markdown(
            "**No full ablation run has been committed yet**: the tables above are "
            "the only numbers, and in smoke mode they say nothing about the method."
        )
    )
summary = {
    "smoke": SMOKE,
    "variants": {v: {k: mean_metric(variant_records[v], k) for k in keys} for v in VARIANTS},
    "lambdas": {f"{lam:g}": mean_metric(lambda_records[lam], "image_auroc") for lam in lambdas},
    "backbones": {p: mean_metric(r, "image_auroc") for p, r in backbone_records.items()},
    "committed": len(committed),
}
print(json.dumps(summary, indent=1))
