"""Evaluator: label-free calibration (no test label reaches it), metrics contract, gating, saving, paper values."""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from avaga_lib import evaluate as E
from avaga_lib.config import RunConfig, make_config
from avaga_lib.data import ImageRecord, generate_dataset, make_splits
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
    cal = E.fit_calibration([2.0, 3.0, 4.0])
    s = cal.normalize_scores([2.0, 4.0, 5.0, 100.0, 0.0])
    np.testing.assert_allclose(s, [0.0, 0.5, 0.75, 1.0, 0.0])
    assert (s > 0.5).tolist() == [False, False, True, True, False]  # anomalous = above every normal val score
    assert E.Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    with pytest.raises(ValueError, match="validation"):
        E.fit_calibration([])
    np.testing.assert_allclose(E.transductive_scores([1.0, 3.0, 2.0]), [0.0, 1.0, 0.5])


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


def test_train_evaluate_save_writes_run_folder(tiny_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_root, tmp_path, method="ae_ssim")
    tr, ev, run_dir = E.train_and_evaluate(cfg, progress=False)
    for name in ("config.json", "metrics.json", "predictions.csv", "losses.csv", "calibration.json", "splits.json",
                 "checkpoint.pt", "fig_losses.png", "fig_scores.png", "fig_qualitative.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert CONTRACT_KEYS <= set(metrics)
    assert metrics["image_auroc_classifier"] is None  # NaN -> null
    assert "transductive" in metrics["transductive_flag"]
    conf = RunConfig.load(run_dir / "config.json")  # loadable: every choice, fallbacks as notes
    assert conf.method == "ae_ssim" and any(n.startswith("pretrained_source=") for n in conf.notes)
    assert E.load_calibration(run_dir) == ev.calibration


def test_mask_less_dataset_reports_pixel_metrics_unavailable(tiny_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "nomask"
    shutil.copytree(tiny_root, root)
    shutil.rmtree(root / "weave" / "ground_truth")
    cfg = _cfg(root, tmp_path, method="ae_l2")
    with pytest.warns(UserWarning, match="ground_truth"):
        splits = make_splits(cfg.data, "unsupervised")
    ev = E.evaluate_run(cfg, _untrained(cfg), splits)
    E.save_run(cfg, None, ev, figures=False)
    metrics = json.loads((cfg.run_dir / "metrics.json").read_text())
    assert metrics["pixel_metrics_available"] is False
    assert metrics["iou"] is None and metrics["pixel_auroc"] is None and metrics["aupro"] is None
    assert metrics["mean_accuracy"] is not None


def test_paper_values() -> None:
    assert E.paper_value("table2_mvtec_iou", "bottle", "AVAGA-R_u") == pytest.approx(0.33)
    assert E.paper_value("table3_mvtec_accuracy.csv", "bottle", "AE_L2") == pytest.approx(0.80)
    assert math.isnan(E.paper_value("table2_mvtec_iou", "weave", "AVAGA-R_u"))
    cfg = make_config("smoke", {"data.dataset": "mvtec", "data.category": "bottle"})
    table = E.paper_comparison(cfg, {"iou": 0.1, "mean_accuracy": 0.5})
    assert table.loc["iou", "paper"] == pytest.approx(0.33) and table.loc["iou", "ours"] == 0.1
    assert math.isnan(table.loc["aupro", "paper"])
    assert E.paper_comparison(make_config("smoke"), {})["paper"].isna().all()
    row = E.metrics_row(cfg, {"iou": 0.1, "mean_accuracy": 0.5, "image_auroc_classifier": float("nan")})
    assert len(row) == 1 and row["iou (paper)"].iloc[0] == pytest.approx(0.33) and row["iou"].iloc[0] == 0.1
    assert "image_auroc_classifier" not in row.columns  # unsupervised run: no classifier column
    assert math.isnan(E.metrics_row(make_config("smoke"), {})["mean_accuracy (paper)"].iloc[0])  # embedded: n/a


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
