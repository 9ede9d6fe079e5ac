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


# ---------------------------------------------------------------------------------------------------------------
# Training / evaluation figures of a run (issue 4): loss curves, score histograms, Fig.-2-like qualitative grid,
# and the per-image PNGs of the practitioner's path (predict.py).

_RED = np.array([255, 0, 0], dtype=np.float32)  # Fig. 2: anomalous attention map in red


def _hwc(image_u8: np.ndarray) -> np.ndarray:
    """(3,H,W) or (H,W,3) uint8 -> (H,W,3) uint8."""
    a = np.asarray(image_u8)
    return np.transpose(a, (1, 2, 0)) if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3) else a


def red_overlay(image_u8: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Image with the masked pixels tinted red (the paper's Fig. 2 rendering), (H,W,3) uint8.

    Args:
        image_u8: (3,H,W) or (H,W,3) uint8 image.
        mask: (H,W) bool (or {0,1}) predicted anomalous pixels.
        alpha: opacity of the red tint.
    """
    img = _hwc(image_u8).astype(np.float32)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    m = np.asarray(mask).astype(bool)[..., None]
    out = np.where(m, (1 - alpha) * img + alpha * _RED, img)
    return np.clip(out, 0, 255).astype(np.uint8)


def plot_loss_curves(history: Any, path: Path | str | None = None, title: str = "", close: bool = False) -> Any:
    """Per-epoch loss terms of a run (``losses.csv``), one small panel per term (their scales differ).

    Args:
        history: DataFrame with an ``epoch`` column and one column per loss term (``lr`` / ``time_s`` skipped).
        path: PNG to write (atomically); None = only return the figure.
        title: figure title (e.g. the run's setting name).
        close: close the figure after saving (batch use; notebooks keep it to display).

    Returns:
        The matplotlib figure.
    """
    import pandas as pd

    frame = pd.DataFrame(history)
    terms = [c for c in frame.columns if c not in ("epoch", "lr", "time_s")]
    n = max(1, len(terms))
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, term in zip(axes.flat, terms):
        ax.plot(frame["epoch"], frame[term], marker="o", ms=3)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    fig.suptitle(f"{title} loss terms (epoch means)".strip(), fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    if close:
        plt.close(fig)
    return fig


def plot_score_histogram(predictions: Any, threshold: float = 0.5, path: Path | str | None = None,
                         title: str = "", close: bool = False) -> Any:
    """Histograms of the detection scores of normal vs anomalous test images with the decision threshold.

    Panels: the validation-calibrated score (PN 8), the transductive score (flagged variant) and, in the weak
    setting, the classifier probability, whichever columns ``predictions`` holds.

    Args:
        predictions: ``predictions.csv`` frame (``label`` and ``score`` columns at least).
        threshold: the decision threshold drawn as a vertical line.
        path: PNG to write; None = only return the figure.
        title: figure title.
        close: close the figure after saving.
    """
    import pandas as pd

    frame = pd.DataFrame(predictions)
    panels = [(c, t) for c, t in (("score", "score (validation-calibrated)"),
                                  ("score_transductive", "score (transductive, flagged)"),
                                  ("prob_anomalous", "classifier P(anomalous)")) if c in frame.columns]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 2.8), squeeze=False)
    bins = np.linspace(0, 1, 26)
    for ax, (col, name) in zip(axes.flat, panels):
        for lab, colour, text in ((0, "tab:blue", "normal"), (1, "tab:red", "anomalous")):
            v = frame.loc[frame["label"] == lab, col].dropna().to_numpy(dtype=float)
            ax.hist(np.clip(v, 0, 1), bins=bins, alpha=0.6, color=colour, label=f"{text} (n={v.size})")
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("value", fontsize=8)
        ax.tick_params(labelsize=7)
    axes.flat[0].set_ylabel("test images", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{title} detection scores".strip(), fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    if close:
        plt.close(fig)
    return fig


def plot_qualitative_grid(examples: dict[str, Any], path: Path | str | None = None, title: str = "",
                          max_columns: int = 12, close: bool = False) -> Any:
    """Qualitative grid like the paper's Fig. 2: input, ground truth, anomalous map in red over the image.

    Rows: input image; ground-truth mask (red over the image); predicted anomalous pixels (map > threshold, red over
    the image); the continuous anomaly map. One column per example (a few per defect type, from
    ``EvalResult.examples``).

    Args:
        examples: dict with ``image`` (K,3,H,W) uint8, ``gt`` (K,H,W), ``map`` (K,H,W) uint8 (255 = 1.0),
            ``pred`` (K,H,W) bool, ``defect`` list of K names.
        path: PNG to write; None = only return the figure.
        title: figure title.
        max_columns: at most this many examples are drawn.
        close: close the figure after saving.
    """
    k = min(len(examples["defect"]), max_columns)
    row_names = ("input", "ground truth", "predicted (red)", "anomaly map")
    fig, axes = plt.subplots(len(row_names), max(k, 1), figsize=(1.6 * max(k, 1), 1.7 * len(row_names)),
                             squeeze=False)
    for j in range(k):
        img = _hwc(examples["image"][j])
        panels = (img, red_overlay(img, examples["gt"][j]), red_overlay(img, examples["pred"][j]),
                  examples["map"][j])
        for i, panel in enumerate(panels):
            ax = axes[i, j]
            if i == 3:
                ax.imshow(panel, cmap="inferno", vmin=0, vmax=255)
            else:
                ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row_names[i], fontsize=8)
        axes[0, j].set_title(str(examples["defect"][j]), fontsize=8)
    fig.suptitle(f"{title} qualitative results (Fig. 2 style)".strip(), fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    if close:
        plt.close(fig)
    return fig


def save_map_png(amap01: np.ndarray, path: Path | str) -> Path:
    """Write an anomaly map in [0, 1] as an 8-bit grey PNG (255 = 1.0), atomically."""
    from PIL import Image

    from avaga_lib.io import atomic_write

    a = (np.clip(np.asarray(amap01, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)
    return atomic_write(path, lambda p: Image.fromarray(a).save(p, format="PNG"))


def save_overlay_png(image_u8: np.ndarray, mask: np.ndarray, path: Path | str) -> Path:
    """Write the image with its predicted anomalous pixels in red (Fig. 2 rendering) as a PNG, atomically."""
    from PIL import Image

    from avaga_lib.io import atomic_write

    rgb = red_overlay(image_u8, mask)
    return atomic_write(path, lambda p: Image.fromarray(rgb).save(p, format="PNG"))
