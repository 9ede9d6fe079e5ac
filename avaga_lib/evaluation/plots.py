"""Every figure of the study (matplotlib / seaborn): the only module that draws.

Each function returns the matplotlib Figure and, given ``path``, saves it (PNG) atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from avaga_lib.io import atomic_write


def _save(fig: Any, path: Path | str | None, dpi: int = 120, close: bool = False) -> None:
    """Write ``fig`` as PNG atomically when ``path`` is given; ``close`` frees it (batch use, not notebooks)."""
    if path is not None:
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi, bbox_inches="tight"))
    if close:
        plt.close(fig)


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
        dataset: an ``AnomalyDataset`` (uses its ``images``, ``masks``, ``labels``, ``defects``). n_normal: normal
        images shown (first row(s)). n_anomalous: anomalous images shown, spread over defect types. seed: which images
        are picked. title: figure title. path: PNG to write (optional).
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
        image_u8: (3,H,W) or (H,W,3) uint8 image. mask: (H,W) bool (or {0,1}) predicted anomalous pixels.
        alpha: opacity of the red tint.
    """
    img = _hwc(image_u8).astype(np.float32)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    m = np.asarray(mask).astype(bool)[..., None]
    out = np.where(m, (1 - alpha) * img + alpha * _RED, img)
    return np.clip(out, 0, 255).astype(np.uint8)


def plot_loss_curves(history: Any, path: Path | str | None = None, title: str = "", close: bool = False,
                     terms: Any = None) -> Any:
    """Per-epoch loss terms of a run (``losses.csv``), one small panel per term (their scales differ).

    Args:
        history: DataFrame with an ``epoch`` column and one column per loss term (``lr`` / ``time_s`` skipped), or a
            dict label -> such frame: one line per label in every panel (runs side by side, e.g. the remedies).
        path: PNG to write (atomically); None = only return the figure. title: figure title (e.g. the run's setting
        name). close: close the figure after saving (batch use; notebooks keep it to display). terms: the columns to
        draw, in order (absent ones skipped; e.g. ``losses.COLLAPSE_TERMS``); None = all.

    Returns:
        The matplotlib figure.
    """
    frames = {k: pd.DataFrame(v) for k, v in (history if isinstance(history, dict) else {"": history}).items()}
    present = [c for f in frames.values() for c in f.columns if c not in ("epoch", "lr", "time_s")]
    terms = list(dict.fromkeys(present)) if terms is None else [t for t in terms if t in present]
    n = max(1, len(terms))
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, term in zip(axes.flat, terms):
        for label, frame in frames.items():
            if term in frame.columns:
                ax.plot(frame["epoch"], frame[term], marker="o", ms=3, label=label or None)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    if len(frames) > 1:
        axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"{title} loss terms (epoch means)".strip(), fontsize=10)
    fig.tight_layout()
    _save(fig, path, close=close)
    return fig


def plot_score_histogram(predictions: Any, threshold: float = 0.5, path: Path | str | None = None,
                         title: str = "", close: bool = False) -> Any:
    """Histograms of the detection scores of normal vs anomalous test images with the decision threshold.

    Panels: the validation-calibrated score (PN 8), the transductive score (flagged variant) and, in the weak
    setting, the classifier probability, whichever columns ``predictions`` holds.

    Args:
        predictions: ``predictions.csv`` frame (``label`` and ``score`` columns at least). threshold: the decision
        threshold drawn as a vertical line. path: PNG to write; None = only return the figure. title: figure title.
        close: close the figure after saving.
    """
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
    _save(fig, path, close=close)
    return fig


