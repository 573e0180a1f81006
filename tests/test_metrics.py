"""Metrics: streaming binned pixel metrics against slow exact references, and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from ulsad.errors import ULSADError
from ulsad.metrics import (
    PixelMetrics,
    SPROMetric,
    f1_max,
    image_auroc,
    saturation_area,
)

# ---------------------------------------------------------------- exact (slow) references


def exact_partial_auc(x: np.ndarray, y: np.ndarray, max_fpr: float) -> float:
    """Trapezoids up to max_fpr, interpolating y at max_fpr (official MVTec `trapz`)."""
    keep = x <= max_fpr
    xs, ys = x[keep], y[keep]
    area = np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs))
    if xs[-1] < max_fpr:
        j = np.flatnonzero(~keep)[0]
        y_cut = np.interp(max_fpr, [x[j - 1], x[j]], [y[j - 1], y[j]])
        area += 0.5 * (y_cut + ys[-1]) * (max_fpr - xs[-1])
    return float(area / max_fpr)


def count_ge(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")


def exact_curve(maps, overlaps):
    """(FPR, mean overlap) at every distinct value, from (0, 0); overlaps: [(values, sat)]."""
    neg = np.sort(np.concatenate([a[~m].ravel() for a, m in maps]))
    thresholds = np.unique(np.concatenate([a.ravel() for a, _ in maps]))[::-1]
    fpr = count_ge(neg, thresholds) / neg.size
    y = np.mean(
        [np.minimum(count_ge(np.sort(v), thresholds) / sat, 1.0) for v, sat in overlaps], axis=0
    )
    return np.r_[0.0, fpr], np.r_[0.0, y]


def exact_pixel_metrics(maps_masks) -> dict[str, float]:
    values = np.concatenate([a.ravel() for a, _ in maps_masks])
    labels = np.concatenate([m.ravel() for _, m in maps_masks])
    regions = []
    for a, m in maps_masks:
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(a[lab == i], (lab == i).sum()) for i in range(1, n + 1)]
    fpr, pro = exact_curve(maps_masks, regions)
    return {"pixel_auroc": roc_auc_score(labels, values), "aupro": exact_partial_auc(fpr, pro, 0.3)}


def random_case(seed: int, n_images: int = 6, shape=(48, 64)):
    """Random blob masks (a third of the images good) and noisy maps correlated with them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_images):
        blobs = ndimage.gaussian_filter(rng.normal(size=shape), 3.0)
        mask = blobs > 0.12 if i % 3 else np.zeros(shape, bool)
        signal = rng.uniform(0.5, 2.0)
        amap = (mask * signal + rng.normal(0, 0.6, shape) + rng.normal(0, 0.3)).astype(np.float32)
        out.append((amap, mask))
    return out


# ---------------------------------------------------------------- image level


def test_image_auroc_and_f1_known_values():
    assert image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert image_auroc([0, 1], [0.9, 0.1]) == 0.0
    assert f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8)
    assert f1_max([0, 1, 1], [0.0, 1.0, 2.0]) == pytest.approx(1.0)


def test_image_metrics_reject_bad_input():
    with pytest.raises(ULSADError, match="both good"):
        image_auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ULSADError, match="NaN"):
        image_auroc([0, 1], [0.1, np.nan])
    with pytest.raises(ULSADError, match="anomalous"):
        f1_max([0, 0], [0.1, 0.2])


# ---------------------------------------------------------------- pixel level, hand-made


def _tiny():
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:5] = True
    mask[6, 6] = True  # a second region
    return mask


