"""Evaluator: label-free calibration (no test label reaches it), metrics contract, gating, saving, and metrics.json
recomputed from predictions.csv + the saved maps with the metrics functions."""

from __future__ import annotations

import json
import math
import random
import shutil
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from avaga_lib import calibration as C
from avaga_lib import evaluate as E
from avaga_lib import localization as L
from avaga_lib import metrics as M
from avaga_lib.config import make_config
from avaga_lib.data import ImageRecord, generate_dataset, make_splits
from avaga_lib.io import read_json
from avaga_lib.pixel_metrics import PixelMetricAccumulator
from avaga_lib.priors import center_gaussian
from avaga_lib.run import load_maps, save_run
from avaga_lib.runtime import seed_everything
from avaga_lib.train import build_networks, train_run

CONTRACT_KEYS = {
    "iou", "iou_pooled", "mean_accuracy", "image_auroc", "image_auroc_classifier", "pixel_auroc", "aupro",
    "fp_area_normal", "mean_accuracy_transductive", "iou_at", "n_test", "n_anomalous", "wall_time_s",
    "pixel_metrics_available",
}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("emb")
    return generate_dataset(root / "embedded", categories=["weave"], n_train=6, n_test_good=4, n_test_bad=4, size=64)


def _cfg(root: Path, results: Path, **over: object):
    base = {"data.root": str(root), "data.category": "weave", "data.image_size": 64, "data.val_fraction": 0.2,
            "model.pretrained": "none", "model.latent_channels": 32, "train.batch_size": 4, "train.epochs": 1,
            "results_dir": str(results)}
    base.update(over)
    return make_config("smoke", base)


def _untrained(cfg):
    seed_everything(0)
    model, _, _ = build_networks(cfg)
    return model.eval()


def test_calibration_maps_validation_max_to_threshold() -> None:
    cal = C.fit_calibration([2.0, 3.0, 4.0])
    s = cal.normalize_scores([2.0, 4.0, 5.0, 100.0, 0.0])
    np.testing.assert_allclose(s, [0.0, 0.5, 0.75, 1.0, 0.0])
    assert (s > 0.5).tolist() == [False, False, True, True, False]  # anomalous = above every normal val score
    assert C.Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    with pytest.raises(ValueError, match="validation"):
        C.fit_calibration([])
    np.testing.assert_allclose(C.transductive_scores([1.0, 3.0, 2.0]), [0.0, 1.0, 0.5])


def test_shuffled_test_labels_change_no_threshold_or_score(tiny_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_root, tmp_path, method="ae_l2")
    splits = make_splits(cfg.data, "unsupervised")
    model = _untrained(cfg)
    a = E.evaluate_run(cfg, model, splits)
    labels = [r.label for r in splits.test]
    random.Random(0).shuffle(labels)
    shuffled = replace(splits, test=[ImageRecord(r.path, lab, "x", r.mask_path) for r, lab in zip(splits.test, labels)])
    b = E.evaluate_run(cfg, model, shuffled)
    assert a.calibration == b.calibration  # the threshold/normalisation never sees a test label
    for key in ("pixel_edges", "edges_recon", "edges_prior_mean", "prior_mean", "val_quantile_thresholds"):
        np.testing.assert_array_equal(a.maps[key], b.maps[key])  # nor do the bin edges, priors, pixel thresholds
    np.testing.assert_array_equal(a.predictions["score"], b.predictions["score"])
    np.testing.assert_array_equal(a.predictions["pred_label"], b.predictions["pred_label"])
    with pytest.raises(ValueError, match="normal images only"):
        E.calibrate(cfg, model, [r for r in splits.test if r.label == 1], torch.device("cpu"))


def test_avaga_unsupervised_metrics_contract(tiny_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_root, tmp_path)
    splits = make_splits(cfg.data, "unsupervised")
    ev = E.evaluate_run(cfg, _untrained(cfg), splits)
    assert CONTRACT_KEYS - {"wall_time_s"} <= set(ev.metrics)
    m = ev.metrics
    assert m["n_test"] == len(splits.test) == len(ev.predictions)
    assert m["pixel_metrics_available"] is True
    assert 0.0 <= m["pixel_auroc"] <= 1.0 and 0.0 <= m["aupro"] <= 1.0
    assert set(m["iou_at"]) == {"0.2", "0.3", "0.4", "0.5", "0.6"}
    assert math.isclose(m["iou_at"]["0.5"], m["iou"], rel_tol=1e-12) or (math.isnan(m["iou"]))
    assert math.isnan(m["image_auroc_classifier"])
    p = ev.predictions
    assert p["score"].between(0, 1).all() and set(p["pred_label"]) <= {0, 1}
    assert p.loc[p.label == 0, "iou"].isna().all() and p.loc[p.label == 1, "fp_area"].isna().all()
    assert ev.examples["map"].dtype == np.uint8 and len(ev.examples["defect"]) <= 2 * 5


