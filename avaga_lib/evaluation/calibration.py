"""Label-free calibration of detection scores and anomaly maps (PROTOCOL_NOTES 8, issue 20), fitted on normal
validation images only, and its file ``calibration.json`` in a run folder.

One rule for every method and map (docs/PROTOCOL.md, "Measurement"): the image decision threshold is the
``eval.image_val_quantile`` quantile of the raw scores of the normal validation images, the pixel threshold the
``eval.val_quantile`` quantile of the run's own map over their pixels. Both are placed at 0.5 of the paper's
"normalised to [0, 1], threshold 0.5": scores map linearly from [validation min, image threshold] onto [0, 0.5],
maps by the factor 0.5 / pixel threshold (values clipped to [0, 1]). So ``calibrated > 0.5`` is ``raw > threshold``
for AVAGA's 1 - A, each remedy, the weak map and the autoencoders' residual maps alike. The paper's literal rule
(the attention map itself at 0.5) is scored beside it as ``iou_literal``. The transductive variant (min-max over
the unlabeled test scores) is computed by :func:`transductive_scores` and never stored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avaga_lib.io import read_json
from avaga_lib.run_folder import RunFolder


@dataclass(frozen=True)
class Calibration:
    """Label-free thresholds of scores and maps, fitted on normal validation images only (PN 8, issue 20).

    Attributes:
        score_lo: smallest raw score among the normal validation images (maps to 0). score_threshold: the
        ``image_quantile`` quantile of their raw scores (maps to 0.5, the decision threshold). pixel_threshold: the
        ``pixel_quantile`` quantile of the run's raw map over their pixels (maps to 0.5);
            None: maps are left as they are (a calibration fitted without maps).
        image_quantile: the quantile that placed ``score_threshold`` (``eval.image_val_quantile``). pixel_quantile: the
        quantile that placed ``pixel_threshold`` (``eval.val_quantile``). n_val: number of validation images used.
        source: ``"validation"`` (always; the transductive variant is never stored).
    """

    score_lo: float
    score_threshold: float
    pixel_threshold: float | None = None
    image_quantile: float = 1.0
    pixel_quantile: float = 1.0
    n_val: int = 0
    source: str = "validation"

    @property
    def span(self) -> float:
        """Denominator of the score normalisation (guarded when every validation score is equal)."""
        return max(self.score_threshold - self.score_lo, 1e-6 * max(abs(self.score_threshold), 1.0))

    def normalize_scores(self, raw: Any) -> np.ndarray:
        """Raw scores -> [0, 1]; [validation min, image threshold] becomes [0, 0.5]."""
        r = np.asarray(raw, dtype=np.float64)
        return np.clip(0.5 * (r - self.score_lo) / self.span, 0.0, 1.0)

    def normalize_maps(self, amap: torch.Tensor) -> torch.Tensor:
        """Raw maps (>= 0) -> [0, 1] with 0.5 at the pixel threshold; unchanged when none was fitted."""
        if self.pixel_threshold is None:
            return amap
        return (0.5 * amap / max(self.pixel_threshold, 1e-12)).clamp(0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``calibration.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`; also reads files written before issue 20 (``score_hi`` / ``map_scale``: the
        largest validation value placed at 0.5, i.e. the 1.0 quantile)."""
        d = dict(d)
        if "score_hi" in d:
            d["score_threshold"] = d.pop("score_hi")
            d["pixel_threshold"] = d.pop("map_scale", None)
        return cls(**d)


def fit_calibration(val_scores: Any, val_map_values: Any | None = None, image_quantile: float = 1.0,
                    pixel_quantile: float = 1.0) -> Calibration:
    """Fit the calibration on **normal validation images** (PN 8, issue 20).

    Args:
        val_scores: raw scores of the validation images (no test image, no label: the split is normal-only).
        val_map_values: values of the run's raw map on validation pixels (any shape); None: no map threshold.
        image_quantile: quantile of ``val_scores`` that becomes the image decision threshold. pixel_quantile: quantile
        of ``val_map_values`` that becomes the pixel threshold.

    Raises:
        ValueError: no validation score, a non-finite one, or a quantile outside (0, 1].
    """
    s = np.asarray(val_scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise ValueError("fit_calibration: no validation score (the normal validation split is empty)")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"fit_calibration: {int((~np.isfinite(s)).sum())} non-finite validation scores")
    for name, q in (("image_quantile", image_quantile), ("pixel_quantile", pixel_quantile)):
        if not 0.0 < q <= 1.0:
            raise ValueError(f"fit_calibration: {name}={q} must be in (0, 1]")
    pixel = None
    if val_map_values is not None:
        v = np.asarray(val_map_values, dtype=np.float64).reshape(-1)
        pixel = float(np.quantile(v, pixel_quantile)) if v.size else None
    return Calibration(float(s.min()), float(np.quantile(s, image_quantile)), pixel, float(image_quantile),
                       float(pixel_quantile), s.size)


def transductive_scores(test_raw: Any) -> np.ndarray:
    """Min-max of the unlabeled test scores onto [0, 1] (the flagged transductive variant, PN 8)."""
    r = np.asarray(test_raw, dtype=np.float64)
    lo, hi = float(r.min()), float(r.max())
    return (r - lo) / max(hi - lo, 1e-12)


def load_calibration(run_dir: Path | str) -> Calibration:
    """Read ``calibration.json`` of a run folder."""
    path = RunFolder(run_dir).calibration_path
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: evaluate the run first (evaluate_run + save_run write it)")
    return Calibration.from_dict(read_json(path))


__all__ = ["Calibration", "fit_calibration", "load_calibration", "transductive_scores"]
