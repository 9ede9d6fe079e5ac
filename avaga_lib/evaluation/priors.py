"""Position priors: anomaly maps that know *where* defects tend to be and nothing about the image (issue 13).

A method is credited with localization only when it beats these. Both are label-free: built from the geometry and
from the run's own maps of the **normal validation images**, never from a test image or mask.

* :func:`center_gaussian`: a centred isotropic Gaussian, sigma = side / 4 (the same map for every image).
* :class:`MeanMap`: the mean anomaly map of the normal validation images (per pixel, over the images where that
  pixel is content: letterbox padding is left out), again the same map for every test image.

:mod:`avaga_lib.evaluation.localization` scores them exactly like a method's map (pixel AUROC, AUPRO, IoU at the
label-free threshold). Pure numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["CENTER_SIGMA_FRACTION", "PRIORS", "MeanMap", "center_gaussian"]

CENTER_SIGMA_FRACTION = 0.25  # sigma of the centred Gaussian as a fraction of the (square) input side
PRIORS: tuple[str, ...] = ("center", "mean")  # metrics.json keys prior_<name>_*


def center_gaussian(height: int, width: int, sigma_fraction: float = CENTER_SIGMA_FRACTION) -> np.ndarray:
    """A centred Gaussian bump, 1 at the centre: exp(-d^2 / (2 sigma^2)), sigma = ``sigma_fraction`` x the side.

    Args:
        height, width: map shape (the model's input side; the side is their minimum). sigma_fraction: sigma / side
        (0.25, issue 13).

    Returns:
        float32 (height, width) in (0, 1].
    """
    if height < 1 or width < 1 or sigma_fraction <= 0:
        raise ValueError(f"center_gaussian: need height, width >= 1 and sigma_fraction > 0, got "
                         f"{height}, {width}, {sigma_fraction}")
    sigma = sigma_fraction * min(height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    d2 = (yy - (height - 1) / 2.0) ** 2 + (xx - (width - 1) / 2.0) ** 2
    return np.exp(-d2 / (2.0 * sigma**2)).astype(np.float32)


class MeanMap:
    """Running per-pixel mean of anomaly maps of normal validation images (the ``mean`` position prior).

    Feed it batch by batch with :meth:`update`; :meth:`result` gives the map. Pixels that are padding on every
    image get the mean of the others (they are never scored anyway).
    """

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self._count: np.ndarray | None = None

    def update(self, maps: Any, valid: Any | None = None) -> None:
        """Add a batch.

        Args:
            maps: (B,H,W) float maps (numpy, or a CPU torch tensor). valid: optional (B,H,W) bool, False on letterbox
            padding (left out of the mean).
        """
        m = np.asarray(maps, dtype=np.float64)
        if m.ndim != 3:
            raise ValueError(f"MeanMap.update: expected maps of shape (B,H,W), got {m.shape}")
        v = np.ones(m.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        if v.shape != m.shape:
            raise ValueError(f"MeanMap.update: valid {v.shape} and maps {m.shape} differ in shape")
        if self._sum is None:
            self._sum, self._count = np.zeros(m.shape[1:]), np.zeros(m.shape[1:])
        if self._sum.shape != m.shape[1:]:
            raise ValueError(f"MeanMap.update: maps of side {m.shape[1:]} after {self._sum.shape}")
        self._sum += np.where(v, m, 0.0).sum(axis=0)
        self._count += v.sum(axis=0)

    @property
    def n_pixels(self) -> int:
        """Number of (valid) pixels averaged so far, over all positions."""
        return 0 if self._count is None else int(self._count.sum())

    def result(self) -> np.ndarray:
        """The mean map, float32 (H,W).

        Raises:
            ValueError: nothing was added (no normal validation image).
        """
        if self._sum is None or self._count is None or self._count.sum() == 0:
            raise ValueError("MeanMap: no validation map added (the normal validation split is empty)")
        seen = self._count > 0
        out = np.full(self._sum.shape, self._sum[seen].sum() / self._count[seen].sum())
        out[seen] = self._sum[seen] / self._count[seen]
        return out.astype(np.float32)

    def support(self) -> np.ndarray:
        """bool (H,W): the pixels that were content on at least one validation image."""
        if self._count is None:
            raise ValueError("MeanMap: no validation map added")
        return self._count > 0