def test_weak_maps_gated_by_classifier(tiny_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_root, tmp_path, **{"train.setting": "weak"})
    splits = make_splits(cfg.data, "weak")
    assert len(splits.weak) == 1 and all(r.path != splits.weak[0].path for r in splits.test)
    ev = E.evaluate_run(cfg, _untrained(cfg), splits)
    p = ev.predictions
    assert "prob_anomalous" in p.columns and "mean_accuracy_score" in ev.metrics
    assert (p["pred_label"] == (p["prob_anomalous"] > 0.5)).all()  # the classifier decides (PN 4)
    called_normal = p["pred_label"] == 0
    assert (p.loc[called_normal & (p.label == 0), "fp_area"] == 0).all()  # empty mask when called normal
    assert (p.loc[called_normal & (p.label == 1), "iou"].fillna(0) == 0).all()
    assert 0.0 <= ev.metrics["image_auroc_classifier"] <= 1.0


def test_mask_less_dataset_reports_pixel_metrics_unavailable(tiny_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "nomask"
    shutil.copytree(tiny_root, root)
    shutil.rmtree(root / "weave" / "ground_truth")
    cfg = _cfg(root, tmp_path, method="ae_l2")
    with pytest.warns(UserWarning, match="ground_truth"):
        splits = make_splits(cfg.data, "unsupervised")
    ev = E.evaluate_run(cfg, _untrained(cfg), splits)
    save_run(cfg, None, ev, figures=False)
    metrics = json.loads((cfg.run_dir / "metrics.json").read_text())
    assert metrics["pixel_metrics_available"] is False
    assert metrics["iou"] is None and metrics["pixel_auroc"] is None and metrics["aupro"] is None
    assert metrics["mean_accuracy"] is not None


def test_same_seed_same_metrics(tiny_root: Path, tmp_path: Path) -> None:
    runs = []
    for i in range(2):
        cfg = _cfg(tiny_root, tmp_path / str(i), method="ae_l2", **{"train.epochs": 2})
        splits = make_splits(cfg.data, "unsupervised")
        tr = train_run(cfg, splits, progress=False)
        runs.append(E.evaluate_run(cfg, tr.model, splits))
    a, b = (r.metrics for r in runs)
    for k in ("iou", "mean_accuracy", "image_auroc", "pixel_auroc", "aupro", "fp_area_normal"):
        assert a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])), k
    np.testing.assert_array_equal(runs[0].predictions["score_raw"], runs[1].predictions["score_raw"])


def _null(v: float) -> float | None:
    return None if isinstance(v, float) and math.isnan(v) else v


