"""evaluate(): a fake model whose maps come from the ground-truth masks, on tiny PNGs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from ulsad.data.samples import read_mask
from ulsad.errors import ULSADError
from ulsad.evaluate import evaluate

SHAPE = (24, 32)  # H, W


@dataclass(frozen=True)
class FakeSample:
    path: Path
    label: int
    defect: str
    mask_paths: tuple[Path, ...] = ()
    group: str = ""
    saturation_thresholds: tuple[float, ...] = ()
    relative_saturation: tuple[bool, ...] = ()


@dataclass
class FakePrediction:
    score: float
    anomaly_map: np.ndarray


class FakeModel:
    """Map = `strength` on the (left half of the) masks + noise in [0, 0.1); score = map max.

    Noise is seeded by the image's index within its defect type, so a defect in
    `random_defects` (mask ignored) gets exactly the maps and scores of the good images.
    """

    def __init__(self, samples, random_defects=(), left_half=False):
        self.samples = {s.path: s for s in samples}
        self.random_defects, self.left_half = set(random_defects), left_half
        self.calls: list[tuple[int, int]] = []
        self.maps: dict[Path, np.ndarray] = {}

    def predict(self, paths, batch_size=16):
        self.calls.append((len(paths), batch_size))
        out = []
        for path in paths:
            s = self.samples[path]
            index = int(path.stem.split("_")[-1])
            amap = np.random.default_rng(index).uniform(0, 0.1, SHAPE).astype(np.float32)
            if s.defect not in self.random_defects:
                for mask_path in s.mask_paths:
                    mask = np.asarray(Image.open(mask_path)) > 0
                    if self.left_half:
                        cols = np.flatnonzero(mask.any(axis=0))
                        mask[:, cols[len(cols) // 2] :] = False
                    amap[mask] += 1.0
            self.maps[path] = amap
            out.append(FakePrediction(float(amap.max()), amap))
        return out


def make_samples(root: Path, counts: dict[tuple[str, str], int], masks: bool = True, **extra):
    """Good images (key ("", "good")) and anomalous ones with one or two rectangle masks."""
    rng = np.random.default_rng(0)
    samples = []
    for (group, defect), n in counts.items():
        folder = root / defect
        folder.mkdir(parents=True)
        for i in range(n):
            path = folder / f"{defect}_{i}.png"
            Image.fromarray(rng.integers(0, 255, (*SHAPE, 3), dtype=np.uint8)).save(path)
            mask_paths = []
            if defect != "good" and masks:
                for j in range(1 + i % 2):  # one or two masks (LOCO: one file per defect)
                    m = np.zeros(SHAPE, np.uint8)
                    y, x = rng.integers(0, 14), rng.integers(0, 20)
                    m[y : y + 8, x : x + 10] = 255
                    mask_paths.append(folder / f"{defect}_{i}_mask{j}.png")
                    Image.fromarray(m).save(mask_paths[-1])
            kw = {k: v * len(mask_paths) for k, v in extra.items()} if mask_paths else {}
            samples.append(
                FakeSample(path, int(defect != "good"), defect, tuple(mask_paths), group, **kw)
            )
    return samples


def test_perfect_and_random_defects(tmp_path):
    samples = make_samples(tmp_path, {("", "good"): 8, ("", "scratch"): 8, ("", "crack"): 8})
    model = FakeModel(samples, random_defects={"crack"})
    res = evaluate(model, samples, batch_size=5, progress=False)
    json.dumps(res)  # JSON-serialisable

    assert (res["n_images"], res["n_good"], res["n_anomalous"]) == (24, 8, 16)
    assert res["has_masks"] is True
    # crack scores are exactly the good scores: 0.5 on crack, 1.0 on scratch, 0.75 overall
    assert res["image_auroc"] == pytest.approx(0.75)
    assert res["per_defect"]["scratch"]["image_auroc"] == 1.0
    assert res["per_defect"]["crack"]["image_auroc"] == pytest.approx(0.5)
    assert res["per_defect"]["scratch"]["n"] == res["per_defect"]["crack"]["n"] == 8
    scratch = res["per_defect"]["scratch"]
    for key in ("pixel_auroc", "aupro", "pixel_f1_max"):
        assert scratch[key] == pytest.approx(1.0), key
    crack = res["per_defect"]["crack"]
    assert abs(crack["pixel_auroc"] - 0.5) < 0.05 and crack["aupro"] < 0.25
    assert "per_group" not in res and "spro_0.05" not in res

    # overall pixel AUROC equals sklearn on all pixels of all images
    maps = np.stack([model.maps[s.path] for s in samples])
    gts = np.stack([read_mask_union(s) for s in samples])
    assert res["pixel_auroc"] == pytest.approx(roc_auc_score(gts.ravel(), maps.ravel()), abs=1e-5)
    assert 0.5 < res["aupro"] < 1.0

    rows = res["scores"]
    assert len(rows) == 24 and set(rows[0]) == {"path", "label", "defect", "score"}
    assert rows[8] == {
        "path": str(samples[8].path),
        "label": 1,
        "defect": "scratch",
        "score": pytest.approx(model.maps[samples[8].path].max()),
    }


def read_mask_union(sample) -> np.ndarray:
    return np.any([read_mask(p, SHAPE) for p in sample.mask_paths] or [np.zeros(SHAPE, bool)], 0)


def test_predict_is_called_in_chunks(tmp_path):
    samples = make_samples(tmp_path, {("", "good"): 5, ("", "dent"): 5})
    model = FakeModel(samples)
    res = evaluate(model, samples, batch_size=4, progress=False)
    assert model.calls == [(4, 4), (4, 4), (2, 4)]
    assert res["image_auroc"] == 1.0 and res["aupro"] == pytest.approx(1.0)


def test_without_masks_only_image_metrics(tmp_path):
    samples = make_samples(tmp_path, {("", "good"): 4, ("", "dent"): 4}, masks=False)
    res = evaluate(FakeModel(samples, random_defects={"dent"}), samples, progress=False)
    assert res["has_masks"] is False
    assert res["image_auroc"] == pytest.approx(0.5)
    assert not {"pixel_auroc", "aupro", "pixel_f1_max"} & set(res)
    assert res["per_defect"] == {"dent": {"image_auroc": pytest.approx(0.5), "n": 4}}


def test_groups_and_spro(tmp_path):
    counts = {("", "good"): 6, ("logical", "missing"): 4, ("structural", "scratch"): 4}
    # each mask saturates at half its area; the model finds exactly the left half of each mask
    samples = make_samples(
        tmp_path, counts, saturation_thresholds=(0.5,), relative_saturation=(True,)
    )
    model = FakeModel(samples, left_half=True)
    res = evaluate(model, samples, batch_size=3, progress=False)
    json.dumps(res)
    assert set(res["per_group"]) == {"logical", "structural"}
    for entry in [res, *res["per_group"].values(), *res["per_defect"].values()]:
        assert entry["image_auroc"] == 1.0
        assert entry["spro_0.05"] == pytest.approx(1.0) and entry["spro_0.3"] == pytest.approx(1.0)
        assert entry["aupro"] < 0.9  # PRO is not saturated: half of each region is missed
    assert res["per_group"]["logical"]["n"] == 4

    # saturation at the full mask area (a callable): half found at FPR 0, the rest rises with
    # the FPR (same noise as the background), so sPRO(fpr) ~ 0.5 + fpr / 2
    calls = []

    def full_area(sample, masks):
        calls.append(len(masks))
        return [int(m.sum()) for m in masks]

    res = evaluate(model, samples, progress=False, saturation=full_area)
    assert len(calls) == 8
    assert res["spro_0.05"] == pytest.approx(0.5 + 0.5 * 0.025, abs=0.01)
    assert res["spro_0.3"] == pytest.approx(0.5 + 0.5 * 0.15, abs=0.02)

    # the same from the samples: relative saturation 1.0 = the full area (absolute 1.0 = 1 px)
    samples = make_samples(
        tmp_path / "rel", counts, saturation_thresholds=(1.0,), relative_saturation=(True,)
    )
    again = evaluate(FakeModel(samples, left_half=True), samples, progress=False)
    assert again["spro_0.05"] == pytest.approx(res["spro_0.05"], abs=0.01)

    # absolute thresholds in pixels, as `ulsad.data` stores them: 40 px = half of each 80-px mask
    samples = make_samples(tmp_path / "abs", counts, saturation_thresholds=(40.0,))
    again = evaluate(FakeModel(samples, left_half=True), samples, progress=False)
    assert again["spro_0.05"] == pytest.approx(1.0)


def test_custom_mask_loader_is_used(tmp_path):
    samples = make_samples(tmp_path, {("", "good"): 3, ("", "dent"): 3})
    seen = []

    def load_mask(sample, shape):
        seen.append((sample.defect, shape))
        return read_mask_union(sample)

    res = evaluate(FakeModel(samples), samples, progress=False, load_mask=load_mask)
    assert seen == [("dent", SHAPE)] * 3 and res["pixel_auroc"] == pytest.approx(1.0)


def test_bad_inputs(tmp_path):
    samples = make_samples(tmp_path, {("", "good"): 2, ("", "dent"): 2})

    class Short(FakeModel):
        def predict(self, paths, batch_size=16):
            return super().predict(paths, batch_size)[:-1]

    with pytest.raises(ULSADError, match="predictions"):
        evaluate(Short(samples), samples, progress=False)
    with pytest.raises(ULSADError, match="good"):
        evaluate(FakeModel(samples), samples[2:], progress=False)
    with pytest.raises(ULSADError, match="batch_size"):
        evaluate(FakeModel(samples), samples, batch_size=0, progress=False)
