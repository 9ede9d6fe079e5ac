"""Threshold study (notebook 06): curves re-inferred from a trained run under each attention normalisation agree
with the run's own evaluation at the same normalisation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from avaga_lib.config import make_config
from avaga_lib.data import generate_dataset
from avaga_lib.evaluation import metrics as M
from avaga_lib.evaluation.threshold import ATTENTION_NORMS, ThresholdStudy, missing_weights, threshold_study
from avaga_lib.training.run import load_maps, run_one


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("thr")
    root = generate_dataset(base / "embedded", categories=["weave"], n_train=6, n_test_good=4, n_test_bad=4, size=64)
    cfg = make_config("smoke", {"data.root": str(root), "data.category": "weave", "data.image_size": 64,
                                "data.val_fraction": 0.2, "model.pretrained": "none", "model.latent_channels": 32,
                                "train.batch_size": 4, "train.epochs": 1, "results_dir": str(base / "results")})
    return run_one(cfg, figures=False)


def test_threshold_study_curves_match_the_evaluation(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    thresholds = [float(t) for t in metrics["iou_at"]]
    study = threshold_study(run_dir, norms=("sigmoid", "minmax"), thresholds=thresholds, n_examples=2)
    assert isinstance(study, ThresholdStudy) and study.method == "avaga" and "sigmoid" in ATTENTION_NORMS
    c = study.curves
    assert list(c.columns) == ["norm", "threshold", "iou", "acc_validation", "acc_transductive", "fp_area"]
    assert len(c) == 2 * len(thresholds) and set(study.examples["maps"]) == {"sigmoid", "minmax"}
    assert study.examples["maps"]["sigmoid"].shape == (2, 64, 64) and len(study.examples["defect"]) == 2
    ours = c[c.norm == "sigmoid"].set_index("threshold")  # the run trained and was evaluated with sigmoid
    for t in thresholds:
        want, got = metrics["iou_at"][f"{t:g}"], ours.loc[t, "iou"]
        assert got == pytest.approx(want, abs=1e-12) if want is not None else math.isnan(got)
    thr = metrics["threshold"]
    assert ours.loc[thr, "acc_validation"] == metrics["mean_accuracy"]  # same validation calibration (PN 8)
    assert ours.loc[thr, "acc_transductive"] == metrics["mean_accuracy_transductive"]
    saved = load_maps(run_dir)  # the curves threshold the attention map itself (the paper's rule, iou_at)
    y = pd.read_csv(run_dir / "predictions.csv")["label"].to_numpy()
    assert ours.loc[thr, "fp_area"] == pytest.approx(M.fp_area((saved["raw_maps"] > thr)[y == 0]), abs=1e-12)


def test_threshold_study_caps_images(run_dir: Path) -> None:
    study = threshold_study(run_dir, norms=("max",), thresholds=[0.5], max_images=4, n_examples=1)
    assert len(study.curves) == 1 and study.examples["image"].shape[0] == 1


def test_runs_without_weights_are_named_not_reinferred(run_dir: Path, tmp_path: Path) -> None:
    """A run folder brought back from another machine (results and config, no checkpoint.pt) is named by
    missing_weights, so notebook 06 says why it has no curves; threshold_study itself names the missing file."""
    elsewhere = tmp_path / "AVAGA-R_u-seed0"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text((run_dir / "config.json").read_text())
    assert missing_weights([run_dir, elsewhere]) == [str(elsewhere)]
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        threshold_study(elsewhere)
