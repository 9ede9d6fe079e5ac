"""Every figure of the study (matplotlib / seaborn): the only module that draws.

Each function returns the matplotlib Figure and, given ``path``, saves it (PNG) atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np


def _save(fig: Any, path: Path | str | None, dpi: int = 120) -> None:
    if path is not None:
        from avaga_lib.io import atomic_write

        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi, bbox_inches="tight"))


# ------------------------------------------------------------------------------------------------ data (issue 2)
def plot_sample_grid(
    dataset: Any,
    n_normal: int = 4,
    n_anomalous: int = 8,
    seed: int = 0,
    title: str | None = None,
    path: Path | str | None = None,
) -> Any:
    """Grid of normal and anomalous images of an :class:`~avaga_lib.data.AnomalyDataset`, masks overlaid in red.

    Args:
        dataset: an ``AnomalyDataset`` (uses its ``images``, ``masks``, ``labels``, ``defects``).
        n_normal: normal images shown (first row(s)).
        n_anomalous: anomalous images shown, spread over defect types.
        seed: which images are picked.
        title: figure title.
        path: PNG to write (optional).
    """
    rng = np.random.default_rng(seed)
    labels = dataset.labels.numpy()
    normal = np.flatnonzero(labels == 0)
    normal = rng.permutation(normal)[:n_normal].tolist()
    by_defect: dict[str, list[int]] = {}
    for i in rng.permutation(np.flatnonzero(labels == 1)).tolist():
        by_defect.setdefault(dataset.defects[i], []).append(i)
    anomalous: list[int] = []
    while len(anomalous) < n_anomalous and any(by_defect.values()):  # round-robin over defect types
        for d in sorted(by_defect):
            if by_defect[d] and len(anomalous) < n_anomalous:
                anomalous.append(by_defect[d].pop())
    idx = normal + anomalous
    cols = 4
    rows = max(1, -(-len(idx) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, idx):
        img = dataset.images[i].permute(1, 2, 0).numpy()
        ax.imshow(img)
        mask = dataset.masks[i, 0].numpy()
        if mask.any():
            overlay = np.zeros((*mask.shape, 4), np.float32)
            overlay[mask > 0] = (1.0, 0.0, 0.0, 0.45)  # translucent red: the defect stays visible beneath
            ax.imshow(overlay)
            ax.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"{dataset.defects[i]}" + (f" ({mask.mean():.1%})" if mask.any() else ""), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    return fig
