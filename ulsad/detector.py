"""`ULSAD`, the one object users hold: the network (`ULSADModel`) plus `fit`, `predict`,
`save_pretrained`, `from_pretrained` and `push_to_hub`.

The network module knows nothing of training, files or the Hub; the layers that do take a
`ULSADModel`. This subclass sits above all of them and delegates, so users keep one object and
every import points down (config -> model -> training / inference / hub -> detector).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import torch

from ulsad import hub
from ulsad.checkpoint import save_pretrained
from ulsad.config import ULSADConfig
from ulsad.data import training_images
from ulsad.inference import ImageInput, Prediction, predict
from ulsad.model import ULSADModel
from ulsad.presets import PRESETS, preset
from ulsad.recipe import TrainingRecipe
from ulsad.train import EpochCallback, train


class ULSAD(ULSADModel):
    """ULSAD anomaly detector: structural (local) and logical (global) maps from one forward pass.

    `ULSAD.from_preset("lite").fit(...)` trains (a named config and its recipe, `ulsad.presets`); `ULSAD.from_pretrained("bottle")` loads;
    `model.predict(path_or_image)` scores. It is a plain `nn.Module` too (`model(images)`).
    `recipe` is how `fit` trains (a preset's, or the paper's by default).
    """

    def __init__(
        self,
        config: ULSADConfig,
        pretrained_backbone: bool = True,
        recipe: TrainingRecipe | None = None,
    ) -> None:
        self.recipe = recipe if recipe is not None else TrainingRecipe()
        super().__init__(config, pretrained_backbone, seed=self.recipe.seed)

    @classmethod
    def from_preset(cls, name: str, pretrained_backbone: bool = True, **overrides: Any) -> ULSAD:
        """An untrained model from a named preset (`paper`, `lite`): its config and recipe, with
        `overrides` of either (`epochs=20, channels=64`; see `ulsad.presets.split_overrides`)."""
        chosen = preset(name, **overrides)
        return cls(chosen.config, pretrained_backbone=pretrained_backbone, recipe=chosen.recipe)

    @overload
    def predict(self, inputs: ImageInput, batch_size: int = 8) -> Prediction: ...
    @overload
    def predict(self, inputs: Sequence[ImageInput], batch_size: int = 8) -> list[Prediction]: ...

    def predict(
        self, inputs: ImageInput | Sequence[ImageInput], batch_size: int = 8
    ) -> Prediction | list[Prediction]:
        """Score images (path, PIL, numpy HxWxC, tensor, or a list of them); maps at original size.

        Returns one `Prediction` for a single input, a list for a list.
        """
        return predict(self, inputs, batch_size=batch_size)

    def fit(
        self, data: str | Path | Sequence[Any], category: str | None = None, *,
        dataset: str = "mvtec_ad", heldout: Sequence[Any] | None = None,
        device: str | torch.device | None = None, out_dir: str | Path | None = None,
        save_every: int = 5, resume: bool = True, progress: bool = True,
        callback: EpochCallback | None = None,
    ) -> ULSAD:  # fmt: skip
        """Train on good images and calibrate, in place (see `ulsad.train.train`): a dataset
        root + `category` (layout `dataset`), a category folder, a folder of good images (found
        by `ulsad.data.training_images`), or the images themselves (a list, an array, a dataset)
        with, optionally, `heldout` good images. The schedule (epochs or steps, batch size,
        learning rate) and the model selection are `self.recipe`."""
        images, found = (
            (data, []) if heldout is not None else training_images(data, category, dataset)
        )
        train(self, images, heldout or found, recipe=self.recipe, device=device, out_dir=out_dir,
              save_every=save_every, resume=resume, progress=progress, callback=callback)  # fmt: skip
        return self

    def save_pretrained(
        self, directory: str | Path, dtype: torch.dtype | None = None,
        store_backbone: bool | None = None,
    ) -> Path:  # fmt: skip
        """Write `model.safetensors` + `config.json` atomically (compact for `lite` backbones; see
        `ulsad.checkpoint.save_pretrained` for `dtype` and `store_backbone`)."""
        return save_pretrained(self, directory, dtype=dtype, store_backbone=store_backbone)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path,
        revision: str | None = None,
        device: str | torch.device = "cpu",
        local: bool = True,
        **download: Any,
    ) -> ULSAD:
        """Load a local checkpoint folder, an embedded default (`bottle`) or a Hugging Face Hub repo
        (`owner/name`; `revision`: branch, tag or commit). `download`: `cache_dir`, `token`,
        `force_download`, `local_files_only` (HF_HUB_OFFLINE=1 reads the cache only).
        `local=False` refuses local folders (what a public app accepts from its users). Its
        `recipe` (for `fit`) is its preset's, the paper's if the preset is not a named one."""
        model = hub.load_pretrained(path_or_repo_id, revision=revision, device=device,
                                    local=local, model_class=cls, **download)  # fmt: skip
        if model.config.preset in PRESETS:
            model.recipe = PRESETS[model.config.preset].recipe
        return model

    def push_to_hub(
        self, repo_id: str, token: str | None = None, private: bool = False,
        commit_message: str = "Upload ULSAD checkpoint",
    ) -> str:  # fmt: skip
        """Upload the checkpoint and a model card to the Hugging Face Hub; returns the commit URL."""
        return hub.push_to_hub(self, repo_id, token=token, private=private,
                               commit_message=commit_message)  # fmt: skip
