"""Evaluation metrics of the study (PROTOCOL_NOTES 9-11): IoU, mean class accuracy, AUROC, AUPRO, FP area.

Pure numpy / scikit-learn / scipy; no plotting, no file IO. Every function accepts numpy arrays or torch tensors
(moved to the CPU). Conventions shared by every caller:

* A map or score is **positive** (anomalous) where it strictly exceeds the threshold (:func:`binarize`,
  ``x > t``). Strict, so that the literal "sigmoid after ReLU" attention of PROTOCOL_NOTES 2 (``1 - A <= 0.5``)
  indeed never fires at 0.5, as that note states.
* Undefined metrics are ``float("nan")`` (never 0) plus a ``UserWarning`` saying why; :func:`nan_to_none` turns
  them into JSON ``null`` for ``metrics.json``.
* Pixel AUROC and AUPRO are **streamed with 1000 fixed thresholds** (:class:`PixelMetricAccumulator`): memory does
  not grow with the number of images except for one histogram per ground-truth region.
* Letterbox padding (:mod:`avaga_lib.data.geometry`) is no content: pixel functions take an optional ``valid`` mask
  (None = all pixels); IoU needs none (callers restrict predictions to valid pixels, masks are 0 on padding).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

__all__ = ["binarize", "iou_per_image", "mean_iou", "pooled_iou", "mean_class_accuracy", "image_auroc",
           "fp_area_per_image", "fp_area", "iou_threshold_curve", "accuracy_threshold_curve", "quantile_edges",
           "PixelMetricAccumulator", "nan_to_none"]

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy >= 2 renamed trapz (pyproject allows 1.24)
_REGION_STRUCTURE = np.ones((3, 3), dtype=int)  # 8-connectivity, as MVTec AD's own PRO evaluation code


def _np(x: Any) -> np.ndarray:
    """Torch tensor (any device) or array-like -> numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _stack_nhw(x: Any, name: str, what: str) -> np.ndarray:
    """(N,H,W) or (N,1,H,W) -> numpy (N,H,W); anything else is an error naming the argument."""
    a = _np(x)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"{name}: expected {what} of shape (N,H,W) or (N,1,H,W), got {a.shape}")
    return a


def _as_masks(x: Any, name: str) -> np.ndarray:
    """(N,H,W) or (N,1,H,W) -> bool (N,H,W); floats are taken as {0,1} masks (> 0.5)."""
    a = _stack_nhw(x, name, "masks")
    if a.dtype == bool:
        return a
    return a > 0.5 if np.issubdtype(a.dtype, np.floating) else a != 0


def _as_maps(x: Any, name: str) -> np.ndarray:
    """(N,H,W) or (N,1,H,W) -> float (N,H,W)."""
    a = _stack_nhw(x, name, "maps")
    return a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float32)


def _select(a: np.ndarray, labels: Any | None) -> np.ndarray:
    if labels is None:
        return a
    lab = _np(labels).reshape(-1)
    if lab.shape[0] != a.shape[0]:
        raise ValueError(f"labels has {lab.shape[0]} entries but there are {a.shape[0]} images")
    return a[lab == 1]


