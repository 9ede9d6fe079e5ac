"""Localization scored on equal terms (issue 13): every map of a run, and the position priors, judged the same way.

For one run the evaluator scores four maps on the same test pixels with the same functions:

* ``map``: the run's own anomaly map (AVAGA: 1 - A or A^{c_a}; baselines: the raw residual map), the headline;
* ``recon``: the reconstruction-error map |x - x_hat| averaged over channels (AVAGA's detection score is its mean);
* ``prior_center`` / ``prior_mean``: the position priors of :mod:`avaga_lib.priors` (a centred Gaussian, the mean
  ``map`` of the normal validation images).

Everything label-free comes from the **normal validation images** (:class:`ValidationMaps`): each map's bin edges
(:func:`avaga_lib.pixel_metrics.validation_edges`, so no map is scored on ties) and its label-free pixel threshold,
the ``eval.val_quantile`` quantile of its normal validation pixels (docs/PROTOCOL.md, "Label-free pixel threshold").
:func:`metrics_from_maps` computes the headline keys of ``metrics.json`` (PN 9-11). The test masks are read only
to *score* (pixel AUROC, AUPRO, IoU) and, flagged, for the oracle IoU at the best
threshold (:func:`avaga_lib.metrics.oracle_best_iou`), which no decision uses.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from avaga_lib import metrics as M
from avaga_lib.pixel_metrics import PixelMetricAccumulator, validation_edges
from avaga_lib.priors import PRIORS, MeanMap, center_gaussian

__all__ = ["ORACLE_FLAG", "SCORED", "LocalizationScorer", "MapReference", "ValidationMaps", "map_reference",
           "metrics_from_maps", "recon_error_map"]

SCORED: tuple[str, ...] = ("map", "recon", *(f"prior_{p}" for p in PRIORS))  # the maps scored, in this order
ORACLE_FLAG = (
    "iou_best_threshold_oracle* use the TEST masks to pick the best threshold per run (over quantiles of the maps): "
    "what the map could give, never used for any decision; iou / iou_val_quantile* are label-free"
)
_RECON_UPPER = 1.0  # |x - x_hat| of images in [0, 1]
_PRIOR_UPPER = 1.0  # the centred Gaussian peaks at 1


def recon_error_map(images_u8: torch.Tensor, recon: torch.Tensor) -> np.ndarray:
    """|x - x_hat| averaged over channels, float32 (B,H,W), from uint8 images (B,3,H,W) and reconstructions."""
    x = images_u8.float() / 255.0
    return (x - recon.detach().float().cpu()).abs().mean(dim=1).numpy()


@dataclass(frozen=True)
class MapReference:
    """What the normal validation images give one map (label-free).

    Attributes:
        edges: bin edges of its pixel AUROC / AUPRO (validation quantiles plus a uniform tail).
        threshold: its label-free pixel threshold, the ``quantile`` of its normal validation pixels.
        quantile: that quantile (``eval.val_quantile``).
    """

    edges: np.ndarray
    threshold: float
    quantile: float


def map_reference(normal_samples: Any, bins: int, upper: float, quantile: float) -> MapReference:
    """:class:`MapReference` of a map from its values on normal validation pixels.

    Args:
        normal_samples: map values of normal validation pixels (any shape).
        bins: number of bins (``eval.pixel_bins``); upper: largest value the map can take.
        quantile: the label-free threshold's quantile, in (0, 1).
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"eval.val_quantile={quantile} must be in (0, 1) (e.g. 0.99)")
    v = np.asarray(normal_samples, dtype=np.float64).reshape(-1)
    return MapReference(validation_edges(v, bins, upper), float(np.quantile(v, quantile)), quantile)


