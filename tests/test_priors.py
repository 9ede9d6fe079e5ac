"""Position priors (avaga_lib.evaluation.priors) and the scoring of every map on equal terms
(avaga_lib.evaluation.localization)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from avaga_lib.evaluation import localization as L
from avaga_lib.evaluation.priors import MeanMap, center_gaussian


def test_center_gaussian_is_centred_with_sigma_a_quarter_of_the_side() -> None:
    g = center_gaussian(33, 33)
    assert g.dtype == np.float32 and g.shape == (33, 33)
    assert g[16, 16] == 1.0 and g.argmax() == 16 * 33 + 16
    assert g[16, 16 + 8] == pytest.approx(math.exp(-0.5 * (8 / 8.25) ** 2), rel=1e-6)  # sigma = 33 / 4
    np.testing.assert_array_equal(g, g[::-1, ::-1])  # symmetric about the centre
    np.testing.assert_array_equal(g, g.T)
    with pytest.raises(ValueError, match="sigma_fraction"):
        center_gaussian(8, 8, 0.0)


def test_mean_map_averages_valid_pixels_only() -> None:
    mm = MeanMap()
    with pytest.raises(ValueError, match="no validation map"):
        mm.result()
    maps = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 3.0)])
    valid = np.ones((2, 4, 4), bool)
    valid[1, :, 0] = False  # letterbox padding of the second image: left out
    mm.update(maps[:1], valid[:1])
    mm.update(maps[1:], valid[1:])
    out = mm.result()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], 1.0)
    np.testing.assert_array_equal(out[:, 1:], 2.0)
    with pytest.raises(ValueError, match="differ in shape"):
        mm.update(maps, valid[:, :2])


def _squeezed(rng: np.random.Generator, shape: tuple[int, ...], mask: np.ndarray) -> np.ndarray:
    return 0.01 * np.where(mask, rng.beta(3.0, 4.0, shape), rng.beta(2.0, 5.0, shape)).astype(np.float32)


def test_every_map_and_prior_scored_alike_from_validation_only() -> None:
    rng = np.random.default_rng(0)
    side, n_val, n_test = 32, 4, 8
    vm = L.ValidationMaps(stride=1)
    no = np.zeros((n_val, side, side), bool)
    vm.update({"map": _squeezed(rng, no.shape, no), "recon": rng.random(no.shape).astype(np.float32) * 0.1}, ~no)
    refs = vm.references(bins=1000, quantile=0.99, uppers={"map": 1.0, "recon": 1.0})
    assert set(refs) == set(L.SCORED)
    assert refs["map"].threshold == pytest.approx(np.quantile(vm.samples("map"), 0.99))
    gt = np.zeros((n_test, side, side), bool)
    gt[4:, 2:10, 3:12] = True  # defects in a corner: the centred prior must not find them
    labels = (gt.reshape(n_test, -1).any(1)).astype(int)
    maps, recon = _squeezed(rng, gt.shape, gt), rng.random(gt.shape).astype(np.float32) * 0.1
    sc = L.LocalizationScorer(refs, max_fpr=0.3)
    out = sc.compute({"map": maps, "recon": recon, **vm.priors(side, side)}, gt, labels, np.ones(n_test, bool), None)
    assert out["pixel_auroc"] == roc_auc_score(gt.ravel(), maps.ravel())  # exact, not binned
    center = np.broadcast_to(center_gaussian(side, side), gt.shape)
    assert out["prior_center_pixel_auroc"] == pytest.approx(roc_auc_score(gt.ravel(), center.ravel()), abs=1e-12)
    assert out["prior_center_pixel_auroc"] < 0.5
    assert out["pixel_auroc_recon"] == pytest.approx(0.5, abs=0.05)  # noise: no signal
    for key in ("aupro_recon", "prior_mean_pixel_auroc", "prior_center_aupro", "iou_recon", "prior_center_iou",
                "iou_best_threshold_oracle"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["val_quantile"] == 0.99 and "TEST masks" in out["oracle_flag"]
    for name in refs:  # AUPRO's bins cover every test value of every map
        m = np.broadcast_to({"map": maps, "recon": recon, **vm.priors(side, side)}[name], gt.shape)
        assert sc.edges[name][0] <= m.min() and m.max() < sc.edges[name][-1], name
    with pytest.raises(ValueError, match="val_quantile"):
        L.map_reference(vm.samples("map"), 1000, 1.0, 1.0)
