"""Measurement (issue 20): exact pixel AUROC out of the validation range, AUPRO on covering bins, the grid cap of a
map's native resolution, and the per-run test-image bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from avaga_lib.evaluation import localization as L
from avaga_lib.evaluation import metrics as M
from avaga_lib.evaluation.pixel_metrics import (
    PixelMetricAccumulator,
    bootstrap_pixel_auroc,
    covering_edges,
    exact_pixel_auroc,
    per_image_histograms,
    validation_edges,
)


def _maps(shift: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Test maps whose every value lies ``shift`` away from a validation range [0, 1] (a saturated map)."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((6, 32, 32), bool)
    gt[3:, 8:16, 8:20] = True
    m = rng.random(gt.shape) * 1e-3 + 1e-3 * 0.6 * gt  # a tiny range, overlapping classes
    return (m + shift).astype(np.float32), gt


def _exact_aupro(m: np.ndarray, gt: np.ndarray, max_fpr: float) -> float:
    """AUPRO with a threshold at every distinct value (brute force, small inputs only)."""
    acc = PixelMetricAccumulator(edges=np.unique(np.concatenate([np.unique(m), [np.nextafter(m.max(), np.inf)]])),
                                 max_fpr=max_fpr)
    acc.update(m, gt)
    return acc.compute()["aupro"]


@pytest.mark.parametrize("shift", [2.0, -2.0, 0.5], ids=["above", "below", "inside"])
def test_pixel_auroc_is_exact_when_test_values_leave_the_validation_range(shift: float) -> None:
    m, gt = _maps(shift)
    val_edges = validation_edges(np.random.default_rng(1).random(4096), 1000, 1.0)  # validation in [0, 1]
    binned = PixelMetricAccumulator(edges=val_edges)  # what the evaluator did before issue 20
    binned.update(m, gt)
    want = roc_auc_score(gt.ravel(), m.ravel())
    assert exact_pixel_auroc(m, gt) == pytest.approx(want, abs=1e-4)
    if shift != 0.5:  # out of range, the old bins lumped every test value into the tail bin
        assert abs(binned.compute()["pixel_auroc"] - want) > 1e-2
    cover = PixelMetricAccumulator(edges=covering_edges(val_edges, m), max_fpr=0.3)
    cover.update(m, gt)
    assert cover.compute()["pixel_auroc"] == pytest.approx(want, abs=1e-3)  # bounded by the covering bins
    assert cover.compute()["aupro"] == pytest.approx(_exact_aupro(m, gt, 0.3), abs=2e-3)


def test_exact_pixel_auroc_leaves_padding_out_and_is_nan_without_a_class() -> None:
    m, gt = _maps(0.0)
    valid = np.ones_like(gt)
    valid[:, :, :4] = False
    m2 = m.copy()
    m2[:, :, :4] = 10.0  # padding: any value, never scored
    assert exact_pixel_auroc(m2, gt, valid) == roc_auc_score(gt[valid], m[valid])
    with pytest.warns(UserWarning, match="undefined"):
        assert np.isnan(exact_pixel_auroc(m, np.zeros_like(gt)))


def test_grid_cap_of_a_hand_made_mask() -> None:
    gt = np.zeros((2, 32, 32), bool)
    gt[0, 0:16, 0:16] = True  # exactly one cell of a 2x2 grid: a 2x2 map can draw it exactly
    gt[1, 0:2, 0:2] = True  # 4 pixels: far smaller than a 16x16 cell
    labels = np.array([1, 1])
    per_pixel = L.grid_cap(gt, labels, 32)
    assert per_pixel == 1.0
    cap2 = L.grid_cap(gt, labels, 2)
    one = L.grid_cap(gt[:1], labels[:1], 2)
    assert one > 0.7  # a whole cell: bilinear blur only at its border
    small = L.grid_cap(gt[1:], labels[1:], 2)
    # 4 pixels cannot be drawn by a 2x2 map: the best it can do is the flat 8x8 corner the bilinear upsampling
    # leaves (half a cell, align_corners=False), IoU 4 / 64
    assert small == pytest.approx(4 / 64, abs=1e-6)
    assert cap2 == pytest.approx((one + small) / 2, abs=0.05)  # one threshold for both images: at most their mean
    assert L.grid_cap(gt[1:], labels[1:], 16) > small  # a finer grid allows more


def test_stratified_draws_keep_each_class_size() -> None:
    y = np.array([0] * 5 + [1] * 3)
    d = M.stratified_draws(y, resamples=200, seed=0)
    assert d.shape == (200, 8)
    np.testing.assert_array_equal(d[:, y == 0].sum(1), 5)
    np.testing.assert_array_equal(d[:, y == 1].sum(1), 3)


def test_bootstrap_image_auroc_equals_sklearn_with_weights() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0] * 20 + [1] * 15)
    s = rng.random(35) + 0.3 * y
    s[3] = s[25]  # a tie across classes counts one half
    d = M.stratified_draws(y, resamples=20, seed=1)
    got = M.bootstrap_image_auroc(y, s, d)
    want = [roc_auc_score(y, s, sample_weight=w) for w in d]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_bootstrap_pixel_auroc_of_all_ones_weights_is_the_binned_auroc() -> None:
    m, gt = _maps(0.0)
    edges = covering_edges(np.array([0.0, 1.0]), m)
    normal, anomalous = per_image_histograms(m, gt, edges)
    acc = PixelMetricAccumulator(edges=edges)
    acc.update(m, gt)
    once = bootstrap_pixel_auroc(normal, anomalous, np.ones((1, m.shape[0]), dtype=np.int64))[0]
    assert once == pytest.approx(acc.compute()["pixel_auroc"], abs=1e-9)
    assert once == pytest.approx(roc_auc_score(gt.ravel(), m.ravel()), abs=1e-3)


def test_interval_width_shrinks_with_more_test_images_and_covers_the_estimate() -> None:
    rng = np.random.default_rng(0)

    def width(n: int) -> float:
        y = np.array([0] * n + [1] * n)
        s = rng.normal(0, 1, 2 * n) + 0.8 * y
        lo, hi = M.percentile_interval(M.bootstrap_image_auroc(y, s, M.stratified_draws(y, 1000, 0)))
        assert lo <= M.image_auroc(y, s) <= hi
        return hi - lo

    small, large = width(16), width(400)
    assert large < small / 3  # about 1 / sqrt(n): 5x narrower at 25x the images
    assert M.percentile_interval([np.nan, np.nan]) != M.percentile_interval([0.5])
    lo, hi = M.percentile_interval(np.arange(1001) / 1000)
    assert (lo, hi) == pytest.approx((0.025, 0.975))


def test_test_intervals_names_every_metric() -> None:
    m, gt = _maps(0.0)
    y = gt.reshape(len(gt), -1).any(1).astype(int)
    iou = np.where(y == 1, np.linspace(0.1, 0.4, len(y)), np.nan)
    out = L.test_intervals(y, m.mean((1, 2)), iou, m, gt, None, covering_edges(np.array([0.0, 1.0]), m))
    assert set(out) == {f"{k}_ci_{e}" for k in M.CI_METRICS for e in ("lo", "hi")}
    assert 0.1 <= out["iou_ci_lo"] <= out["iou_ci_hi"] <= 0.4
    nomask = L.test_intervals(y, m.mean((1, 2)), iou, m, None, None, None)
    assert np.isnan(nomask["pixel_auroc_ci_lo"]) and not np.isnan(nomask["image_auroc_ci_lo"])
