"""Threshold study (notebook 06): IoU- and accuracy-vs-threshold curves of a trained run, under the attention
normalisations of PROTOCOL_NOTES 2 and the score normalisations of PROTOCOL_NOTES 8.

The normalisation changes only how Grad-CAM becomes a map (PN 2), so one trained model serves every option: the
test and validation images are re-inferred through :func:`avaga_lib.evaluation.evaluate.infer_dataset` (the evaluator's
own inference loop) with ``model.attention_norm`` replaced.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from avaga_lib.config import RunConfig
from avaga_lib.data import AnomalyDataset, Splits, make_splits
from avaga_lib.evaluation import metrics as M
from avaga_lib.evaluation.calibration import Calibration, fit_calibration, load_calibration, transductive_scores
from avaga_lib.evaluation.evaluate import infer_dataset
from avaga_lib.models.networks import load_trained
from avaga_lib.models.registry import method_of
from avaga_lib.run_folder import RunFolder

ATTENTION_NORMS: tuple[str, ...] = ("sigmoid", "minmax", "max")  # PN 2 options (relu_sigmoid = literal reading)


@dataclass
class ThresholdStudy:
    """IoU-vs-threshold and accuracy-vs-threshold of one trained run.

    Attributes:
        curves: one row per (norm, threshold): ``iou`` (mean over anomalous test images), ``acc_validation``
            (mean accuracy, scores calibrated on normal validation images, PN 8), ``acc_transductive`` (scores
            min-maxed over the unlabeled test scores, flagged), ``fp_area`` (share of normal-image pixels flagged).
        examples: ``image`` uint8 (K,3,H,W), ``gt`` uint8 (K,H,W), ``maps`` {norm: float (K,H,W)}, ``defect``.
        setting: the run's setting name; ``method``: avaga / ae_l2 / ae_ssim.
    """

    curves: pd.DataFrame
    examples: dict[str, Any]
    setting: str
    method: str


def _capped(splits: Splits, max_images: int | None) -> Splits:
    """At most ``max_images`` test images: half normal, half anomalous, in split order (None = all)."""
    if max_images is None:
        return splits
    normal = [r for r in splits.test if r.label == 0][: max_images // 2]
    bad = [r for r in splits.test if r.label == 1][: max_images - len(normal)]
    return dataclasses.replace(splits, test=normal + bad)


def _curve_rows(norm: str, thresholds: Sequence[float], test_maps: np.ndarray, scores01: np.ndarray,
                trans01: np.ndarray, labels: np.ndarray, masks: np.ndarray, has_masks: bool,
                valid: np.ndarray) -> list[dict[str, Any]]:
    """One row per threshold of one normalisation: IoU, accuracies (validation / transductive), FP area (of the
    ``valid`` pixels: letterbox padding never counts)."""
    iou = M.iou_threshold_curve(test_maps, masks, thresholds, labels, valid=valid) if has_masks else {}
    acc_v = M.accuracy_threshold_curve(scores01, labels, thresholds)
    acc_t = M.accuracy_threshold_curve(trans01, labels, thresholds)
    normal, normal_valid = test_maps[labels == 0], valid[labels == 0]
    return [{"norm": norm, "threshold": float(t), "iou": iou.get(float(t), math.nan),
             "acc_validation": acc_v[float(t)], "acc_transductive": acc_t[float(t)],
             "fp_area": float((normal > t)[normal_valid].mean()) if len(normal) else math.nan} for t in thresholds]


def _scores(cfg: RunConfig, model: torch.nn.Module, ds: AnomalyDataset, calibration: Calibration | None,
            device: torch.device, batch_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Maps and detection scores of ``ds`` (the weak classifier's probability where there is one, else raw)."""
    inf = infer_dataset(cfg, model, ds, calibration, device, batch_size)
    assert inf.maps is not None
    return inf.maps, (inf.prob if inf.prob is not None else inf.score_raw)


def threshold_study(
    run_dir: Path | str,
    norms: Sequence[str] = ATTENTION_NORMS,
    thresholds: Sequence[float] | None = None,
    device: str = "cpu",
    n_examples: int = 6,
    batch_size: int | None = None,
    max_images: int | None = None,
) -> ThresholdStudy:
    """Re-infer a trained run's test split under each attention normalization and sweep the threshold.

    Baselines have no attention: their calibrated residual map is the single option (``norm = "calibrated"``).

    Args:
        run_dir: a finished run folder (config.json + checkpoint.pt). norms: attention normalizations to compare (PN 2).
        thresholds: sweep (default 0.05 ... 0.95). device: where to infer. n_examples: anomalous test images kept for
        the interactive mask view. batch_size: inference batch; None = the evaluator's for the device
        (``evaluate.eval_batch_size``: 16 on
            CPU, 128 on CUDA).
        max_images: cap on test images (half normal, half anomalous, in split order) for a quick look; None = all.

    Raises:
        FileNotFoundError: the run folder lacks config.json / checkpoint.pt (named).
    """
    thresholds = list(thresholds) if thresholds is not None else [round(t, 2) for t in np.arange(0.05, 1.0, 0.05)]
    cfg, model = load_trained(run_dir, device)
    splits = _capped(make_splits(cfg.data, cfg.train.setting), max_images)
    test = AnomalyDataset(splits.test, cfg.data.image_size, train=False, has_masks=splits.has_masks,
                          geometry=cfg.data.geometry)
    val = AnomalyDataset(splits.val, cfg.data.image_size, train=False, has_masks=False, geometry=cfg.data.geometry)
    labels, masks, valid = test.labels.numpy(), test.masks[:, 0].numpy(), test.valid[:, 0].numpy()
    method = method_of(cfg.method)
    calibration = None if method.has_attention else load_calibration(run_dir)
    anomalous = np.flatnonzero(labels == 1)[:n_examples]
    examples: dict[str, Any] = {"image": test.images[anomalous].numpy(), "gt": masks[anomalous],
                                "defect": [test.defects[i] for i in anomalous], "maps": {}}
    rows: list[dict[str, Any]] = []
    dev = torch.device(device)
    for norm in list(norms) if method.has_attention else ["calibrated"]:
        run_cfg = cfg if norm == "calibrated" else dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, attention_norm=norm))
        test_maps, test_raw = _scores(run_cfg, model, test, calibration, dev, batch_size)
        _, val_raw = _scores(run_cfg, model, val, calibration, dev, batch_size)
        if method.classifies(cfg.train.setting):
            scores01 = test_raw  # the classifier's probability is already in [0, 1] (PN 4)
        else:
            scores01 = fit_calibration(val_raw, image_quantile=cfg.eval.image_val_quantile).normalize_scores(test_raw)
        rows += _curve_rows(norm, thresholds, test_maps, scores01, transductive_scores(test_raw), labels, masks,
                            splits.has_masks, valid)
        examples["maps"][norm] = test_maps[anomalous]
    return ThresholdStudy(pd.DataFrame(rows), examples, cfg.run_id, cfg.method)


def missing_weights(run_dirs: Sequence[Path | str]) -> list[str]:
    """Run folders among ``run_dirs`` whose ``checkpoint.pt`` is absent, so :func:`threshold_study` cannot re-infer
    them: runs trained on another machine (``python -m benchmarks.gpu_study --plan ...`` brings back every result
    but not the 100-350 MB of weights). Returned as strings, for the notebook to name them."""
    return [str(d) for d in run_dirs if not RunFolder(d).checkpoint_path.is_file()]


__all__ = ["ATTENTION_NORMS", "ThresholdStudy", "missing_weights", "threshold_study"]