class ValidationMaps:
    """Collected over the normal validation batches: strided samples of the run's map and of its reconstruction
    error (edges, thresholds), the run's largest map value (the baselines' calibration) and its mean map (prior).

    Args:
        stride: every ``stride``-th pixel along each axis is sampled (memory bound).
    """

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self._samples: dict[str, list[np.ndarray]] = {"map": [], "recon": []}
        self.mean = MeanMap()
        self.map_max = -math.inf

    def update(self, raw_map: Any, recon_map: Any, valid: Any) -> None:
        """Add a batch: (B,H,W) run maps and reconstruction-error maps, (B,H,W) bool valid (False on padding)."""
        raw, rec, v, k = np.asarray(raw_map), np.asarray(recon_map), np.asarray(valid, dtype=bool), self.stride
        self.map_max = max(self.map_max, float(raw[v].max()))
        self._samples["map"].append(raw[:, ::k, ::k][v[:, ::k, ::k]])
        self._samples["recon"].append(rec[:, ::k, ::k][v[:, ::k, ::k]])
        self.mean.update(raw, v)

    def samples(self, name: str) -> np.ndarray:
        """The strided validation values of ``map`` or ``recon``."""
        return np.concatenate(self._samples[name])

    def priors(self, height: int, width: int) -> dict[str, np.ndarray]:
        """The position priors' maps, float32 (H,W): ``prior_center``, ``prior_mean``."""
        return {"prior_center": center_gaussian(height, width), "prior_mean": self.mean.result()}

    def references(self, bins: int, quantile: float, map_upper: float) -> dict[str, MapReference]:
        """:class:`MapReference` of each map of :data:`SCORED` (a prior's validation map is the prior itself, on
        the pixels some validation image has as content)."""
        side = self.mean.support()
        refs = {"map": map_reference(self.samples("map"), bins, map_upper, quantile),
                "recon": map_reference(self.samples("recon"), bins, _RECON_UPPER, quantile)}
        for name, prior in self.priors(*side.shape).items():
            upper = map_upper if name == "prior_mean" else _PRIOR_UPPER
            refs[name] = map_reference(prior[side], bins, upper, quantile)
        return refs


