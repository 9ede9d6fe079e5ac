"""Label-free calibration of detection scores and baseline maps (PROTOCOL_NOTES 8), fitted on normal validation
images only, and its file ``calibration.json`` in a run folder.

The validation range [min, max] of the raw scores maps linearly onto [0, 0.5], so the decision threshold 0.5 sits
at the largest normal validation score (values clipped to [0, 1]); baseline residual maps are divided by twice
their largest validation value. The transductive variant (min-max over the unlabeled test scores) is computed by
:func:`transductive_scores` and never stored. See :mod:`avaga_lib.evaluate` for the whole protocol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avaga_lib.io import read_json

CALIBRATION_NAME = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    """Label-free normalisation of scores and maps, fitted on normal validation images only (PN 8).

    Attributes:
        score_lo: smallest raw score among the normal validation images.
        score_hi: largest raw score among them (maps to 0.5, the decision threshold).
        map_scale: baselines: largest residual-map value over the validation pixels (maps to 0.5); None for AVAGA
            (its attention maps are already in [0, 1]).
        n_val: number of validation images used.
        source: ``"validation"`` (always; the transductive variant is never stored).
    """

    score_lo: float
    score_hi: float
    map_scale: float | None = None
    n_val: int = 0
    source: str = "validation"

    @property
    def span(self) -> float:
        """Denominator of the score normalisation (guarded when every validation score is equal)."""
        return max(self.score_hi - self.score_lo, 1e-6 * max(abs(self.score_hi), 1.0))

    def normalize_scores(self, raw: Any) -> np.ndarray:
        """Raw scores -> [0, 1]; the validation range [lo, hi] becomes [0, 0.5]."""
        r = np.asarray(raw, dtype=np.float64)
        return np.clip(0.5 * (r - self.score_lo) / self.span, 0.0, 1.0)

    def normalize_maps(self, amap: torch.Tensor) -> torch.Tensor:
        """Baseline residual maps -> [0, 1] with 0.5 at the largest validation value; AVAGA maps unchanged."""
        if self.map_scale is None:
            return amap
        return (0.5 * amap / max(self.map_scale, 1e-12)).clamp(0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``calibration.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


def fit_calibration(val_scores: Any, val_map_max: float | None = None) -> Calibration:
    """Fit the detection-score calibration on raw scores of **normal validation images** (PN 8).

    Args:
        val_scores: raw scores of the validation images (no test image, no label: the split is normal-only).
        val_map_max: baselines: largest residual-map value over the validation images; None for AVAGA.

    Raises:
        ValueError: no validation score, or a non-finite one.
    """
    s = np.asarray(val_scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise ValueError("fit_calibration: no validation score (the normal validation split is empty)")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"fit_calibration: {int((~np.isfinite(s)).sum())} non-finite validation scores")
    return Calibration(float(s.min()), float(s.max()), None if val_map_max is None else float(val_map_max), s.size)


def transductive_scores(test_raw: Any) -> np.ndarray:
    """Min-max of the unlabeled test scores onto [0, 1] (the flagged transductive variant, PN 8)."""
    r = np.asarray(test_raw, dtype=np.float64)
    lo, hi = float(r.min()), float(r.max())
    return (r - lo) / max(hi - lo, 1e-12)


def load_calibration(run_dir: Path | str) -> Calibration:
    """Read ``calibration.json`` of a run folder."""
    path = Path(run_dir) / CALIBRATION_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: evaluate the run first (evaluate_run + save_run write it)")
    return Calibration.from_dict(read_json(path))


__all__ = ["CALIBRATION_NAME", "Calibration", "fit_calibration", "load_calibration", "transductive_scores"]
