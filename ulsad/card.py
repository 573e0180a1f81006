"""Model cards: the `README.md` of a checkpoint folder, with the Hub metadata (library, licence,
tags, datasets, `model-index` metrics) in its front matter and the training command in its body.

The metadata is rebuilt from the folder's own records: `config.json`, `training.json` (the run:
command, dataset, category, held-out images) and `eval*.json` (`ulsad eval` results). A card
written by hand keeps its text; only its front matter is brought up to date.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ulsad.checkpoint import CARD_NAME, CONFIG_NAME, TRAINING_NAME
from ulsad.errors import ULSADError
from ulsad.files import write_text_atomic
from ulsad.locate import is_hub_repo_id
from ulsad.selection.scoring import family_regret

log = logging.getLogger(__name__)

GENERATED = "<!-- ulsad model card: generated from config.json, training.json and eval*.json -->"
# The paper, cited the same way by the cards, the README and the docs (one place).
PAPER_TITLE = (
    "Revisiting Deep Feature Reconstruction for Logical and Structural Industrial Anomaly Detection"
)
PAPER_URL = "https://arxiv.org/abs/2410.16255"
CITATION = """@misc{patra2024revisiting,
  title         = {Revisiting Deep Feature Reconstruction for Logical and Structural Industrial Anomaly Detection},
  author        = {Patra, Sukanya and Ben Taieb, Souhaib},
  year          = {2024},
  eprint        = {2410.16255},
  archivePrefix = {arXiv},
  primaryClass  = {cs.CV},
  url           = {https://arxiv.org/abs/2410.16255}
}"""
# A figure of one example image beside its anomaly map, in the checkpoint folder (written by
# `ulsad.hub.write_example_figure` from `examples/`); the card shows it only if it exists.
EXAMPLE_FIGURE = "example.png"
DATASETS = {  # on-disk layout -> (name, licence of the images: a model trained on them inherits it)
    "mvtec_ad": ("MVTec AD", "cc-by-nc-sa-4.0"),
    "mvtec_loco": ("MVTec LOCO AD", "cc-by-nc-sa-4.0"),
    "mpdd": ("MPDD", "cc-by-nc-sa-4.0"),
    "visa": ("VisA", "cc-by-4.0"),
    "btad": ("BTAD", "other"),
    "folder": ("own images", "other"),
}
METRICS = {  # eval.json key -> name shown on the Hub
    "image_auroc": "Image AUROC",
    "pixel_auroc": "Pixel AUROC",
    "aupro": "AUPRO (FPR <= 0.3)",
    "image_f1_max": "Image F1-max",
    "pixel_f1_max": "Pixel F1-max",
}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ULSADError(f"{path} could not be read as JSON ({error}).") from error
    return value if isinstance(value, dict) else {}


def record_run(directory: str | Path, **fields: Any) -> Path:
    """Add `fields` (e.g. command, dataset, category) to the folder's training.json, atomically."""
    path = Path(directory) / TRAINING_NAME
    record = _read_json(path) if path.is_file() else {}
    record.update({k: v for k, v in fields.items() if v is not None})
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def _records(directory: Path) -> tuple[dict, dict, list[dict]]:
    """A checkpoint folder's config.json, training.json ({} if absent) and eval*.json records."""
    training_path = directory / TRAINING_NAME
    training = _read_json(training_path) if training_path.is_file() else {}
    evals = [_read_json(p) for p in sorted(directory.glob("eval*.json"))]
    return _read_json(directory / CONFIG_NAME), training, evals


def _recorded(training: dict, evals: list[dict], key: str) -> Any:
    """`key` (dataset, category) as training.json records it, else the first eval record's."""
    return training.get(key) or next((e[key] for e in evals if key in e), None)


def card_metadata(directory: str | Path, license: str | None = None) -> dict[str, Any]:
    """The Hub metadata of the checkpoint in `directory` (a plain dict, YAML-ready)."""
    from huggingface_hub import EvalResult, ModelCardData

    config, training, evals = _records(Path(directory))
    dataset = _recorded(training, evals, "dataset")
    data_license = DATASETS.get(str(dataset), (dataset, "other"))[1]
    results = []
    for record in evals:
        label = DATASETS.get(str(record.get("dataset")), (record.get("dataset"),))[0]
        for key, metric_name in METRICS.items():
            if isinstance(record.get(key), int | float):
                results.append(
                    EvalResult(
                        task_type="anomaly-detection",
                        task_name="Anomaly detection",
                        dataset_type=str(record.get("dataset")),
                        dataset_name=f"{label} ({record.get('category')})",
                        dataset_split="test",
                        metric_type=key,
                        metric_name=metric_name,
                        metric_value=round(float(record[key]), 4),
                    )
                )
    preset = config.get("preset", "custom")
    tags = ["anomaly-detection", "industrial-inspection", "ulsad", f"ulsad-{preset}"]
    if dataset:
        tags.append(str(dataset).replace("_", "-"))
    # No `datasets:`: the Hub links it to Hub dataset ids, and none of the benchmark layouts
    # (mvtec_ad, mpdd, ...) is one; the tags and the model-index name the data instead.
    data = ModelCardData(
        library_name="ulsad",
        license=license or (data_license if dataset else "other"),
        tags=tags,
        metrics=sorted({r.metric_type for r in results}) or None,
        model_name=model_name(directory),
        eval_results=results or None,
    )
    return data.to_dict()


def model_name(directory: str | Path) -> str:
    """The model's name: `ULSAD <preset>` and, when known, the data it was trained on
    (`ULSAD lite MVTec AD bottle`)."""
    config, training, evals = _records(Path(directory))
    dataset, category = (
        _recorded(training, evals, "dataset"),
        _recorded(training, evals, "category"),
    )
    name = DATASETS.get(str(dataset), (dataset, "other"))[0] if dataset else None
    data = " ".join(str(part) for part in (name, category) if part)
    return f"ULSAD {config.get('preset', 'custom')}" + (f" {data}" if data else "")


def _body(directory: Path, metadata: dict[str, Any], repo_id: str | None) -> str:
    """The text of a generated card: what the model is, the command, the measured metrics."""
    config, training, _ = _records(directory)
    command = training.get("command")
    name = model_name(directory)
    title = repo_id.split("/")[-1] if repo_id else name
    lines = [
        GENERATED,
        "",
        f"# {title}",
        "",
        f"{name}: an [ULSAD]({PAPER_URL}) anomaly detector, `{config.get('preset')}` preset "
        f"(backbone `{config.get('backbone')}`, C={config.get('channels')}, FeatAE width "
        f"{config.get('featae_width')}, global AE width {config.get('global_width')}, "
        f"{config.get('image_size')} px), trained on good images only. The method: "
        f"[{PAPER_TITLE}]({PAPER_URL}) (Patra & Ben Taieb, 2024).",
        "",
        *example_lines(directory),
        "## Usage",
        "",
        "```python",
        "from ulsad import ULSAD",
        f'model = ULSAD.from_pretrained("{repo_id or "owner/name"}")  # revision="..." pins a commit',
        'prediction = model.predict("image.png")  # .score, .anomaly_map, .is_anomalous',
        "```",
        "",
        "```bash",
        f"ulsad predict --checkpoint {repo_id or 'owner/name'} --out scores images/  # scores.csv",
        "```",
        "",
        "## Training command",
        "",
        "```bash",
        command or "(not recorded: trained through the Python API)",
        "```",
        "",
    ]
    if "n_train" in training:
        lines += [
            f"{training['n_train']} training images, {training.get('n_heldout')} held out for the "
            f"map quantiles and the default threshold ({training.get('threshold', float('nan')):.4f}"
            f"), {training.get('epochs')} epochs, on {training.get('device')}.",
            "",
        ]
        tiles = training.get("n_train_tiles", training["n_train"])
        if tiles != training["n_train"]:  # elongated images, trained on as square tiles
            lines += [
                f"Elongated images are scored as square tiles: the {training['n_train']} "
                f"training images gave {tiles} tiles.",
                "",
            ]
    lines += _validation_lines(training)
    results = [
        r for m in metadata.get("model-index", []) for r in m.get("results", [])
    ]  # one entry per dataset
    if results:
        lines += ["## Test metrics", "", "| dataset | metric | value |", "|---|---|---|"]
        for result in results:
            for metric in result.get("metrics", []):
                lines.append(
                    f"| {result['dataset']['name']} | {metric.get('name', metric['type'])} | "
                    f"{metric['value']:.4f} |"
                )
        lines.append("")
    lines += [
        "## Licence",
        "",
        f"`{metadata.get('license')}`: a model inherits the terms of the images it was trained on.",
        "",
        *citation_lines(),
    ]
    return "\n".join(lines)


def example_lines(directory: Path) -> list[str]:
    """The card's figure (an example image beside its anomaly map), if the folder has one."""
    if not (directory / EXAMPLE_FIGURE).is_file():
        return []
    return [
        f"![An example image and its anomaly map: the region above the threshold is outlined]"
        f"({EXAMPLE_FIGURE})",
        "",
    ]


def citation_lines() -> list[str]:
    """A card's citation section: the paper's BibTeX."""
    return [
        "## Citation",
        "",
        f"[{PAPER_TITLE}]({PAPER_URL})",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]


def _validation_lines(training: dict[str, Any]) -> list[str]:
    """The card's account of what synthetic defects chose (`training.json`'s
    `synthetic_validation`): fusion weight, epoch, F1 threshold, and the table behind them."""
    chosen = training.get("synthetic_validation")
    if not isinstance(chosen, dict) or "fusion_table" not in chosen:
        return []
    weight, pruned = chosen.get("local_weight"), chosen.get("global_pruned_after")
    branch = "the local map alone" if weight == 1.0 else "fused with the global map"
    if pruned is not None:
        branch += f"; the global branch stopped training after epoch {pruned}"
    epochs = ", ".join(str(e) for e in chosen.get("epochs_compared", []))
    lines = [
        "## Chosen without defect images",
        "",
        f"{chosen.get('defects')} synthetic defects ({', '.join(chosen.get('kinds', []))}) on the "
        f"{training.get('n_heldout')} held-out good images chose, without any test image:",
        "",
        f"- the weight of the local map: {weight} ({branch});"
        if len(chosen["fusion_table"]) > 1
        else f"- (the weight of the local map, {weight}, was set in the config);",
        f"- the epoch kept: {chosen.get('chosen_epoch')} (compared: {epochs});",
        f"- a second threshold, the best F1 on the synthetic defects: "
        f"{training.get('threshold_f1', float('nan')):.4f}.",
        "",
    ]
    if "part_scenes" in chosen:
        scenes, inputs = chosen["part_scenes"], chosen.get("heldout_inputs")
        lines += [
            f"{scenes} of the {inputs} held-out inputs are scenes of separate parts on a plain "
            "ground, where the logical kinds take whole parts and leave no local trace."
            + (
                ""
                if scenes
                else " On the others they cut regions of the object, which the local branch"
                " sees too: logical defects weigh little in these choices."
            ),
            "",
        ]
    lines += [
        "On the synthetic defects, at the kept epoch (each metric the mean over the defect kinds):",
        "",
        "| local weight | image AUROC | pixel AUROC | AUPRO | score |",
        "|---|---|---|---|---|",
    ]
    for key, row in chosen["fusion_table"].items():
        name = f"**{key} (chosen)**" if float(key) == weight else key
        values = " | ".join(
            f"{row.get(m, float('nan')):.4f}"
            for m in ("image_auroc", "pixel_auroc", "aupro", "score")
        )
        lines.append(f"| {name} | {values} |")
    cap = float(training.get("recipe", {}).get("max_local_weight", 1.0))
    return [*lines, "", *_family_lines(chosen["fusion_table"], weight, cap)]


def _family_lines(table: dict[str, Any], weight: Any, cap: float = 1.0) -> list[str]:
    """The per-family table behind the fusion weight (`ulsad.selection.best_weight`, among the
    weights up to `cap`, the recipe's `max_local_weight`)."""
    families = sorted(next(iter(table.values()), {}).get("families", {}))
    if len(families) < 2:
        return []
    by_weight = {float(k): row for k, row in table.items()}
    among = f" among the weights up to {cap} (`max_local_weight`)" if cap < 1 else ""
    lines = [
        "Per family of synthetic defects (score: the mean of image AUROC, pixel AUROC and "
        f"AUPRO). The weight chosen is the one{among} whose worse family stays closest to its "
        "own best (the least regret), so neither family chooses alone:",
        "",
        f"| local weight | {' | '.join(families)} | regret |",
        "|---|" + "---|" * (len(families) + 1),
    ]
    for key, row in table.items():
        name = f"**{key} (chosen)**" if float(key) == weight else key
        scores = " | ".join(f"{row['families'][f]['score']:.4f}" for f in families)
        lines.append(f"| {name} | {scores} | {family_regret(by_weight, float(key)):.4f} |")
    return [*lines, ""]


def write_model_card(
    directory: str | Path, license: str | None = None, repo_id: str | None = None
) -> Path:
    """Write or refresh `directory/README.md` (atomically) and return its path.

    A card that ulsad generated is regenerated; a hand-written one keeps its text and gets fresh
    metadata (its own licence is kept unless `license` is given).
    """
    from huggingface_hub import ModelCard

    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file():
        raise ULSADError(f"{directory} is not an ULSAD checkpoint: {CONFIG_NAME} is missing.")
    path = directory / CARD_NAME
    existing = ModelCard(path.read_text(encoding="utf-8")) if path.is_file() else None
    handwritten = existing is not None and GENERATED not in existing.text
    if handwritten and license is None:
        license = existing.data.to_dict().get("license")
    metadata = card_metadata(directory, license=license)
    if handwritten:
        extra = {k: v for k, v in existing.data.to_dict().items() if k not in metadata}
        if not all(is_hub_repo_id(str(d)) for d in extra.get("datasets") or []):
            del extra["datasets"]  # e.g. `mvtec_ad`, which earlier cards had: not a Hub id
        metadata = {**extra, **metadata}
        text = existing.text
    else:
        text = "\n" + _body(directory, metadata, repo_id)
    import yaml  # a dependency of huggingface_hub

    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    write_text_atomic(path, f"---\n{front}---\n{text}")
    log.info("wrote %s", path)
    return path