class LocalizationScorer:
    """Pixel AUROC / AUPRO of every map of :data:`SCORED`, streamed over the test batches, and the IoU at each
    map's label-free threshold (plus the flagged oracle) from the kept test maps.

    Args:
        refs: :meth:`ValidationMaps.references`; priors: :meth:`ValidationMaps.priors`.
        max_fpr: AUPRO's integration limit (``eval.aupro_max_fpr``).
    """

    def __init__(self, refs: dict[str, MapReference], priors: dict[str, np.ndarray], max_fpr: float) -> None:
        self.refs, self.priors = refs, priors
        self.acc = {name: PixelMetricAccumulator(edges=refs[name].edges, max_fpr=max_fpr) for name in SCORED}

    def update(self, raw_map: Any, recon_map: Any, gt: Any, valid: Any) -> None:
        """Add a test batch: (B,H,W) run maps (ungated, raw units), reconstruction-error maps, bool masks, valid."""
        self.acc["map"].update(raw_map, gt, valid)
        self.acc["recon"].update(recon_map, gt, valid)
        shape = np.asarray(recon_map).shape
        for name, prior in self.priors.items():
            self.acc[name].update(np.broadcast_to(prior, shape), gt, valid)

    def compute(self, maps: dict[str, np.ndarray], gt: np.ndarray, labels: np.ndarray, gate: np.ndarray,
                valid: np.ndarray | None) -> dict[str, Any]:
        """The ``metrics.json`` keys of the non-headline maps and of the label-free / oracle IoUs.

        Args:
            maps: ``map`` and ``recon`` (N,H,W) test maps in raw units (the priors are broadcast).
            gt: (N,H,W) bool masks; labels: (N,) test labels (scoring only).
            gate: (N,) bool: the weak classifier's decision, applied to the run's own map only (PN 4).
            valid: (N,H,W) bool or None (every pixel is content).
        """
        y, out = np.asarray(labels), {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undefined metrics are NaN -> null
            for name in SCORED:
                m = maps[name] if name in maps else np.broadcast_to(self.priors[name], gt.shape)
                g = gate if name == "map" else np.ones(len(y), dtype=bool)
                pred = M.binarize(m, self.refs[name].threshold) & g[:, None, None] & (True if valid is None else valid)
                prefix, suffix = (f"{name}_", "") if name.startswith("prior_") else ("", _suffix(name))
                if name != "map":  # the headline's are metrics_from_maps' pixel_auroc / aupro
                    pixel = self.acc[name].compute()
                    out[f"{prefix}pixel_auroc{suffix}"], out[f"{prefix}aupro{suffix}"] = (pixel["pixel_auroc"],
                                                                                          pixel["aupro"])
                out[f"{prefix}iou_val_quantile{suffix}"] = M.mean_iou(pred, gt, y)
                if name in ("map", "recon"):
                    out[f"fp_area_normal_val_quantile{suffix}"] = M.fp_area(pred[y == 0], None if valid is None
                                                                            else valid[y == 0])
                    best, _ = M.oracle_best_iou(m, gt, y, g, valid)
                    out[f"iou_best_threshold_oracle{suffix}"] = best
        out["val_quantile"] = self.refs["map"].quantile
        out["val_quantile_thresholds"] = {name: self.refs[name].threshold for name in SCORED}
        out["oracle_flag"] = ORACLE_FLAG
        return out


def metrics_from_maps(
    predictions: pd.DataFrame,
    maps: np.ndarray,
    gt: np.ndarray,
    threshold: float,
    thresholds: list[float],
    has_masks: bool,
    pixel_acc: PixelMetricAccumulator | None,
    valid: np.ndarray | None = None,
) -> dict[str, Any]:
    """The metrics of ``metrics.json``, each from a :mod:`avaga_lib.metrics` function (PN 9-11).

    Args:
        predictions: the per-image table of :func:`evaluate_run` (``label``, ``score``, ``score_raw``,
            ``score_transductive``, ``pred_label``, ``prob_anomalous`` in the weak setting).
        maps: (N,H,W) ungated maps in the table's row order; gt: (N,H,W) bool ground truth.
        threshold: decision threshold (0.5, PN 16); thresholds: Table 7's sweep (includes ``threshold``).
        has_masks: the dataset has pixel masks (else IoU, pixel AUROC and AUPRO are NaN).
        pixel_acc: the streamed pixel AUROC / AUPRO accumulator, already fed (None without masks).
        valid: (N,H,W) bool, False on letterbox padding (never predicted, never counted); None = every pixel.
    """
    y = predictions["label"].to_numpy()
    prob = predictions["prob_anomalous"].to_numpy() if "prob_anomalous" in predictions else None
    gate = prob > threshold if prob is not None else np.ones(len(y), dtype=bool)  # weak: called normal -> empty
    pred = M.binarize(maps, threshold) & gate[:, None, None] & (True if valid is None else valid)
    nan = math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined metrics are NaN -> null; the reason is in metrics.json
        curve = M.iou_threshold_curve(maps, gt, thresholds, y, gate, valid) if has_masks else {}
        m: dict[str, Any] = {
            "iou": M.mean_iou(pred, gt, y) if has_masks else nan,
            "iou_pooled": M.pooled_iou(pred, gt, y) if has_masks else nan,
            "mean_accuracy": M.mean_class_accuracy(y, predictions["pred_label"]),
            "image_auroc": M.image_auroc(y, predictions["score_raw"]),
            "image_auroc_classifier": M.image_auroc(y, prob) if prob is not None else nan,
            "pixel_auroc": nan,
            "aupro": nan,
            "fp_area_normal": M.fp_area(pred[y == 0], None if valid is None else valid[y == 0]),
            "mean_accuracy_transductive": M.mean_class_accuracy(
                y, M.binarize(predictions["score_transductive"], threshold).astype(np.int64)),
            "iou_at": {f"{t:g}": curve.get(float(t), nan) for t in thresholds},
        }
        if prob is not None:
            m["mean_accuracy_score"] = M.mean_class_accuracy(y, M.binarize(predictions["score"], threshold)
                                                             .astype(np.int64))
        if pixel_acc is not None:
            m.update(pixel_acc.compute())
    return m


def _suffix(name: str) -> str:
    return "" if name == "map" else f"_{name}"
