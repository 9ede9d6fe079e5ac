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

from avaga_lib.config import make_config
from avaga_lib.data import ImageRecord, generate_dataset, make_splits
from avaga_lib.evaluation import calibration as C
from avaga_lib.evaluation import evaluate as E
from avaga_lib.evaluation import localization as L
from avaga_lib.evaluation import metrics as M
from avaga_lib.evaluation.pixel_metrics import PixelMetricAccumulator, exact_pixel_auroc
from avaga_lib.evaluation.priors import center_gaussian
from avaga_lib.io import read_json
from avaga_lib.models.networks import build_networks
from avaga_lib.runtime import seed_everything
from avaga_lib.training.run import load_maps, save_run
from avaga_lib.training.train import train_run

CONTRACT_KEYS = {
    "iou", "iou_pooled", "mean_accuracy", "image_auroc", "image_auroc_classifier", "pixel_auroc", "aupro",
    "fp_area_normal", "mean_accuracy_transductive", "iou_at", "n_test", "n_anomalous", "wall_time_s",
    "pixel_metrics_available", "iou_literal", "iou_grid_cap", "image_auroc_ci_lo", "image_auroc_ci_hi",
    "pixel_auroc_ci_lo", "pixel_auroc_ci_hi", "iou_ci_lo", "iou_ci_hi",
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


def test_calibration_places_the_validation_quantiles_at_half() -> None:
    scores = np.arange(1.0, 21.0)  # 20 normal validation scores 1..20
    cal = C.fit_calibration(scores, np.linspace(0.0, 1.0, 101), image_quantile=0.95, pixel_quantile=0.99)
    assert cal.score_threshold == pytest.approx(np.quantile(scores, 0.95))
    assert cal.pixel_threshold == pytest.approx(0.99)
    s = cal.normalize_scores([1.0, cal.score_threshold, 20.0, 100.0, 0.0])
    np.testing.assert_allclose(s[:2], [0.0, 0.5])
    assert (s > 0.5).tolist() == [False, False, True, True, False]  # anomalous = above the 0.95 quantile
    m = cal.normalize_maps(torch.tensor([0.0, 0.5, 0.99, 0.995, 3.0]))
    assert (m > 0.5).tolist() == [False, False, False, True, True]  # the same rule for maps: above the 0.99 quantile
    assert C.Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    with pytest.raises(ValueError, match="validation"):
        C.fit_calibration([])
    with pytest.raises(ValueError, match="image_quantile"):
        C.fit_calibration([1.0], image_quantile=0.0)
    np.testing.assert_allclose(C.transductive_scores([1.0, 3.0, 2.0]), [0.0, 1.0, 0.5])


@pytest.mark.parametrize("kind", ["saturated_attention", "remedy_attention", "l2_residual", "one_minus_ssim"])
def test_quantile_rule_flags_one_percent_of_normal_pixels_whatever_the_range(kind: str) -> None:
    rng = np.random.default_rng(0)
    normal = {"saturated_attention": 1e-3 * rng.random(200_000),  # 1 - A of a collapsed sigmoid: ~0 everywhere
              "remedy_attention": rng.beta(2, 5, 200_000),  # a max-normalised map spread over [0, 1]
              "l2_residual": 1e-3 * rng.chisquare(2, 200_000),  # squared residuals around 1e-3
              "one_minus_ssim": 2 * rng.beta(1, 8, 200_000)}[kind]  # 1 - SSIM in [0, 2]
    cal = C.fit_calibration([0.0, 1.0], normal[:100_000], pixel_quantile=0.99)
    flagged = cal.normalize_maps(torch.from_numpy(normal[100_000:])) > 0.5  # fresh normal pixels, same law
    assert float(flagged.float().mean()) == pytest.approx(0.01, abs=0.002)


def test_calibration_reads_files_written_before_issue_20() -> None:
    old = C.Calibration.from_dict({"score_lo": 2.0, "score_hi": 4.0, "map_scale": 0.3, "n_val": 3,
                                   "source": "validation"})
    assert old.score_threshold == 4.0 and old.pixel_threshold == 0.3  # the largest validation value at 0.5
    np.testing.assert_allclose(old.normalize_scores([4.0]), [0.5])


@pytest.mark.parametrize("over", [{}, {"model.attention_norm": "max"}, {"method": "ae_l2"}, {"method": "ae_ssim"}],
                         ids=["avaga", "maxnorm", "ae_l2", "ae_ssim"])
def test_every_map_flags_the_stated_share_of_normal_validation_pixels(tiny_root: Path, tmp_path: Path,
                                                                      over: dict[str, Any]) -> None:
    """One rule for every map type (issue 20): its threshold is the 0.99 quantile of its own normal-validation
    pixels, and a calibrated map above 0.5 is exactly a raw map above it."""
    cfg = _cfg(tiny_root, tmp_path, **over)
    splits = make_splits(cfg.data, "unsupervised")
    model = _untrained(cfg)
    cal, _, vm = E.calibrate(cfg, model, list(splits.val), torch.device("cpu"))
    values = vm.samples("map")
    assert cal.pixel_quantile == cfg.eval.val_quantile == 0.99
    assert cal.pixel_threshold == float(np.quantile(values.astype(np.float64), 0.99))
    ds = E.AnomalyDataset(list(splits.val), 64, train=False, has_masks=False)
    inf = E.infer_dataset(cfg, model, ds, cal, torch.device("cpu"))
    np.testing.assert_array_equal(inf.maps > 0.5, inf.raw_maps * (0.5 / cal.pixel_threshold) > 0.5)


def test_inference_batch_is_larger_on_cuda_and_unchanged_on_cpu(tmp_path: Path) -> None:
    """CPU keeps the 16-image batches every committed CPU result was evaluated with; CUDA batches more images per
    launch and per host transfer of the maps (the choice is tested here, no GPU needed)."""
    assert E.eval_batch_size("cpu") == E.eval_batch_size(torch.device("cpu")) == 16
    assert E.eval_batch_size("mps") == 16
    assert E.eval_batch_size("cuda") == E.eval_batch_size(torch.device("cuda", 1)) == 128

    class _Images:  # what infer_dataset reads of a dataset
        images = torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8)

        def __len__(self) -> int:
            return 37

    cfg = _cfg(tmp_path, tmp_path, method="ae_l2", **{"data.image_size": 32})
    sizes: list[int] = []
    inf = E.infer_dataset(cfg, _untrained(cfg), _Images(), None, torch.device("cpu"),  # type: ignore[arg-type]
                          on_batch=lambda sl, _: sizes.append(sl.stop - sl.start))
    assert sizes == [16, 16, 5] and inf.score_raw.shape == (37,)


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
    for key in ("prior_mean", "val_quantile_thresholds"):
        np.testing.assert_array_equal(a.maps[key], b.maps[key])  # nor do the priors, pixel thresholds
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
    assert math.isclose(m["iou_at"]["0.5"], m["iou_literal"], rel_tol=1e-12) or (math.isnan(m["iou_literal"]))
    assert m["map_grid_side"] == 2 and 0.0 <= m["iou_grid_cap"] <= 1.0  # 64 px: a 2x2 attention grid
    for k in ("image_auroc", "pixel_auroc"):
        assert m[f"{k}_ci_lo"] <= m[k] <= m[f"{k}_ci_hi"], k
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
    """metrics.json from predictions.csv + maps/test_maps.npz, with metrics.py / pixel_metrics.py only."""
    y, thr = p["label"].to_numpy(), cfg.eval.threshold
    weak = "prob_anomalous" in p
    gate = p["pred_label"].to_numpy() == 1 if weak else np.ones(len(y), dtype=bool)  # the classifier gates (PN 4)
    pred = M.binarize(maps["maps"], thr) & gate[:, None, None]
    gt = maps["gt"]
    literal = cfg.method == "avaga"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curve = M.iou_threshold_curve(maps["raw_maps"], gt, thresholds, y, gate) if literal else {}
        out = {"iou": M.mean_iou(pred, gt, y), "iou_pooled": M.pooled_iou(pred, gt, y),
               "iou_literal": curve.get(thr, math.nan),
               "mean_accuracy": M.mean_class_accuracy(y, p["pred_label"]),
               "image_auroc": M.image_auroc(y, p["score_raw"]), "fp_area_normal": M.fp_area(pred[y == 0]),
               "mean_accuracy_transductive": M.mean_class_accuracy(y, M.binarize(p["score_transductive"], thr)),
               "iou_at": {f"{t:g}": curve.get(t, math.nan) for t in thresholds}}
        if weak:
            out["image_auroc_classifier"] = M.image_auroc(y, p["prob_anomalous"])
            out["mean_accuracy_score"] = M.mean_class_accuracy(y, M.binarize(p["score"], thr))
        out |= _recomputed_localization(cfg, maps, y, gate)
    np.testing.assert_array_equal(p["iou"], np.where(y == 1, M.iou_per_image(pred, gt), np.nan))
    fp = np.where(y == 0, M.fp_area_per_image(pred), np.nan).astype(np.float32)  # a float32 column
    np.testing.assert_array_equal(p["fp_area"].to_numpy(np.float32), fp)
    return out