def plot_qualitative_grid(examples: dict[str, Any], path: Path | str | None = None, title: str = "",
                          max_columns: int = 12, close: bool = False) -> Any:
    """Qualitative grid like the paper's Fig. 2: input, ground truth, predicted pixels, the anomaly map.

    Rows: input image; ground-truth mask; predicted anomalous pixels (map > threshold); the continuous anomaly map.
    The mask rows are drawn over a grey copy of the input, outlined and tinted in colours a grey image cannot hold
    (:data:`GT_COLOUR`, :data:`PRED_COLOUR`): a red defect in the input is never read as a prediction (issue 23), and
    an empty row says "no pixel above threshold" instead of showing the bare input. One column per example (a few per
    defect type, from ``EvalResult.examples``).

    Args:
        examples: dict with ``image`` (K,3,H,W) uint8, ``gt`` (K,H,W), ``map`` (K,H,W) uint8 (255 = 1.0),
            ``pred`` (K,H,W) bool, ``defect`` list of K names.
        path: PNG to write; None = only return the figure. title: figure title. max_columns: at most this many examples
        are drawn. close: close the figure after saving.
    """
    k = min(len(examples["defect"]), max_columns)
    row_names = ("input", f"ground truth ({GT_COLOUR})", f"predicted ({PRED_COLOUR})", "anomaly map")
    fig, axes = plt.subplots(len(row_names), max(k, 1), figsize=(1.6 * max(k, 1), 1.7 * len(row_names)),
                             squeeze=False)
    for j in range(k):
        img = _hwc(examples["image"][j])
        for i in range(len(row_names)):
            ax = axes[i, j]
            if i == 0:
                ax.imshow(img)
            elif i == 3:
                ax.imshow(examples["map"][j], cmap="inferno", vmin=0, vmax=255)
            else:
                gt = i == 1
                _outlined(ax, img, examples["gt" if gt else "pred"][j], GT_COLOUR if gt else PRED_COLOUR,
                          "no mask" if gt else "no pixel\nabove threshold")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row_names[i], fontsize=8)
        axes[0, j].set_title(str(examples["defect"][j]), fontsize=8)
    fig.suptitle(f"{title} qualitative results (Fig. 2 style)".strip(), fontsize=10)
    fig.tight_layout()
    _save(fig, path, close=close)
    return fig


GT_COLOUR = "lime"  # ground truth in the qualitative grid: saturated, so absent from the grey copy it is drawn on
PRED_COLOUR = "cyan"  # predicted anomalous pixels: saturated too, and distinct from the ground truth's green


def _outlined(ax: Any, image: np.ndarray, mask: np.ndarray, colour: str, empty: str) -> None:
    """A mask over a grey copy of ``image``: tinted and outlined in ``colour``; ``empty`` written when no pixel is
    set (an empty row would otherwise look like the bare input)."""
    grey = image.astype(np.float32).mean(axis=-1) if image.ndim == 3 else image.astype(np.float32)
    ax.imshow(grey, cmap="gray", vmin=0, vmax=255)
    m = np.asarray(mask).astype(bool)
    if not m.any():
        ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", fontsize=6, color="white",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 2, "linewidth": 0})
        return
    rgba = np.zeros((*m.shape, 4), dtype=np.float32)
    rgba[m] = (*matplotlib.colors.to_rgb(colour), 0.35)  # translucent: the image stays visible beneath
    ax.imshow(rgba)
    ax.contour(m.astype(np.float32), levels=[0.5], colors=[colour], linewidths=0.8)


