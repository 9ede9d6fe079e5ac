"""Localization scored on equal terms (issue 13): every map of a run, and the position priors, judged the same way.

For one run the evaluator scores four maps on the same test pixels with the same functions:

* ``map``: the run's own anomaly map (AVAGA: 1 - A or A^{c_a}; baselines: the raw residual map), the headline;
* ``recon``: the reconstruction-error map |x - x_hat| averaged over channels (AVAGA's detection score is its mean);
* ``prior_center`` / ``prior_mean``: the position priors of :mod:`avaga_lib.evaluation.priors` (a centred Gaussian, the
mean
  ``map`` of the normal validation images).

Everything label-free comes from the **normal validation images** (:class:`ValidationMaps`): each map's bin edges
(:func:`avaga_lib.evaluation.pixel_metrics.validation_edges`, so no map is scored on ties) and its label-free pixel
threshold, the ``eval.val_quantile`` quantile of its normal validation pixels (docs/PROTOCOL.md, "Label-free pixel
threshold"). :func:`metrics_from_maps` computes the headline keys of ``metrics.json`` (PN 9-11). The test masks are read
only to *score* (pixel AUROC, AUPRO, IoU) and, flagged, for the oracle IoU at the best threshold
(:func:`avaga_lib.evaluation.metrics.oracle_best_iou`), which no decision uses.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from avaga_lib.evaluation import metrics as M
from avaga_lib.evaluation.pixel_metrics import (
    PixelMetricAccumulator,
    bootstrap_pixel_auroc,
    covering_edges,
    exact_pixel_auroc,
    per_image_histograms,
    validation_edges,
)
from avaga_lib.evaluation.priors import PRIORS, MeanMap, center_gaussian
from avaga_lib.models.avaga.attention import bilinear_upsample

__all__ = ["ORACLE_FLAG", "SCORED", "LocalizationScorer", "MapReference", "ValidationMaps", "grid_cap",
           "map_reference", "metric_key", "metrics_from_maps", "recon_error_map", "test_intervals"]

SCORED: tuple[str, ...] = ("map", "recon", *(f"prior_{p}" for p in PRIORS))  # the maps scored, in this order
ORACLE_FLAG = (
    "iou_best_threshold_oracle* use the TEST masks to pick the best threshold per run (over quantiles of the maps): "
    "what the map could give, never used for any decision; iou and every <map>_iou are label-free"
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
        edges: bin edges of its pixel AUROC / AUPRO (validation quantiles plus a uniform tail). threshold: its
        label-free pixel threshold, the ``quantile`` of its normal validation pixels. quantile: that quantile
        (``eval.val_quantile``).
    """

    edges: np.ndarray
    threshold: float
    quantile: float


def map_reference(normal_samples: Any, bins: int, upper: float, quantile: float) -> MapReference:
    """:class:`MapReference` of a map from its values on normal validation pixels.

    Args:
        normal_samples: map values of normal validation pixels (any shape). bins: number of bins (``eval.pixel_bins``);
        upper: largest value the map can take. quantile: the label-free threshold's quantile, in (0, 1).
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"eval.val_quantile={quantile} must be in (0, 1) (e.g. 0.99)")
    v = np.asarray(normal_samples, dtype=np.float64).reshape(-1)
    return MapReference(validation_edges(v, bins, upper), float(np.quantile(v, quantile)), quantile)


class ValidationMaps:
    """Collected over the normal validation batches: strided samples of every scored map (edges, thresholds) and
    the mean of the run's own map (the ``prior_mean`` position prior).

    Args:
        stride: every ``stride``-th pixel along each axis is sampled (memory bound).
    """

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self._samples: dict[str, list[np.ndarray]] = {}
        self.mean = MeanMap()

    def update(self, maps: dict[str, Any], valid: Any) -> None:
        """Add a batch: ``maps`` name -> (B,H,W) raw map (``map`` = the run's own, ``recon``, floors), ``valid``
        (B,H,W) bool (False on letterbox padding, which no map samples)."""
        v, k = np.asarray(valid, dtype=bool), self.stride
        for name, m in maps.items():
            self._samples.setdefault(name, []).append(np.asarray(m)[:, ::k, ::k][v[:, ::k, ::k]])
        self.mean.update(np.asarray(maps["map"]), v)

    def samples(self, name: str) -> np.ndarray:
        """The strided validation values of a map."""
        return np.concatenate(self._samples[name])

    def priors(self, height: int, width: int) -> dict[str, np.ndarray]:
        """The position priors' maps, float32 (H,W): ``prior_center``, ``prior_mean``."""
        return {"prior_center": center_gaussian(height, width), "prior_mean": self.mean.result()}

    def references(self, bins: int, quantile: float, uppers: dict[str, float]) -> dict[str, MapReference]:
        """:class:`MapReference` of every sampled map and of each prior (a prior's validation map is the prior
        itself, on the pixels some validation image has as content); ``uppers``: name -> largest value the map
        can take (``prior_mean`` takes the run map's)."""
        side = self.mean.support()
        refs = {name: map_reference(self.samples(name), bins, uppers[name], quantile) for name in self._samples}
        for name, prior in self.priors(*side.shape).items():
            upper = uppers["map"] if name == "prior_mean" else _PRIOR_UPPER
            refs[name] = map_reference(prior[side], bins, upper, quantile)
        return refs


def metric_key(name: str, metric: str) -> str:
    """The ``metrics.json`` key of ``metric`` for the scored map ``name``: the run's map has the bare metric name
    (``pixel_auroc``), the reconstruction error a suffix (``pixel_auroc_recon``), priors and floors a prefix
    (``prior_center_pixel_auroc``, ``floor_intensity_pixel_auroc``)."""
    if name == "map":
        return metric
    if name == "recon":
        return f"{metric}_recon"
    return f"{name}_{metric}"


def grid_cap(gt: np.ndarray, labels: np.ndarray, side: int, valid: np.ndarray | None = None) -> float:
    """The best mean IoU a map of ``side`` x ``side`` cells can reach (issue 20): the ground-truth masks themselves
    pooled (area mean) to that grid and upsampled bilinearly as the attention map is, at the best threshold.

    **Reads the test masks**: an upper bound reported beside every IoU, never a decision. A per-pixel map
    (``side`` = the image side) reaches 1.

    Args:
        gt: (N,H,W) bool masks (square); labels: (N,) 0 / 1; side: the map's native grid side. valid: optional (N,H,W)
        bool (letterbox padding never counts).
    """
    size = gt.shape[-1]
    if side >= size:
        return 1.0
    g = torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32))[:, None]
    pooled = torch.nn.functional.adaptive_avg_pool2d(g, side)
    up = bilinear_upsample(pooled, size)[:, 0].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return M.oracle_best_iou(up, gt, labels, None, valid)[0]