def _recomputed_localization(cfg: Any, maps: dict[str, np.ndarray], y: np.ndarray, gate: np.ndarray) -> dict[str, Any]:
    """Every scored map from the saved maps: exact pixel AUROC, AUPRO on the saved edges, IoU at the saved
    label-free threshold; the oracle from the test masks."""
    gt = maps["gt"]
    names = maps["scored"].tolist()
    thr = dict(zip(names, maps["val_quantile_thresholds"].tolist()))
    scored = {n: np.broadcast_to(maps[n], gt.shape) if n.startswith("prior_") else maps[f"{n}_maps"]
              for n in names if n != "map"} | {"map": maps["raw_maps"]}
    every = np.ones(len(y), dtype=bool)
    out = {"iou_best_threshold_oracle": M.oracle_best_iou(scored["map"], gt, y, gate)[0],
           "fp_area_normal_recon": M.fp_area((scored["recon"] > thr["recon"])[y == 0]),
           "iou_best_threshold_oracle_recon": M.oracle_best_iou(scored["recon"], gt, y, every)[0]}
    for name in names:
        key = L.metric_key
        acc = PixelMetricAccumulator(edges=maps[f"edges_{name}"], max_fpr=cfg.eval.aupro_max_fpr)
        acc.update(scored[name], gt)
        out[key(name, "pixel_auroc")] = exact_pixel_auroc(scored[name], gt)
        out[key(name, "aupro")] = acc.compute()["aupro"]
        if name != "map":
            out[key(name, "iou")] = M.mean_iou(scored[name] > thr[name], gt, y)
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
    assert "raw_maps" in maps and maps["raw_maps"].shape == maps["maps"].shape
    thresholds = [float(t) for t in metrics["iou_at"]]
    expected = _recomputed(cfg, pd.read_csv(run_dir / "predictions.csv"), maps, thresholds)
    assert expected.keys() <= metrics.keys()
    for key, value in expected.items():
        want = {k: _null(v) for k, v in value.items()} if key == "iou_at" else _null(value)
        assert metrics[key] == want, key  # exactly equal, not approximately
    assert metrics["pixel_auroc"] is not None and metrics["mean_accuracy"] is not None
    assert metrics["pixel_auroc_recon"] is not None and metrics["prior_center_pixel_auroc"] is not None
