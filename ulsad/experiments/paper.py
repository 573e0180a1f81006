"""The paper's numbers and settings (Patra & Ben Taieb 2024, see ../shared/ULSAD.md), and its
ablation variants as config overrides."""

from __future__ import annotations

from typing import Any

# The paper's dataset means (percent). The paper text available to us gives no per-category
# numbers, so only means are compared.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "mvtec_ad": {"image_auroc": 97.65, "pixel_auroc": 97.61},
    "visa": {"image_auroc": 92.46, "pixel_auroc": 98.24},
    "mpdd": {"image_auroc": 95.73, "pixel_auroc": 97.45},
    "btad": {"pixel_auroc": 96.73},
    "mvtec_loco": {"image_auroc": 84.1},
}
# The paper's seeds: 40, except 42 for MPDD (applied unless the seed is set explicitly).
PAPER_SEEDS: dict[str, int] = {"mpdd": 42}

# The paper's ablation (DFR -> + cosine loss -> + global branch -> + attention loss) as config
# overrides, plus the refined objective without its cosine terms.
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "dfr": {"global_branch": False, "attention_loss": False, "cosine_loss": False},
    "dfr_cosine": {"global_branch": False, "attention_loss": False},
    "global": {"attention_loss": False},
    "lambda0": {"lambda_local": 0.0, "lambda_attention": 0.0, "lambda_global": 0.0},
}
