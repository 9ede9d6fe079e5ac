"""Pixel AUROC and AUPRO streamed over score bins (PROTOCOL_NOTES 11), and the label-free bin edges of a map.

Moved out of :mod:`avaga_lib.evaluation.metrics` (issue 13) with :func:`validation_edges`: the bin edges of *every* map
(attention, reconstruction error, residual, position prior) come from that map on the normal validation images,
quantiles plus a uniform tail, so no map is scored on ties. Pure numpy / scipy; the array conventions are those of
:mod:`avaga_lib.evaluation.metrics` (NaN + warning when undefined, ``valid`` masks for letterbox padding).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from avaga_lib.evaluation.metrics import _as_maps, _as_masks, _np

__all__ = ["PixelMetricAccumulator", "auroc_from_histograms", "bootstrap_pixel_auroc", "covering_edges",
           "exact_pixel_auroc", "per_image_histograms", "quantile_edges", "validation_edges"]

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy >= 2 renamed trapz (pyproject allows 1.24)
_REGION_STRUCTURE = np.ones((3, 3), dtype=int)  # 8-connectivity, as MVTec AD's own PRO evaluation code


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


def validation_edges(normal_samples: Any, bins: int, upper: float) -> np.ndarray:
    """Bin edges of a map from its values on normal validation images: ``bins // 2`` quantile bins up to their
    max, then ``bins // 2`` uniform bins up to ``max(upper, 2 * max)`` (no test data, no label).

    The quantile part resolves the normal range however narrow it is (a saturated attention map living in
    [0, 0.01] gets as many bins there as a residual map spread over [0, 1]); the uniform tail orders the test values
    above every validation value.

    Args:
        normal_samples: map values of normal validation pixels (any shape, e.g. a strided subsample).
        bins: number of bins (``EvalConfig.pixel_bins``). upper: the largest value the map can take (1 for maps in [0,
        1], 2 for 1 - SSIM).

    Returns:
        Strictly increasing float64 edges for :class:`PixelMetricAccumulator` (``edges=``).
    """
    half = max(2, bins // 2)
    low = quantile_edges(normal_samples, half)
    top = np.linspace(low[-1], max(upper, low[-1] * 2), half + 1)[1:]
    return np.concatenate([low, top])


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
        bins: number of score bins (``EvalConfig.pixel_bins``); ignored when ``edges`` is given. max_fpr: integration
        limit of AUPRO (``EvalConfig.aupro_max_fpr``, 0.3). score_range: (lo, hi) of the uniform bins; must be fixed
        before seeing test data (e.g. (0, 1) for
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
            gt_masks: same shape, bool or {0,1}; zeros for normal images. valid: optional, same shape, bool: only these
            pixels count (gt_masks must be False elsewhere).
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


# ------------------------------------------------------------------------------------------- exact and intervals
# issue 20: binned AUROC was wrong by -0.02..-0.08 when test values left the validation range (the tail bins were
# wider than a saturated map's whole range). The headline pixel AUROC is now exact (scikit-learn over every scored
# pixel); AUPRO keeps the histogram (one per defect region) on edges that cover the *test* range as well.
_COVER_BINS = 2000  # quantile bins of the unlabeled test values added to the validation edges for AUPRO


def exact_pixel_auroc(maps: Any, gt_masks: Any, valid: Any | None = None) -> float:
    """Pixel AUROC over every (valid) pixel, exact: scikit-learn's ``roc_auc_score`` (ties count one half).

    Args:
        maps: (N,H,W) anomaly maps (higher = more anomalous); gt_masks: same shape, bool. valid: optional same-shape
        bool: only these pixels count (letterbox padding is neither class).

    Returns:
        The AUROC, or NaN with a warning when a class has no pixel.
    """
    m, g = _as_maps(maps, "maps"), _as_masks(gt_masks, "gt_masks")
    if m.shape != g.shape:
        raise ValueError(f"maps {m.shape} and gt_masks {g.shape} differ in shape")
    if valid is not None:
        keep = _as_masks(valid, "valid")
        m, g = m[keep], g[keep]
    g = g.reshape(-1)
    if g.all() or not g.any():
        warnings.warn(f"pixel AUROC undefined: no {'normal' if g.all() else 'anomalous'} pixel", stacklevel=2)
        return float("nan")
    return float(roc_auc_score(g, m.reshape(-1).astype(np.float64)))


def covering_edges(validation_edges: np.ndarray, test_values: Any, bins: int = _COVER_BINS) -> np.ndarray:
    """The validation edges merged with quantile edges of the (unlabeled) test values, from the test minimum to
    just above its maximum: no test value falls outside the edges, so no tail bin lumps out-of-range values.

    Placing edges by test *values* uses no test label (a ranking metric does not depend on where the edges sit,
    only on how finely they resolve it); each added bin holds at most about 1/``bins`` of the test pixels, which
    bounds the error of a binned curve (tested against exact curves out of the validation range).
    """
    v = _np(test_values).reshape(-1).astype(np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.asarray(validation_edges, dtype=np.float64)
    q = np.quantile(v, np.linspace(0.0, 1.0, bins + 1))
    top = np.nextafter(v.max(), np.inf)  # the maximum itself inside the last bin
    return np.unique(np.concatenate([np.asarray(validation_edges, dtype=np.float64), q, [top]]))


def per_image_histograms(maps: Any, gt_masks: Any, edges: np.ndarray,
                         valid: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the histogram of its normal and of its anomalous (valid) pixels over ``edges``: (N, bins) each.

    The state of a test-image bootstrap of pixel AUROC (:func:`bootstrap_pixel_auroc`).
    """
    m, g = _as_maps(maps, "maps"), _as_masks(gt_masks, "gt_masks")
    keep = np.ones_like(g) if valid is None else _as_masks(valid, "valid")
    bins = edges.size - 1
    idx = np.clip(np.searchsorted(edges, m, side="right") - 1, 0, bins - 1)
    n = m.shape[0]
    rows = np.broadcast_to(np.arange(n)[:, None, None], m.shape)
    normal = np.bincount((rows * bins + idx)[keep & ~g], minlength=n * bins).reshape(n, bins)
    anomalous = np.bincount((rows * bins + idx)[keep & g], minlength=n * bins).reshape(n, bins)
    return normal, anomalous


def auroc_from_histograms(normal: np.ndarray, anomalous: np.ndarray) -> np.ndarray:
    """AUROC of binned scores (ties within a bin count one half), over the last axis; any leading shape."""
    below = np.cumsum(normal, axis=-1) - normal  # normal pixels in lower bins
    num = (anomalous * (below + 0.5 * normal)).sum(axis=-1)
    den = anomalous.sum(axis=-1) * normal.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def bootstrap_pixel_auroc(normal: np.ndarray, anomalous: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Pixel AUROC of each bootstrap sample of test images.

    Args:
        normal, anomalous: :func:`per_image_histograms` (N, bins). draws: (R, N) non-negative integer weights: how often
        each image is drawn in each resample.

    Returns:
        (R,) AUROCs (binned on the histograms' edges).
    """
    w = draws.astype(np.float64)
    return auroc_from_histograms(w @ normal.astype(np.float64), w @ anomalous.astype(np.float64))