def test_perfect_inverted_and_constant_maps():
    mask = _tiny()
    good = np.zeros((8, 8), bool)
    cases = {
        "perfect": (mask.astype(np.float32), 1.0, 1.0),
        "inverted": ((~mask).astype(np.float32), 0.0, 0.0),
        # one threshold: the curve is the diagonal, area up to 0.3 = 0.045 -> 0.15 normalised
        "constant": (np.full((8, 8), 0.7, np.float32), 0.5, 0.15),
    }
    for name, (amap, auroc, aupro) in cases.items():
        pm = PixelMetrics()
        pm.update(amap, mask)
        pm.update(np.full((8, 8), amap[~mask][0]), good)  # good image: the negatives' value
        got = pm.compute()
        assert got["pixel_auroc"] == pytest.approx(auroc, abs=1e-12), name
        assert got["aupro"] == pytest.approx(aupro, abs=1e-12), name
    # constant map: one box from (0, 0) to (1, 1), the exact curve could be anywhere in it
    assert pm.error_bound() == pytest.approx({"pixel_auroc": 0.5, "aupro": 1.0})
    n_pos, n_all = mask.sum(), 128
    assert got["pixel_f1_max"] == pytest.approx(2 * n_pos / (n_pos + n_all))


def test_aupro_weights_regions_not_pixels():
    # Region A (6 px) fully found at FPR 0, region B (1 px) never: PRO 0.5, pixel TPR 6/7.
    mask = _tiny()
    amap = np.where(mask, 1.0, 0.0).astype(np.float32)
    amap[6, 6] = -1.0
    pm = PixelMetrics()
    pm.update(amap, mask)
    got = pm.compute()
    assert got["aupro"] == pytest.approx(0.5)
    assert got["pixel_auroc"] == pytest.approx(6 / 7)
    assert pm.n_regions == 2 and pm.n_positive == 7 and pm.n_negative == 57


def test_diagonal_touching_pixels_are_one_region():
    mask = np.zeros((5, 5), bool)
    mask[1, 1] = mask[2, 2] = True  # 8-connected: one region of two pixels
    pm = PixelMetrics()
    pm.update(np.where(mask, 1.0, 0.0), mask)
    assert pm.n_regions == 1