def save_map_png(amap01: np.ndarray, path: Path | str) -> Path:
    """Write an anomaly map in [0, 1] as an 8-bit grey PNG (255 = 1.0), atomically."""
    a = (np.clip(np.asarray(amap01, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)
    return atomic_write(path, lambda p: Image.fromarray(a).save(p, format="PNG"))


def save_overlay_png(image_u8: np.ndarray, mask: np.ndarray, path: Path | str) -> Path:
    """Write the image with its predicted anomalous pixels in red (Fig. 2 rendering) as a PNG, atomically."""
    rgb = red_overlay(image_u8, mask)
    return atomic_write(path, lambda p: Image.fromarray(rgb).save(p, format="PNG"))


# ------------------------------------------------------------------------------------- report figures (issue 5)


def plot_ours_vs_paper(table: Any, methods: Any, metric_label: str = "IoU", path: Path | str | None = None,
                       title: str = "", close: bool = False) -> Any:
    """Grouped bars per category: our mean (± seed std) beside the paper's value for each method.

    Args:
        table: ``report.Table.frame`` (wide: ``<method>``, ``<method>_std``, optionally ``<method>_paper``).
        methods: columns to draw (methods absent from the frame are skipped). metric_label: y-axis label.
        path: PNG to write; None = only return the figure. title: figure title. close: close the figure after saving.
    """
    import seaborn as sns  # lazy: seaborn (+ scipy.stats) takes seconds to import; only this report figure uses it

    rows = []
    for _, r in table.iterrows():
        for m in methods:
            if m not in table.columns:
                continue
            rows.append({"category": r["category"], "method": m, "source": "ours", "value": r[m],
                         "std": r.get(f"{m}_std", np.nan)})
            if f"{m}_paper" in table.columns:
                rows.append({"category": r["category"], "method": m, "source": "paper", "value": r[f"{m}_paper"],
                             "std": np.nan})
    long = pd.DataFrame(rows)
    cats = list(dict.fromkeys(table["category"]))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(cats) * max(1, len(methods)) ** 0.5), 3.6))
    if long.empty:
        ax.text(0.5, 0.5, "no measured values", ha="center", va="center")
        _save(fig, path)
        return fig
    long["series"] = long["method"] + " (" + long["source"] + ")"
    order = [f"{m} ({s})" for m in methods for s in ("ours", "paper") if f"{m} ({s})" in set(long["series"])]
    palette = {}
    base = sns.color_palette("tab10", n_colors=max(len(methods), 1))
    for i, m in enumerate(methods):
        palette[f"{m} (ours)"] = base[i % len(base)]
        palette[f"{m} (paper)"] = tuple(0.55 + 0.45 * c for c in base[i % len(base)])  # paler: quoted value
    sns.barplot(data=long, x="category", y="value", hue="series", hue_order=order, order=cats, palette=palette,
                ax=ax, errorbar=None)
    # seed std as error bars on "ours" (seaborn would recompute spread from rows; we have aggregated values)
    for container, series in zip(ax.containers, order):
        if not series.endswith("(ours)"):
            continue
        sub = long[long["series"] == series].set_index("category")
        for bar, cat in zip(container, cats):
            std = sub["std"].get(cat, np.nan) if cat in sub.index else np.nan
            if np.isfinite(std):
                ax.errorbar(bar.get_x() + bar.get_width() / 2, bar.get_height(), yerr=std, color="black",
                            capsize=2, lw=0.8)
    ax.set_ylabel(metric_label)
    ax.set_xlabel("")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or f"{metric_label}: ours vs paper", fontsize=10)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    _save(fig, path, close=close)
    return fig


def plot_threshold_curves(curves: Any, path: Path | str | None = None, title: str = "", close: bool = False) -> Any:
    """IoU vs threshold per attention normalization (PN 2) and accuracy vs threshold per calibration (PN 8).

    Args:
        curves: ``report.ThresholdStudy.curves``. path: PNG to write; None = only return the figure.
        title: figure title. close: close the figure after saving.
    """
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for norm, grp in curves.groupby("norm", sort=False):
        axes[0].plot(grp["threshold"], grp["iou"], marker="o", ms=3, label=norm)
        axes[1].plot(grp["threshold"], grp["fp_area"], marker="o", ms=3, label=norm)
    first = curves[curves["norm"] == curves["norm"].iloc[0]]
    axes[2].plot(first["threshold"], first["acc_validation"], marker="o", ms=3, label="validation (default, PN 8)")
    axes[2].plot(first["threshold"], first["acc_transductive"], marker="s", ms=3, ls="--",
                 label="transductive (flagged)")
    for ax, ylabel in zip(axes, ("mean IoU (anomalous images)", "flagged area of normal images",
                                 "mean accuracy")):
        ax.axvline(0.5, color="grey", lw=0.8, ls=":")
        ax.axvspan(0.2, 0.6, color="grey", alpha=0.08)  # Table 7 range
        ax.set_xlabel("threshold")
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
    fig.suptitle(title or "threshold study", fontsize=10)
    fig.tight_layout()
    _save(fig, path, close=close)
    return fig