def _mask_pair(pred_masks: Any, gt_masks: Any, labels: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and ground-truth masks as bool (N,H,W) of the same shape, restricted to ``labels == 1`` if given."""
    p = _select(_as_masks(pred_masks, "pred_masks"), labels)
    g = _select(_as_masks(gt_masks, "gt_masks"), labels)
    if p.shape != g.shape:
        raise ValueError(f"pred_masks {p.shape} and gt_masks {g.shape} differ in shape")
    return p, g


def binarize(x: Any, threshold: float) -> np.ndarray:
    """The one decision rule of the study: positive (anomalous) where ``x > threshold`` (strict).

    Args:
        x: scores or maps, any shape; threshold: e.g. 0.5 (PROTOCOL_NOTES 16).

    Returns:
        Boolean array of ``x``'s shape.
    """
    return _np(x) > threshold


def iou_per_image(pred_masks: Any, gt_masks: Any) -> np.ndarray:
    """IoU of predicted and ground-truth masks, one value per image (PROTOCOL_NOTES 10).

    IoU = |P & G| / |P | G|. When both masks are empty the IoU is undefined and returned as NaN (excluded from
    means); an empty ground truth with a non-empty prediction gives 0. Pass anomalous images only (the IoU of a
    normal image is undefined by the protocol; report :func:`fp_area` for those).

    Args:
        pred_masks: (N,H,W) or (N,1,H,W), bool or {0,1}; gt_masks: same shape.

    Returns:
        float64 array (N,).
    """
    p, g = _mask_pair(pred_masks, gt_masks)
    inter = np.logical_and(p, g).sum(axis=(1, 2)).astype(np.float64)
    union = np.logical_or(p, g).sum(axis=(1, 2)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def mean_iou(pred_masks: Any, gt_masks: Any, labels: Any | None = None) -> float:
    """Per-image IoU averaged over images (the paper's IoU, PROTOCOL_NOTES 10 default).

    Args:
        pred_masks: (N,H,W) or (N,1,H,W) predicted masks; gt_masks: same shape, ground truth.
        labels: optional (N,) image labels; when given only images with label 1 (anomalous) count.

    Returns:
        NaN-mean of :func:`iou_per_image`; NaN (with a warning) when no image has a defined IoU.
    """
    ious = iou_per_image(*_mask_pair(pred_masks, gt_masks, labels))
    if ious.size == 0 or np.all(np.isnan(ious)):
        warnings.warn("mean IoU undefined: no anomalous image with a non-empty prediction or mask", stacklevel=2)
        return float("nan")
    return float(np.nanmean(ious))


def pooled_iou(pred_masks: Any, gt_masks: Any, labels: Any | None = None) -> float:
    """IoU pooled over a category: sum of intersections / sum of unions (PROTOCOL_NOTES 10, secondary).

    Args:
        pred_masks: (N,H,W) or (N,1,H,W) predicted masks; gt_masks: same shape.
        labels: optional (N,) image labels; when given only anomalous images (label 1) count.

    Returns:
        Pooled IoU; NaN (with a warning) when every union is empty.
    """
    p, g = _mask_pair(pred_masks, gt_masks, labels)
    union = int(np.logical_or(p, g).sum())
    if union == 0:
        warnings.warn("pooled IoU undefined: every prediction and mask is empty", stacklevel=2)
        return float("nan")
    return float(np.logical_and(p, g).sum() / union)


def mean_class_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean of the per-class accuracies (anomalous and normal), i.e. balanced accuracy (PROTOCOL_NOTES 9).

    Equals ``sklearn.metrics.balanced_accuracy_score`` (including its behaviour when one class is absent:
    the mean over the classes present in ``y_true``).

    Args:
        y_true: (N,) labels 0 normal / 1 anomalous; y_pred: (N,) predicted labels.

    Returns:
        Balanced accuracy in [0, 1]; NaN when ``y_true`` is empty.
    """
    t = _np(y_true).reshape(-1).astype(np.int64)
    p = _np(y_pred).reshape(-1).astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.shape[0]} entries, y_pred {p.shape[0]}")
    if t.size == 0:
        warnings.warn("mean class accuracy undefined: no test image", stacklevel=2)
        return float("nan")
    classes = np.unique(t)
    if classes.size < 2:
        warnings.warn(f"mean class accuracy over one class only (y_true is all {classes[0]})", stacklevel=2)
    return float(np.mean([np.mean(p[t == c] == c) for c in classes]))


def image_auroc(y_true: Any, scores: Any) -> float:
    """Image-level ROC AUC of anomaly scores (higher = more anomalous), via ``sklearn.metrics.roc_auc_score``.

    Args:
        y_true: (N,) labels 0 normal / 1 anomalous; scores: (N,) scores.

    Returns:
        AUROC; NaN with a ``UserWarning`` naming the absent class when only one class is present.
    """
    t = _np(y_true).reshape(-1).astype(np.int64)
    s = _np(scores).reshape(-1).astype(np.float64)
    if t.shape != s.shape:
        raise ValueError(f"y_true has {t.shape[0]} entries, scores {s.shape[0]}")
    present = set(np.unique(t).tolist())
    if present != {0, 1}:
        missing = sorted({0, 1} - present)
        warnings.warn(f"image AUROC undefined: no test image with label {missing} (labels present: "
                      f"{sorted(present)})", stacklevel=2)
        return float("nan")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"image_auroc: {int((~np.isfinite(s)).sum())} non-finite scores")
    return float(roc_auc_score(t, s))


def fp_area_per_image(pred_masks: Any, valid: Any | None = None) -> np.ndarray:
    """Fraction of (``valid``) pixels flagged, float64 (N,), of (N,H,W) or (N,1,H,W) masks (``predictions.csv``)."""
    p = _as_masks(pred_masks, "pred_masks")
    v = np.ones_like(p) if valid is None else _as_masks(valid, "valid")
    return (p & v).sum(axis=(1, 2)) / np.maximum(v.sum(axis=(1, 2)), 1)  # == mean over valid pixels