def test_pixel_metrics_errors():
    pm = PixelMetrics()
    pm.update(np.zeros((4, 4)), np.zeros((4, 4), bool))
    with pytest.raises(ULSADError, match="anomalous and defect-free"):
        pm.compute()
    with pytest.raises(ULSADError, match="shape"):
        pm.update(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(ULSADError, match="NaN"):
        pm.update(np.full((4, 4), np.inf), np.zeros((4, 4), bool))


# ---------------------------------------------------------------- pixel level, vs exact


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_binned_matches_exact_on_random_cases(seed):
    case = random_case(seed)
    exact = exact_pixel_metrics(case)
    pm = PixelMetrics()
    for amap, mask in case:
        pm.update(amap, mask)
    got, bound = pm.compute(), pm.error_bound()
    for key in ("pixel_auroc", "aupro"):
        diff = abs(got[key] - exact[key])
        assert diff <= bound[key] + 1e-12, key
        assert diff < 1e-4 and bound[key] < 1e-4, (key, diff, bound[key])
    values = np.concatenate([a.ravel() for a, _ in case])
    labels = np.concatenate([m.ravel() for _, m in case])
    assert got["pixel_f1_max"] == pytest.approx(f1_max(labels, values), abs=1e-4)


def test_coarse_bins_stay_within_reported_bound():
    case = random_case(7)
    exact = exact_pixel_metrics(case)
    pm = PixelMetrics(bins=256)
    for amap, mask in case:
        pm.update(amap, mask)
    got, bound = pm.compute(), pm.error_bound()
    for key in ("pixel_auroc", "aupro"):
        assert abs(got[key] - exact[key]) <= bound[key] + 1e-12
        assert 1e-5 < bound[key] < 1e-2  # coarse, but a real bound rather than a blank cheque
    # the top bins of a coarse grid hold few pixels: AUROC still within 1e-3
    assert abs(got["pixel_auroc"] - exact["pixel_auroc"]) < 1e-3


def test_range_grows_with_later_outliers_and_merge_is_exact():
    case = random_case(4, n_images=6)
    case[0] = (case[0][0] * 0.01, case[0][1])  # narrow first image fixes a tiny first range
    case[-1][0][0, 0] = 1e6  # a far outlier in the last image
    exact = exact_pixel_metrics(case)
    whole, first, second = PixelMetrics(), PixelMetrics(), PixelMetrics()
    for i, (amap, mask) in enumerate(case):
        whole.update(amap, mask)
        (first if i < 3 else second).update(amap, mask)
    merged = second.merge(first)
    for key, value in whole.compute().items():
        assert merged.compute()[key] == pytest.approx(value, abs=1e-12)
    assert abs(whole.compute()["pixel_auroc"] - exact["pixel_auroc"]) < 1e-4
    assert abs(whole.compute()["aupro"] - exact["aupro"]) < 1e-4
    assert merged.n_regions == whole.n_regions and merged.n_negative == whole.n_negative


# ---------------------------------------------------------------- sPRO


def test_saturation_area_follows_official_rule():
    assert saturation_area(1000, 0.5, relative=True) == 500
    assert saturation_area(1000, 200, relative=False) == 200
    assert saturation_area(150, 200, relative=False) == 150


def test_spro_saturates():
    mask = np.zeros((10, 20), bool)
    mask[:, :10] = True  # 100 px
    amap = np.zeros((10, 20), np.float32)
    amap[:, :5] = 1.0  # half of the defect found, no false positive
    for sat, expected in ((50, 1.0), (100, None)):
        sp = SPROMetric()
        sp.update(amap, [mask], [sat])
        sp.update(np.zeros((10, 20), np.float32), [], [])  # a good image
        got = sp.compute()
        if expected is not None:
            assert got == pytest.approx({"spro_0.05": 1.0, "spro_0.3": 1.0})
        else:  # overlap 0.5 at FPR 0, then the remaining 50 px tie with all 300 negatives at 0
            assert got["spro_0.05"] == pytest.approx(0.5 + 0.5 * 0.025)
            assert got["spro_0.3"] == pytest.approx(0.5 + 0.5 * 0.15)


@pytest.mark.parametrize("seed", [0, 5])
def test_spro_matches_exact(seed):
    """Two overlapping masks per anomalous image, mixed saturations, vs the exact curve."""
    rng = np.random.default_rng(seed)
    case, sp = [], SPROMetric()
    for amap, mask in random_case(seed):
        lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
        masks = [lab == i for i in range(1, n + 1)]
        if masks:  # a LOCO-like extra mask overlapping the others
            extra = np.zeros_like(mask)
            extra[10:30, 20:50] = True
            masks.append(extra)
        sats = [saturation_area(int(m.sum()), rng.uniform(0.2, 1.0), True) for m in masks]
        sp.update(amap, masks, sats)
        union = np.any(masks, axis=0) if masks else mask
        case.append((amap, union, masks, sats))
    fpr, spro = exact_curve(
        [(a, u) for a, u, _, _ in case],
        [(a[m], max(s, 1)) for a, _, ms, ss in case for m, s in zip(ms, ss, strict=True)],
    )
    got, bound = sp.compute(), sp.error_bound()
    for m in (0.05, 0.3):
        key = f"spro_{m:g}"
        diff = abs(got[key] - exact_partial_auc(fpr, spro, m))
        assert diff <= bound[key] + 1e-12 and diff < 1e-4, (key, diff)


def test_spro_merge_and_errors():
    mask = np.zeros((6, 6), bool)
    mask[1:3, 1:3] = True
    a, b = SPROMetric(), SPROMetric()
    a.update(np.where(mask, 2.0, 0.0), [mask], [4])
    b.update(np.zeros((6, 6)), [], [])
    assert a.merge(b).compute()["spro_0.05"] == pytest.approx(1.0)
    assert a.merge(b).n_masks == 1
    with pytest.raises(ULSADError, match="sPRO needs"):
        b.compute()
    with pytest.raises(ULSADError, match="saturation"):
        b.update(np.zeros((6, 6)), [mask], [])
    with pytest.raises(ULSADError, match="same kind"):
        a.merge(PixelMetrics())