def _recomputed(cfg: Any, p: pd.DataFrame, maps: dict[str, np.ndarray], thresholds: list[float]) -> dict[str, Any]:
    """metrics.json from predictions.csv + maps/test_maps.npz, with metrics.py only (no evaluate code)."""
    y, thr = p["label"].to_numpy(), cfg.eval.threshold
    weak = "prob_anomalous" in p
    gate = p["pred_label"].to_numpy() == 1 if weak else np.ones(len(y), dtype=bool)  # the classifier gates (PN 4)
    pred = M.binarize(maps["maps"], thr) & gate[:, None, None]
    gt = maps["gt"]
    if "pixel_edges" in maps:
        acc = PixelMetricAccumulator(edges=maps["pixel_edges"], max_fpr=cfg.eval.aupro_max_fpr)
    else:
        acc = PixelMetricAccumulator(cfg.eval.pixel_bins, cfg.eval.aupro_max_fpr, (0.0, 1.0))
    acc.update(maps.get("raw_maps", maps["maps"]), gt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {"iou": M.mean_iou(pred, gt, y), "iou_pooled": M.pooled_iou(pred, gt, y),
               "mean_accuracy": M.mean_class_accuracy(y, p["pred_label"]),
               "image_auroc": M.image_auroc(y, p["score_raw"]), "fp_area_normal": M.fp_area(pred[y == 0]),
               "mean_accuracy_transductive": M.mean_class_accuracy(y, M.binarize(p["score_transductive"], thr)),
               "iou_at": {f"{t:g}": v for t, v in M.iou_threshold_curve(maps["maps"], gt, thresholds, y, gate).items()},
               **acc.compute()}
        if weak:
            out["image_auroc_classifier"] = M.image_auroc(y, p["prob_anomalous"])
            out["mean_accuracy_score"] = M.mean_class_accuracy(y, M.binarize(p["score"], thr))
        out |= _recomputed_localization(cfg, maps, y, gate)
    np.testing.assert_array_equal(p["iou"], np.where(y == 1, M.iou_per_image(pred, gt), np.nan))
    fp = np.where(y == 0, M.fp_area_per_image(pred), np.nan).astype(np.float32)  # a float32 column
    np.testing.assert_array_equal(p["fp_area"].to_numpy(np.float32), fp)
    return out


def _recomputed_localization(cfg: Any, maps: dict[str, np.ndarray], y: np.ndarray, gate: np.ndarray) -> dict[str, Any]:
    """Issue 13's keys from the saved maps: the reconstruction-error map and the priors scored like the run's map,
    with the saved validation edges and label-free thresholds; the oracle from the test masks."""
    gt = maps["gt"]
    thr = dict(zip(L.SCORED, maps["val_quantile_thresholds"].tolist()))
    scored = {"map": maps.get("raw_maps", maps["maps"]), "recon": maps["recon_maps"],
              **{n: np.broadcast_to(maps[n], gt.shape) for n in ("prior_center", "prior_mean")}}
    every = np.ones(len(y), dtype=bool)
    out = {"iou_val_quantile": M.mean_iou((scored["map"] > thr["map"]) & gate[:, None, None], gt, y),
           "fp_area_normal_val_quantile": M.fp_area(((scored["map"] > thr["map"]) & gate[:, None, None])[y == 0]),
           "iou_best_threshold_oracle": M.oracle_best_iou(scored["map"], gt, y, gate)[0],
           "iou_val_quantile_recon": M.mean_iou(scored["recon"] > thr["recon"], gt, y),
           "fp_area_normal_val_quantile_recon": M.fp_area((scored["recon"] > thr["recon"])[y == 0]),
           "iou_best_threshold_oracle_recon": M.oracle_best_iou(scored["recon"], gt, y, every)[0]}
    for name, pre, post in (("recon", "", "_recon"), ("prior_center", "prior_center_", ""),
                            ("prior_mean", "prior_mean_", "")):
        acc = PixelMetricAccumulator(edges=maps[f"edges_{name}"], max_fpr=cfg.eval.aupro_max_fpr)
        acc.update(scored[name], gt)
        r = acc.compute()
        out[f"{pre}pixel_auroc{post}"], out[f"{pre}aupro{post}"] = r["pixel_auroc"], r["aupro"]
        if name != "recon":
            out[f"{pre}iou_val_quantile"] = M.mean_iou(scored[name] > thr[name], gt, y)
    np.testing.assert_array_equal(maps["prior_center"], center_gaussian(*gt.shape[1:]))
    return out


@pytest.mark.parametrize("over", [{}, {"train.setting": "weak"}, {"method": "ae_l2"}], ids=["avaga_u", "avaga_w", "ae"])
def test_metrics_json_equals_metrics_functions_on_saved_files(tiny_root: Path, tmp_path: Path,
                                                             over: dict[str, Any]) -> None:
    cfg = _cfg(tiny_root, tmp_path, **over)
    splits = make_splits(cfg.data, cfg.train.setting)
    run_dir = save_run(cfg, None, E.evaluate_run(cfg, _untrained(cfg), splits), figures=False)
    metrics = read_json(run_dir / "metrics.json")
    maps = load_maps(run_dir)
    assert maps["maps"].dtype == np.float32 and maps["gt"].dtype == bool and len(maps["maps"]) == metrics["n_test"]
    assert ("raw_maps" in maps) == (cfg.method != "avaga")
    thresholds = [float(t) for t in metrics["iou_at"]]
    expected = _recomputed(cfg, pd.read_csv(run_dir / "predictions.csv"), maps, thresholds)
    assert expected.keys() <= metrics.keys()
    for key, value in expected.items():
        want = {k: _null(v) for k, v in value.items()} if key == "iou_at" else _null(value)
        assert metrics[key] == want, key  # exactly equal, not approximately
    assert metrics["pixel_auroc"] is not None and metrics["mean_accuracy"] is not None
    assert metrics["pixel_auroc_recon"] is not None and metrics["prior_center_pixel_auroc"] is not None