def plot_threshold_masks(examples: dict[str, Any], norm: str, threshold: float, path: Path | str | None = None,
                         close: bool = False) -> Any:
    """Predicted masks (map > threshold, red) and ground truth for a few anomalous images (the slider's view).

    Args:
        examples: ``report.ThresholdStudy.examples``. norm: which normalization's maps to threshold.
        threshold: the threshold. path: PNG to write; None = only return the figure. close: close the figure after
        saving.
    """
    maps = examples["maps"][norm]
    k = len(maps)
    fig, axes = plt.subplots(2, max(k, 1), figsize=(1.7 * max(k, 1), 3.6), squeeze=False)
    for j in range(k):
        img = _hwc(examples["image"][j])
        pred = maps[j] > threshold
        gt = examples["gt"][j].astype(bool)
        inter, union = (pred & gt).sum(), (pred | gt).sum()
        axes[0, j].imshow(red_overlay(img, gt))
        axes[1, j].imshow(red_overlay(img, pred))
        axes[0, j].set_title(str(examples["defect"][j]), fontsize=8)
        axes[1, j].set_title(f"IoU {inter / union:.2f}" if union else "IoU n/a", fontsize=8)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("ground truth", fontsize=8)
    axes[1, 0].set_ylabel(f"{norm} > {threshold:.2f}", fontsize=8)
    fig.tight_layout()
    _save(fig, path, close=close)
    return fig


def plot_image_files_grid(paths: Any, titles: Any, path: Path | str | None = None, columns: int = 1,
                          width: float = 12.0, close: bool = False) -> Any:
    """Stack saved figures (e.g. each run's ``fig_qualitative.png``) into one figure, one panel per file.

    Args:
        paths: PNG files to show (missing files get an empty panel saying so). titles: one title per file.
        path: PNG to write; None = only return the figure. columns: panels per row. width: figure width in inches.
        close: close the figure after saving.
    """
    paths = list(paths)
    n = max(len(paths), 1)
    rows = (n + columns - 1) // columns
    images = [np.asarray(Image.open(p).convert("RGB")) if Path(p).exists() else None for p in paths]
    heights = [im.shape[0] / im.shape[1] if im is not None else 0.3 for im in images] or [0.3]
    fig, axes = plt.subplots(rows, columns, figsize=(width, width / columns * max(heights) * rows + 0.4 * rows),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (im, t) in enumerate(zip(images, titles)):
        ax = axes[i // columns, i % columns]
        if im is None:
            ax.text(0.5, 0.5, f"missing: {paths[i]}", ha="center", va="center", fontsize=7)
        else:
            ax.imshow(im)
        ax.set_title(str(t), fontsize=9)
    fig.tight_layout()
    _save(fig, path, close=close)
    return fig


# ------------------------------------------------------------------------------------------------ model (issue 3)
def plot_model_forward(
    images: Any, recons: Any, attention: Any, amaps: Any, path: Path | str | None = None, title: str = "",
    close: bool = False,
) -> Any:
    """One row per image: input, reconstruction, attention map A, anomalous map 1 - A (Fig. 1 of the paper).

    Args:
        images, recons: float arrays / tensors (N, 3, H, W) in [0, 1]. attention, amaps: float arrays / tensors (N, 1,
        H, W) in [0, 1].
    """
    cols = (("input", images), ("reconstruction", recons), ("attention A", attention), ("anomalous map", amaps))
    arrays = [np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=np.float32) for _, a in cols]
    n = arrays[0].shape[0]
    fig, axes = plt.subplots(n, 4, figsize=(8, 2 * n), squeeze=False)
    for i in range(n):
        for j, ((name, _), arr) in enumerate(zip(cols, arrays)):
            ax = axes[i, j]
            if arr.shape[1] == 3:
                ax.imshow(np.clip(arr[i].transpose(1, 2, 0), 0, 1))
            else:
                ax.imshow(arr[i, 0], cmap="jet", vmin=0.0, vmax=1.0)  # fixed [0, 1] scale: maps are comparable
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path, close=close)
    return fig