class LocalizationScorer:
    """Every scored map judged alike on the kept test maps: exact pixel AUROC, AUPRO on bins that cover the test
    range, the IoU at the map's label-free threshold, and (the run's own map) the flagged oracle IoU.

    Args:
        refs: :meth:`ValidationMaps.references` (label-free edges and thresholds of every map). max_fpr: AUPRO's
        integration limit (``eval.aupro_max_fpr``).
    """

    def __init__(self, refs: dict[str, MapReference], max_fpr: float) -> None:
        self.refs, self.max_fpr = refs, max_fpr
        self.edges: dict[str, np.ndarray] = {}  # the AUPRO edges used, per map (saved with the maps)

    def score(self, name: str, m: np.ndarray, gt: np.ndarray, valid: np.ndarray | None) -> dict[str, float]:
        """Pixel AUROC (exact) and AUPRO of one map: (N,H,W) raw values, ungated."""
        keep = np.ones(gt.shape, dtype=bool) if valid is None else valid
        self.edges[name] = covering_edges(self.refs[name].edges, m[keep])
        acc = PixelMetricAccumulator(edges=self.edges[name], max_fpr=self.max_fpr)
        acc.update(m, gt, valid)
        return {"pixel_auroc": exact_pixel_auroc(m, gt, valid), "aupro": acc.compute()["aupro"]}

    def compute(self, maps: dict[str, np.ndarray], gt: np.ndarray, labels: np.ndarray, gate: np.ndarray,
                valid: np.ndarray | None) -> dict[str, Any]:
        """The ``metrics.json`` keys of every map (the run's own ``map``: pixel AUROC, AUPRO and the oracle; its
        headline IoU comes from :func:`metrics_from_maps`).

        Args:
            maps: name -> (N,H,W) test map in raw units, or (H,W) for a map shared by every image (priors).
            gt: (N,H,W) bool masks; labels: (N,) test labels (scoring only). gate: (N,) bool: the weak classifier's
            decision, applied to the run's own map only (PN 4). valid: (N,H,W) bool or None (every pixel is content).
        """
        y, out = np.asarray(labels), {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undefined metrics are NaN -> null
            for name in self.refs:
                m = np.broadcast_to(maps[name], gt.shape)
                g = gate if name == "map" else np.ones(len(y), dtype=bool)
                for metric, value in self.score(name, np.ascontiguousarray(m), gt, valid).items():
                    out[metric_key(name, metric)] = value
                if name != "map":
                    pred = M.binarize(m, self.refs[name].threshold) & (True if valid is None else valid)
                    out[metric_key(name, "iou")] = M.mean_iou(pred, gt, y)
                    if name == "recon":
                        out["fp_area_normal_recon"] = M.fp_area(pred[y == 0], None if valid is None else valid[y == 0])
                if name in ("map", "recon"):
                    out[metric_key(name, "iou_best_threshold_oracle")] = M.oracle_best_iou(m, gt, y, g, valid)[0]
        out["val_quantile"] = self.refs["map"].quantile
        out["val_quantile_thresholds"] = {name: ref.threshold for name, ref in self.refs.items()}
        out["oracle_flag"] = ORACLE_FLAG
        return out


def test_intervals(labels: np.ndarray, scores: np.ndarray, per_image_iou: np.ndarray, m: np.ndarray,
                   gt: np.ndarray | None, valid: np.ndarray | None, edges: np.ndarray | None,
                   seed: int = 0) -> dict[str, float]:
    """Per-run 95% intervals over the test images (issue 20): a stratified bootstrap (:func:`M.stratified_draws`)
    of image AUROC (raw scores), mean IoU (per-image IoUs) and pixel AUROC (the run's raw map, on ``edges``).

    Returns:
        ``<metric>_ci_lo`` / ``<metric>_ci_hi`` for image_auroc, iou, pixel_auroc (NaN where undefined).
    """
    draws = M.stratified_draws(labels, M.BOOTSTRAP_RESAMPLES, seed)
    stats = {"image_auroc": M.bootstrap_image_auroc(labels, scores, draws),
             "iou": M.bootstrap_mean(per_image_iou, draws)}
    if gt is not None and edges is not None:
        normal, anomalous = per_image_histograms(m, gt, edges, valid)
        stats["pixel_auroc"] = bootstrap_pixel_auroc(normal, anomalous, draws)
    out: dict[str, float] = {}
    for metric in M.CI_METRICS:
        lo, hi = M.percentile_interval(stats.get(metric, np.full(1, np.nan)))
        out[f"{metric}_ci_lo"], out[f"{metric}_ci_hi"] = lo, hi
    return out


test_intervals.__test__ = False  # not a pytest test despite its name


def metrics_from_maps(
    predictions: pd.DataFrame,
    maps: np.ndarray,
    gt: np.ndarray,
    threshold: float,
    has_masks: bool,
    valid: np.ndarray | None = None,
    literal_maps: np.ndarray | None = None,
    thresholds: list[float] | None = None,
) -> dict[str, Any]:
    """The headline metrics of ``metrics.json``, each from a :mod:`avaga_lib.evaluation.metrics` function (PN 9-11,
    issue 20).

    Args:
        predictions: the per-image table of :func:`evaluate_run` (``label``, ``score``, ``score_raw``,
            ``score_transductive``, ``pred_label``, ``prob_anomalous`` in the weak setting).
        maps: (N,H,W) calibrated maps (0.5 = the run's label-free pixel threshold), ungated, in the table's order;
            gt: (N,H,W) bool ground truth.
        threshold: decision threshold of calibrated scores and maps (0.5, PN 16). has_masks: the dataset has pixel masks
        (else every IoU is NaN). valid: (N,H,W) bool, False on letterbox padding (never predicted, never counted); None
        = every pixel. literal_maps: AVAGA's raw attention map, for the paper's literal rule (``iou_literal``: the map
        itself at
            ``threshold``) and Table 7's sweep (``iou_at``); None for the baselines (NaN).
        thresholds: Table 7's sweep (includes ``threshold``).
    """
    y = predictions["label"].to_numpy()
    prob = predictions["prob_anomalous"].to_numpy() if "prob_anomalous" in predictions else None
    gate = prob > threshold if prob is not None else np.ones(len(y), dtype=bool)  # weak: called normal -> empty
    inside = True if valid is None else valid
    pred = M.binarize(maps, threshold) & gate[:, None, None] & inside
    thresholds = list(thresholds or [threshold])
    nan = math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined metrics are NaN -> null; the reason is in metrics.json
        literal = has_masks and literal_maps is not None
        curve = M.iou_threshold_curve(literal_maps, gt, thresholds, y, gate, valid) if literal else {}
        m: dict[str, Any] = {
            "iou": M.mean_iou(pred, gt, y) if has_masks else nan,
            "iou_pooled": M.pooled_iou(pred, gt, y) if has_masks else nan,
            "iou_literal": curve.get(float(threshold), nan),
            "mean_accuracy": M.mean_class_accuracy(y, predictions["pred_label"]),
            "image_auroc": M.image_auroc(y, predictions["score_raw"]),
            "image_auroc_classifier": M.image_auroc(y, prob) if prob is not None else nan,
            "pixel_auroc": nan,  # the scorer's, where the dataset has masks
            "aupro": nan,
            M.GRID_CAP: nan,
            "fp_area_normal": M.fp_area(pred[y == 0], None if valid is None else valid[y == 0]),
            "mean_accuracy_transductive": M.mean_class_accuracy(
                y, M.binarize(predictions["score_transductive"], threshold).astype(np.int64)),
            "iou_at": {f"{t:g}": curve.get(float(t), nan) for t in thresholds},
        }
        if prob is not None:
            m["mean_accuracy_score"] = M.mean_class_accuracy(y, M.binarize(predictions["score"], threshold)
                                                             .astype(np.int64))
    return m