def fp_area(pred_masks_of_normals: Any, valid: Any | None = None) -> float:
    """Mean fraction of pixels flagged anomalous on normal images (their IoU is undefined, PROTOCOL_NOTES 10).

    Args:
        pred_masks_of_normals: (N,H,W) or (N,1,H,W) predicted masks of normal test images only; valid: optional,
            the pixels that count (as :func:`fp_area_per_image`).

    Returns:
        Mean over images of :func:`fp_area_per_image`; NaN (with a warning) when there is no image.
    """
    p = _as_masks(pred_masks_of_normals, "pred_masks_of_normals")
    if p.shape[0] == 0:
        warnings.warn("false-positive area undefined: no normal test image", stacklevel=2)
        return float("nan")
    return float(fp_area_per_image(p, valid).mean())


def iou_threshold_curve(maps: Any, gt_masks: Any, thresholds: Iterable[float], labels: Any | None = None,
                        gate: Any | None = None, valid: Any | None = None) -> dict[float, float]:
    """Mean IoU of ``maps > t`` against the masks for each threshold ``t`` (Table 7 of the paper).

    Args:
        maps: (N,H,W) or (N,1,H,W) anomaly maps; gt_masks: same shape.
        thresholds: e.g. ``EvalConfig.thresholds_study`` (0.2 ... 0.6).
        labels: optional (N,) image labels; when given only anomalous images count (as :func:`mean_iou`).
        gate: optional (N,) bool; an image whose gate is False gets an empty predicted mask at every threshold
            (weak setting: the classifier called it normal, PROTOCOL_NOTES 4).
        valid: optional (N,H,W) bool; pixels outside (letterbox padding) are never predicted anomalous.

    Returns:
        ``{threshold: mean IoU}`` (float keys, in the order given).
    """
    m = _as_maps(maps, "maps")
    m = m if valid is None else np.where(_as_masks(valid, "valid"), m, -np.inf)
    keep = np.ones(m.shape[0], dtype=bool) if gate is None else _np(gate).reshape(-1).astype(bool)
    if keep.shape[0] != m.shape[0]:
        raise ValueError(f"gate has {keep.shape[0]} entries but there are {m.shape[0]} maps")
    m, keep = _select(m, labels), _select(keep, labels)
    g = _select(_as_masks(gt_masks, "gt_masks"), labels)
    out: dict[float, float] = {}
    for t in thresholds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty prediction at a high threshold is a result, not an error
            out[float(t)] = mean_iou((m > t) & keep[:, None, None], g)
    return out


def accuracy_threshold_curve(scores01: Any, labels: Any, thresholds: Iterable[float]) -> dict[float, float]:
    """Mean class accuracy of ``scores01 > t`` for each threshold ``t``.

    Args:
        scores01: (N,) normalised detection scores (PROTOCOL_NOTES 8); labels: (N,) labels 0/1.
        thresholds: thresholds to sweep.

    Returns:
        ``{threshold: mean class accuracy}``.
    """
    s = _np(scores01).reshape(-1)
    return {float(t): mean_class_accuracy(labels, (s > t).astype(np.int64)) for t in thresholds}


def quantile_edges(normal_maps: Any, bins: int = 1000) -> np.ndarray:
    """Bin edges at the quantiles of *normal validation* maps, for :class:`PixelMetricAccumulator` (``edges=``).

    Useful when maps are not spread over [0, 1] (e.g. L2 residuals around 1e-3): uniform bins would put nearly
    every pixel in the first bins. Quantile edges give every bin about the same share of normal pixels, i.e. an
    even resolution along the FPR axis of the ROC and PRO curves. Scores above the last edge share the top bin.
    Use validation (normal-only) maps, never test labels (PROTOCOL_NOTES 8).

    Args:
        normal_maps: any-shaped anomaly maps of normal validation images; bins: number of bins wanted (fewer come
            back when quantiles repeat).

    Returns:
        Strictly increasing float64 edges (at least 2).
    """
    v = _np(normal_maps).reshape(-1).astype(np.float64)
    if v.size == 0:
        raise ValueError("quantile_edges: no validation pixel given")
    e = np.unique(np.quantile(v, np.linspace(0.0, 1.0, bins + 1)))
    if e.size < 2:
        e = np.array([e[0], e[0] + 1e-12])  # constant maps: one bin
    return e


