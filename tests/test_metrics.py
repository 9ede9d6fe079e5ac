"""Tests of avaga_lib.evaluation.metrics against scikit-learn, exact references and hand-computed cases."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from avaga_lib.evaluation import metrics as M
from avaga_lib.evaluation.pixel_metrics import PixelMetricAccumulator, _trapezoid_upto, quantile_edges, validation_edges


def _exact_aupro(maps: np.ndarray, gts: np.ndarray, max_fpr: float = 0.3) -> float:
    """Unbinned reference, written independently: PRO at every distinct score (as MVTec AD's compute_pro)."""
    scores = maps.reshape(-1)
    region_id = np.zeros(gts.shape, dtype=np.int64)
    offset = 0
    for i in range(gts.shape[0]):
        lab, n = ndimage.label(gts[i], structure=np.ones((3, 3)))
        region_id[i][lab > 0] = lab[lab > 0] + offset
        offset += n
    rid = region_id.reshape(-1)
    sizes = np.bincount(rid, minlength=offset + 1).astype(float)
    order = np.argsort(-scores, kind="stable")
    s_sorted, r_sorted = scores[order], rid[order]
    fp = np.cumsum(r_sorted == 0) / (r_sorted == 0).sum()
    pro_inc = np.where(r_sorted > 0, 1.0 / np.maximum(sizes[r_sorted], 1), 0.0) / offset
    pro = np.cumsum(pro_inc)
    keep = np.append(np.diff(s_sorted) != 0, True)  # one point per distinct threshold
    fpr, pro = np.concatenate([[0.0], fp[keep]]), np.concatenate([[0.0], pro[keep]])
    return _trapezoid_upto(fpr, pro, max_fpr) / max_fpr


# ---------------------------------------------------------------- IoU, accuracy, AUROC, FP area


def test_iou_hand_cases() -> None:
    gt = np.zeros((4, 4, 4), bool)
    pred = np.zeros((4, 4, 4), bool)
    gt[0, :2, :2] = True  # 4 px
    pred[0, :2, :] = True  # 8 px, 4 shared -> 4/8
    gt[1, 0, 0] = True  # prediction empty -> 0
    pred[2, 0, 0] = True  # gt empty, pred not -> undefined (no region to localize), like image 3
    # image 3: both empty -> NaN
    iou = M.iou_per_image(pred, gt)
    assert iou[:2] == pytest.approx([0.5, 0.0])
    assert np.isnan(iou[2]) and np.isnan(iou[3])
    assert M.mean_iou(pred, gt) == pytest.approx(0.25)
    assert M.mean_iou(pred, gt, labels=[1, 1, 1, 0]) == pytest.approx(0.25)  # an empty-mask frame: no help, no harm
    assert M.pooled_iou(pred, gt, labels=[1, 1, 1, 0]) == pytest.approx(4 / 9)  # (4+0)/(8+1): image 2 is left out
    # (N,1,H,W) torch float input is accepted
    assert M.mean_iou(torch.from_numpy(pred[:, None]).float(), torch.from_numpy(gt[:, None]).float()) == pytest.approx(
        0.25
    )
    with pytest.warns(UserWarning, match="undefined"):
        assert np.isnan(M.mean_iou(pred[3:], gt[3:]))
    with pytest.raises(ValueError, match="shape"):
        M.iou_per_image(pred, gt[:, :2])


def test_binarize_is_strict() -> None:
    assert M.binarize(np.array([0.4, 0.5, 0.6]), 0.5).tolist() == [False, False, True]


def test_mean_class_accuracy_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.integers(0, 2, 50)
        p = rng.integers(0, 2, 50)
        assert M.mean_class_accuracy(t, p) == pytest.approx(balanced_accuracy_score(t, p), abs=1e-12)
    assert M.mean_class_accuracy([0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]) == pytest.approx(0.75)


def test_image_auroc_matches_sklearn_and_nan_when_one_class() -> None:
    rng = np.random.default_rng(1)
    t = rng.integers(0, 2, 200)
    s = rng.normal(size=200) + t
    assert M.image_auroc(t, s) == pytest.approx(roc_auc_score(t, s), abs=1e-12)
    with pytest.warns(UserWarning, match=r"no test image with label \[1\]"):
        assert np.isnan(M.image_auroc(np.zeros(5), np.arange(5.0)))


def test_fp_area() -> None:
    p = np.zeros((2, 4, 4), bool)
    p[0, 0, :] = True  # 4/16
    assert M.fp_area(p) == pytest.approx(0.125)


def test_threshold_curves() -> None:
    maps = np.zeros((2, 4, 4), np.float32)
    gt = np.zeros((2, 4, 4), bool)
    gt[0, :2, :2] = True
    maps[0, :2, :2] = 0.55
    maps[0, :2, 2:] = 0.35  # extra false positives below 0.4
    curve = M.iou_threshold_curve(maps, gt, (0.3, 0.5, 0.6), labels=[1, 0])
    assert curve == pytest.approx({0.3: 0.5, 0.5: 1.0, 0.6: 0.0})
    acc = M.accuracy_threshold_curve([0.1, 0.45, 0.55, 0.9], [0, 0, 1, 1], (0.5, 0.95))
    assert acc == pytest.approx({0.5: 1.0, 0.95: 0.5})


def test_nan_to_none() -> None:
    out = M.nan_to_none({"a": float("nan"), "b": 0.5, "c": {"d": np.float64("nan")}, "e": None})
    assert out == {"a": None, "b": 0.5, "c": {"d": None}, "e": None}


# ---------------------------------------------------------------- streamed pixel metrics


def test_pixel_auroc_matches_sklearn_within_binning_error() -> None:
    rng = np.random.default_rng(2)
    gt = rng.random((6, 32, 32)) < 0.1
    maps = np.clip(rng.normal(0.4, 0.15, gt.shape) + 0.2 * gt, 0, 1)
    acc = PixelMetricAccumulator()
    for i in range(0, 6, 2):  # in batches
        acc.update(torch.from_numpy(maps[i : i + 2]), torch.from_numpy(gt[i : i + 2]))
    got = acc.compute()["pixel_auroc"]
    assert got == pytest.approx(roc_auc_score(gt.reshape(-1), maps.reshape(-1)), abs=1e-3)


def test_aupro_perfect_and_constant_maps() -> None:
    gt = np.zeros((2, 16, 16), bool)
    gt[0, 2:6, 2:6] = True
    gt[1, 10:12, 3:15] = True
    acc = PixelMetricAccumulator()
    acc.update(gt.astype(np.float32), gt)
    r = acc.compute()
    assert r["pixel_auroc"] == pytest.approx(1.0)
    assert r["aupro"] == pytest.approx(1.0)
    # constant map: the curve jumps from (0,0) to (1,1) -> area up to 0.3 = 0.3^2/2, normalised -> 0.15
    acc = PixelMetricAccumulator()
    acc.update(np.full(gt.shape, 0.7), gt)
    r = acc.compute()
    assert r["pixel_auroc"] == pytest.approx(0.5)
    assert r["aupro"] == pytest.approx(0.15)


def test_aupro_two_regions_differs_from_pixel_overlap() -> None:
    # region A: 4 px fully detected; region B: 12 px of which 4 detected; background 0
    gt = np.zeros((1, 10, 10), bool)
    gt[0, 0:2, 0:2] = True  # A
    gt[0, 5:7, 2:8] = True  # B
    maps = np.zeros(gt.shape)
    maps[0, 0:2, 0:2] = 1.0
    maps[0, 5:7, 2:4] = 1.0  # 4 of B's 12 px
    acc = PixelMetricAccumulator()
    acc.update(maps, gt)
    assert acc.n_regions == 2
    c = acc.curves()
    # at any threshold in (0, 1]: FPR 0, PRO = mean(1, 1/3) = 2/3 while pixel overlap (TPR) = 8/16 = 1/2
    mid = np.searchsorted(c["fpr"], 0.0, side="right") - 1
    assert c["pro"][mid] == pytest.approx(2 / 3)
    assert c["tpr"][mid] == pytest.approx(0.5)
    # curve (0,0) -> (0,2/3) -> (1,1): PRO(0.3) = 2/3 + 0.3/3; area/0.3 = (2/3 + 0.7667) / 2
    expected = (2 / 3 + (2 / 3 + 0.1)) / 2
    assert acc.compute()["aupro"] == pytest.approx(expected, abs=1e-9)
    assert acc.compute()["aupro"] == pytest.approx(_exact_aupro(maps, gt), abs=1e-9)


def test_aupro_matches_exact_reference_on_random_maps() -> None:
    rng = np.random.default_rng(3)
    gt = np.zeros((4, 48, 48), bool)
    for i in range(4):
        for _ in range(3):
            y, x = rng.integers(0, 40, 2)
            h, w = rng.integers(2, 9, 2)
            gt[i, y : y + h, x : x + w] = True
    maps = ndimage.gaussian_filter(rng.random(gt.shape) * 0.5 + 0.08 * gt, sigma=(0, 1, 1))
    acc = PixelMetricAccumulator()
    acc.update(maps, gt)
    assert acc.compute()["aupro"] == pytest.approx(_exact_aupro(maps, gt), abs=5e-3)


def test_score_range_and_quantile_edges_for_small_residuals() -> None:
    # L2-like maps around 1e-3: uniform [0,1] bins lose the ranking; quantile edges from normal maps keep it
    rng = np.random.default_rng(4)
    gt = rng.random((4, 32, 32)) < 0.1
    maps = rng.gamma(2.0, 5e-4, gt.shape) * (1 + 0.8 * gt)
    ref = roc_auc_score(gt.reshape(-1), maps.reshape(-1))
    coarse = PixelMetricAccumulator()
    coarse.update(maps, gt)
    val = rng.gamma(2.0, 5e-4, (4, 32, 32))  # "validation" normal maps, no labels involved
    fine = PixelMetricAccumulator(edges=quantile_edges(val, bins=1000))
    fine.update(maps, gt)
    ranged = PixelMetricAccumulator(score_range=(0.0, float(val.max())))
    ranged.update(maps, gt)
    assert abs(coarse.compute()["pixel_auroc"] - ref) > 5e-3  # shows why the option exists
    assert fine.compute()["pixel_auroc"] == pytest.approx(ref, abs=2e-3)
    assert ranged.compute()["pixel_auroc"] == pytest.approx(ref, abs=2e-3)


def test_undefined_pixel_metrics_and_bad_input() -> None:
    acc = PixelMetricAccumulator()
    acc.update(np.random.default_rng(0).random((2, 8, 8)), np.zeros((2, 8, 8), bool))
    with pytest.warns(UserWarning, match="no anomalous pixel"):
        r = acc.compute()
    assert np.isnan(r["pixel_auroc"]) and np.isnan(r["aupro"])
    with pytest.raises(ValueError, match="shape"):
        acc.update(np.zeros((2, 8, 8)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(np.full((1, 8, 8), np.nan), np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="score_range"):
        PixelMetricAccumulator(score_range=(1.0, 1.0))


def test_accumulator_memory_is_bounded_for_a_full_category() -> None:
    """150 images at 256x256 in batches of 10: the retained state stays small and does not grow with N."""
    rng = np.random.default_rng(5)
    gt_batch = np.zeros((10, 256, 256), bool)
    for i in range(10):
        gt_batch[i, 20 + 10 * i : 60 + 10 * i, 30:90] = True  # one region per anomalous image
        gt_batch[i, 200:210, 200:230] = i % 2 == 0  # a second region on half of them
    maps = rng.random((10, 256, 256), dtype=np.float32)

    def run(n_batches: int) -> tuple[int, int, PixelMetricAccumulator]:
        tracemalloc.start()
        acc = PixelMetricAccumulator()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(n_batches):
            acc.update(maps, gt_batch)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return current - base, peak - base, acc

    small, _, _ = run(3)
    retained, peak, acc = run(15)
    assert acc.n_images == 150
    assert acc.state_nbytes() < 3 * 2**20  # 2 x 1000 + 225 regions x 1000 int64 ~ 1.8 MB
    assert retained < 4 * 2**20
    assert retained - small < 2.5 * 2**20  # growth = region histograms only (12 batches x 15 regions x 8 KB)
    assert peak < 64 * 2**20  # one batch of temporaries, far below the 2 GiB budget of issue 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 0.4 < acc.compute()["pixel_auroc"] < 0.6  # random maps


def test_squeezed_map_scored_with_validation_edges_equals_sklearn() -> None:
    # issue 13: a saturated attention map living in [0, 0.01]; its validation maps come from the same distribution
    rng = np.random.default_rng(13)
    gt = np.zeros((6, 32, 32), bool)
    gt[:, 8:16, 10:20] = True

    def squeezed(shape: tuple[int, ...], mask: np.ndarray) -> np.ndarray:
        return 0.01 * np.where(mask, rng.beta(3.0, 4.0, shape), rng.beta(2.0, 5.0, shape))

    maps = squeezed(gt.shape, gt)
    val = squeezed((4, 32, 32), np.zeros((4, 32, 32), bool))  # normal validation maps: no label involved
    ref = roc_auc_score(gt.reshape(-1), maps.reshape(-1))
    edges = validation_edges(val, 1000, upper=1.0)
    assert np.all(np.diff(edges) > 0) and edges[-1] == 1.0
    ours = PixelMetricAccumulator(edges=edges)
    ours.update(maps, gt)
    assert ours.compute()["pixel_auroc"] == pytest.approx(ref, abs=1e-3)
    fixed = PixelMetricAccumulator(1000, 0.3, (0.0, 1.0))  # the former fixed uniform (0, 1) bins: mostly ties
    fixed.update(maps, gt)
    assert abs(fixed.compute()["pixel_auroc"] - ref) > 5e-3


def test_oracle_best_iou_uses_the_masks_and_beats_every_grid_threshold() -> None:
    rng = np.random.default_rng(5)
    gt = np.zeros((5, 24, 24), bool)
    gt[1:, 5:12, 6:14] = True
    labels = np.array([0, 1, 1, 1, 1])
    maps = 0.2 * rng.random(gt.shape) + 0.5 * gt  # perfectly separable between 0.2 and 0.5
    best, t = M.oracle_best_iou(maps, gt, labels)
    assert best == 1.0 and 0.2 <= t < 0.5
    curve = M.iou_threshold_curve(maps, gt, [0.1, 0.3, 0.6], labels)
    assert all(best >= v for v in curve.values())
    gate = np.array([True, True, False, True, True])  # an image called normal is predicted empty
    assert M.oracle_best_iou(maps, gt, labels, gate)[0] == pytest.approx(0.75)
    assert all(np.isnan(v) for v in M.oracle_best_iou(maps, gt, np.zeros(5)))  # no anomalous image