class PixelMetricAccumulator:
    """Pixel AUROC and AUPRO, streamed over batches with 1000 fixed thresholds (memory bounded).

    Method: every pixel score is assigned to one of ``bins`` fixed bins (uniform over ``score_range``, or the
    explicit ``edges``); scores outside are clipped to the first / last bin. The state is

    * one histogram of normal pixels (gt 0, from every image, normal or anomalous), one of anomalous pixels and
      one per connected ground-truth region (8-connectivity, ``scipy.ndimage.label``).

    Threshold ``k`` (k = 0..bins) flags the pixels whose bin is >= k, i.e. whose score is >= ``edges[k]``. Then
    FPR_k = normal pixels flagged / normal pixels, TPR_k = anomalous pixels flagged / anomalous pixels, and
    PRO_k = mean over regions of (region pixels flagged / region pixels). Pixel AUROC is the trapezoid area of
    (FPR, TPR); AUPRO is the trapezoid area of (FPR, PRO) for FPR in [0, max_fpr], with linear interpolation at
    max_fpr, divided by max_fpr, as MVTec AD's evaluation (PROTOCOL_NOTES 11). The only approximation is the
    ordering of scores inside one bin (treated as ties); with 1000 bins the AUROC error is ~1e-3 or less.

    Memory: (2 + regions) x bins int64 (8 KB per region at 1000 bins), independent of the images' number or size.

    Args:
        bins: number of score bins (``EvalConfig.pixel_bins``); ignored when ``edges`` is given.
        max_fpr: integration limit of AUPRO (``EvalConfig.aupro_max_fpr``, 0.3).
        score_range: (lo, hi) of the uniform bins; must be fixed before seeing test data (e.g. (0, 1) for
            attention maps, or calibrated on normal validation maps), never derived from test labels.
        edges: optional strictly increasing bin edges (e.g. :func:`quantile_edges` of validation maps).
    """

    def __init__(self, bins: int = 1000, max_fpr: float = 0.3, score_range: tuple[float, float] = (0.0, 1.0),
                 edges: Sequence[float] | np.ndarray | None = None) -> None:
        if not 0.0 < max_fpr <= 1.0:
            raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
        if edges is not None:
            e = np.asarray(edges, dtype=np.float64).reshape(-1)
            if e.size < 2 or not np.all(np.diff(e) > 0):
                raise ValueError("edges must hold at least 2 strictly increasing values")
            self.edges, self.bins, self._uniform = e, e.size - 1, False
        else:
            lo, hi = float(score_range[0]), float(score_range[1])
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ValueError(f"score_range must be finite with hi > lo, got {score_range}")
            if bins < 2:
                raise ValueError(f"bins must be >= 2, got {bins}")
            self.edges, self.bins, self._uniform = np.linspace(lo, hi, int(bins) + 1), int(bins), True
        self.max_fpr = float(max_fpr)
        self.hist_normal = np.zeros(self.bins, dtype=np.int64)
        self.hist_anomalous = np.zeros(self.bins, dtype=np.int64)
        self._region_hists: list[np.ndarray] = []  # one (n_regions_of_image, bins) block per image with regions
        self.n_images = 0

    def _bin(self, s: np.ndarray) -> np.ndarray:
        if self._uniform:
            lo, hi = self.edges[0], self.edges[-1]
            idx = np.floor((s.astype(np.float64) - lo) * (self.bins / (hi - lo)))
            return np.clip(np.nan_to_num(idx, nan=0.0), 0, self.bins - 1).astype(np.int64)
        idx = np.searchsorted(self.edges, s, side="right") - 1
        return np.clip(idx, 0, self.bins - 1).astype(np.int64)

    def update(self, anomaly_maps: Any, gt_masks: Any, valid: Any | None = None) -> None:
        """Add a batch.

        Args:
            anomaly_maps: (B,H,W) or (B,1,H,W) float maps, higher = more anomalous (numpy or torch, any device).
            gt_masks: same shape, bool or {0,1}; zeros for normal images.
            valid: optional, same shape, bool: only these pixels count (gt_masks must be False elsewhere).
        """
        m = _as_maps(anomaly_maps, "anomaly_maps")
        g = _as_masks(gt_masks, "gt_masks")
        if m.shape != g.shape:
            raise ValueError(f"anomaly_maps {m.shape} and gt_masks {g.shape} differ in shape")
        if np.isnan(m).any():
            raise ValueError(f"anomaly_maps hold {int(np.isnan(m).sum())} NaN values")
        b = self._bin(m)
        keep = ~g if valid is None else ~g & _as_masks(valid, "valid")  # padding: neither normal nor anomalous
        self.hist_normal += np.bincount(b[keep], minlength=self.bins)
        self.hist_anomalous += np.bincount(b[g], minlength=self.bins)
        for i in range(m.shape[0]):
            if not g[i].any():
                continue
            lab, n = ndimage.label(g[i], structure=_REGION_STRUCTURE)
            inside = lab > 0
            key = (lab[inside].astype(np.int64) - 1) * self.bins + b[i][inside]
            self._region_hists.append(np.bincount(key, minlength=n * self.bins).reshape(n, self.bins))
        self.n_images += m.shape[0]

    @property
    def n_regions(self) -> int:
        """Number of ground-truth connected regions seen so far."""
        return sum(h.shape[0] for h in self._region_hists)

    def state_nbytes(self) -> int:
        """Bytes held by the accumulator's state (histograms)."""
        return int(self.hist_normal.nbytes + self.hist_anomalous.nbytes + sum(h.nbytes for h in self._region_hists))

    def curves(self) -> dict[str, np.ndarray]:
        """ROC and PRO curves at the bins + 1 thresholds, ordered by increasing FPR (for plots).

        Returns:
            ``thresholds`` (edges, decreasing), ``fpr``, ``tpr``, ``pro`` arrays of length bins + 1 (NaN-filled
            where the denominator is empty).
        """
        n_norm, n_anom = self.hist_normal.sum(), self.hist_anomalous.sum()
        fpr = _tail(self.hist_normal) / n_norm if n_norm > 0 else np.full(self.bins + 1, np.nan)
        tpr = _tail(self.hist_anomalous) / n_anom if n_anom > 0 else np.full(self.bins + 1, np.nan)
        if self._region_hists:
            r = np.concatenate(self._region_hists, axis=0)
            pro = (_tail(r) / r.sum(axis=1, keepdims=True)).mean(axis=0)
        else:
            pro = np.full(self.bins + 1, np.nan)
        order = slice(None, None, -1)  # k = bins .. 0: FPR increasing
        return {"thresholds": self.edges[order], "fpr": fpr[order], "tpr": tpr[order], "pro": pro[order]}

    def compute(self) -> dict[str, float]:
        """Pixel AUROC and AUPRO (normalised by ``max_fpr``); NaN with a warning when undefined.

        Returns:
            ``{"pixel_auroc": float, "aupro": float}``.
        """
        if self.hist_anomalous.sum() == 0 or self.hist_normal.sum() == 0:
            which = "anomalous" if self.hist_anomalous.sum() == 0 else "normal"
            warnings.warn(f"pixel AUROC / AUPRO undefined: no {which} pixel among {self.n_images} images", stacklevel=2)
            return {"pixel_auroc": float("nan"), "aupro": float("nan")}
        c = self.curves()
        auroc = float(_trapezoid(c["tpr"], c["fpr"]))
        aupro = _trapezoid_upto(c["fpr"], c["pro"], self.max_fpr) / self.max_fpr
        return {"pixel_auroc": auroc, "aupro": float(aupro)}


def _tail(h: np.ndarray) -> np.ndarray:
    """Pixels flagged at threshold k = pixels in bins k..end, for k = 0..bins (k = bins: nothing flagged)."""
    return np.concatenate([np.cumsum(h[..., ::-1], axis=-1)[..., ::-1], np.zeros(h.shape[:-1] + (1,), h.dtype)], -1)


def _trapezoid_upto(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area of y(x) for x in [x[0], x_max], interpolating linearly at x_max (x non-decreasing)."""
    keep = x <= x_max
    xs, ys = x[keep], y[keep]
    area = float(_trapezoid(ys, xs)) if xs.size > 1 else 0.0
    j = int(keep.sum())  # first point beyond x_max
    if j < x.size and j > 0 and xs[-1] < x_max:
        x0, y0, x1, y1 = x[j - 1], y[j - 1], x[j], y[j]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += 0.5 * (x_max - x0) * (y0 + y_at)
    return area


def nan_to_none(d: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of a (nested) metrics dict with NaN floats replaced by ``None`` (JSON ``null`` = unavailable)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out[k] = nan_to_none(v)
        elif isinstance(v, (float, np.floating)):
            out[k] = None if math.isnan(v) else float(v)
        else:
            out[k] = v
    return out
