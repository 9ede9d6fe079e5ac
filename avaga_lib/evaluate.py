"""Evaluation of a trained run the paper's way (threshold 0.5) and the modern way (threshold-free), label-free.

Protocol (PROTOCOL_NOTES 8-11, 16):

* **Detection score.** Raw score = mean |x - x_hat| (AVAGA) or ``baselines.image_score`` of the residual map.
  It is normalised by a :class:`Calibration` fitted on the **normal validation split only**
  (:func:`fit_calibration`): the validation range [min, max] maps linearly onto [0, 0.5], so the decision
  threshold 0.5 sits at the largest normal validation score and a test image is called anomalous when its score
  exceeds every normal validation score (values are clipped to [0, 1]). A plain min-max onto [0, 1] would put the
  threshold in the *middle* of the normal range and call about half of the normal images anomalous by
  construction; the half-range is our reading of "normalised to [0, 1], threshold 0.5" (documented deviation).
  No test label or test score touches it (tested by shuffling test labels). The **transductive** variant (min-max
  over the unlabeled test scores onto [0, 1], threshold 0.5, the paper's literal reading) is reported beside it as
  ``mean_accuracy_transductive`` and flagged in ``metrics.json`` because it depends on the test set.
* **Maps.** AVAGA_u: 1 - A; AVAGA_w: A^{c_a}, gated by the classifier (an image called normal gets an empty
  predicted mask, PN 4; the ungated map feeds the threshold-free pixel metrics). Baselines: the residual map
  divided by twice the largest residual seen on the normal validation images (so again 0.5 = largest normal
  validation value), clipped to [0, 1]. Predicted mask = map > 0.5 (strict, :func:`avaga_lib.metrics.binarize`).
* **Detection decision.** AVAGA_u and baselines: calibrated score > 0.5. AVAGA_w: the classifier (PN 4); the
  calibrated-score decision is reported as ``mean_accuracy_score``.

Memory: test images are streamed in batches; per-image IoU at every Table-7 threshold, pooled intersections and
unions and false-positive areas are accumulated per batch, and pixel AUROC / AUPRO use the streamed
:class:`avaga_lib.metrics.PixelMetricAccumulator` (fixed bins). The only maps kept are a few uint8-quantised
examples per defect type for the qualitative figure (``EvalResult.examples``), so a full MVTec category at 256 px
stays far below 2 GiB. Baselines additionally keep a strided subsample (every 4th pixel) of the *validation* maps
to place the accumulator's bin edges.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from avaga_lib import metrics as M
from avaga_lib.config import RunConfig
from avaga_lib.io import read_json, write_csv, write_json
from avaga_lib.runtime import amp_dtype, autocast, iterate_batches
from avaga_lib.train import baseline_kind

CALIBRATION_NAME = "calibration.json"
TRANSDUCTIVE_FLAG = (
    "mean_accuracy_transductive normalises scores by min-max over the unlabeled TEST scores (label-free but "
    "test-dependent, PROTOCOL_NOTES 8); the default mean_accuracy uses the normal validation split only"
)
_EVAL_BATCH = 16  # images per inference batch (memory bound at 256 px on CPU)
_VAL_PIXEL_STRIDE = 4  # baselines: every 4th validation pixel places the bin edges (memory bound)
_MAP_UPPER = 2.0  # baselines: residual maps never exceed 2 (L2 <= 1, 1 - SSIM <= 2); top of the pixel bins


# --------------------------------------------------------------------------------------------------- calibration


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


# ------------------------------------------------------------------------------------------------------ results


@dataclass
class EvalResult:
    """What :func:`evaluate_run` returns.

    Attributes:
        metrics: the ``metrics.json`` dict (NaN = unavailable; written as null).
        predictions: one row per test image (path, label, defect, score, pred_label, iou, ...).
        calibration: the validation calibration used.
        examples: a few images per defect type for the qualitative figure: ``image`` uint8 (K,3,H,W), ``gt``
            uint8 (K,H,W), ``map`` uint8 (K,H,W) = round(255 * map), ``pred`` bool (K,H,W), ``path``, ``defect``,
            ``label`` lists.
        val_scores: raw validation scores (for the histogram).
        wall_time_s: seconds spent evaluating.
    """

    metrics: dict[str, Any]
    predictions: pd.DataFrame
    calibration: Calibration
    examples: dict[str, Any] = field(default_factory=dict)
    val_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    wall_time_s: float = 0.0


@dataclass
class _Batch:
    recon: torch.Tensor
    score_raw: torch.Tensor  # (B,)
    amap: torch.Tensor  # (B,H,W) normalised map in [0, 1] (AVAGA: as inferred; baselines: calibrated)
    raw_map: torch.Tensor  # (B,H,W) map before calibration (== amap for AVAGA)
    prob: torch.Tensor | None  # (B,) classifier probability of c_a (weak) or None


def infer_batch(cfg: RunConfig, model: nn.Module, x: torch.Tensor, calibration: Calibration | None) -> _Batch:
    """Reconstruction, raw score and anomaly map of a batch (AVAGA via attention.infer, baselines via residuals)."""
    dtype = amp_dtype(cfg.train.amp, x.device)
    if cfg.method == "avaga":
        from avaga_lib.attention import infer

        with autocast(x.device, dtype):
            inf = infer(model, x, cfg.model, cfg.train.setting)
        amap = inf.amap.float()[:, 0]
        prob = None if inf.prob_anomalous is None else inf.prob_anomalous.float()
        return _Batch(inf.recon.float(), inf.score_raw.float(), amap, amap, prob)
    from avaga_lib.baselines import anomaly_map, image_score

    kind = baseline_kind(cfg.method)
    model.eval()
    with torch.no_grad(), autocast(x.device, dtype):
        recon = model(x).float()
    with torch.no_grad():
        raw = anomaly_map(kind, x, recon).float()
        if raw.ndim == 4:
            raw = raw[:, 0]
        score = image_score(raw).float().reshape(-1)
    amap = raw if calibration is None else calibration.normalize_maps(raw)
    return _Batch(recon, score, amap, raw, None)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _to_device(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    nb = device.type == "cuda"
    src = images_u8.pin_memory() if nb else images_u8
    return src.to(device, non_blocking=nb).float() / 255.0


def calibrate(cfg: RunConfig, model: nn.Module, val_records: list[Any], device: torch.device) -> tuple[
    Calibration, np.ndarray, np.ndarray | None
]:
    """Fit the calibration on the normal validation records only.

    Returns:
        (calibration, raw validation scores, strided validation map values for baselines or None).
    """
    from avaga_lib.data import AnomalyDataset

    if not val_records:
        raise ValueError(f"no normal validation image for {cfg.data.category}: the calibration (PN 8) needs "
                         f"data.val_fraction > 0 and at least 2 training images")
    if any(getattr(r, "label", 0) != 0 for r in val_records):
        raise ValueError("the validation split must hold normal images only (PN 8)")
    ds = AnomalyDataset(val_records, cfg.data.image_size, train=False, has_masks=False)
    scores: list[np.ndarray] = []
    samples: list[np.ndarray] = []
    map_max = -math.inf
    for sl in iterate_batches(len(ds), _EVAL_BATCH):
        b = infer_batch(cfg, model, _to_device(ds.images[sl], device), None)
        scores.append(b.score_raw.cpu().numpy())
        if cfg.method != "avaga":
            map_max = max(map_max, float(b.raw_map.max()))
            samples.append(b.raw_map[:, ::_VAL_PIXEL_STRIDE, ::_VAL_PIXEL_STRIDE].cpu().numpy().reshape(-1))
    val_scores = np.concatenate(scores)
    cal = fit_calibration(val_scores, map_max if cfg.method != "avaga" else None)
    return cal, val_scores, (np.concatenate(samples) if samples else None)


def _pixel_accumulator(cfg: RunConfig, cal: Calibration, val_samples: np.ndarray | None) -> M.PixelMetricAccumulator:
    """AVAGA maps live in [0, 1]: uniform bins. Baseline raw residual maps: quantiles of normal validation pixels
    up to their max, then uniform bins to the top of the possible range (no test data used; raw units, so the
    calibration's clipping does not create ties above the validation max)."""
    if cfg.method == "avaga" or val_samples is None:
        return M.PixelMetricAccumulator(cfg.eval.pixel_bins, cfg.eval.aupro_max_fpr, (0.0, 1.0))
    half = max(2, cfg.eval.pixel_bins // 2)
    low = M.quantile_edges(val_samples, half)
    top = np.linspace(low[-1], max(_MAP_UPPER, low[-1] * 2), half + 1)[1:]
    return M.PixelMetricAccumulator(edges=np.concatenate([low, top]), max_fpr=cfg.eval.aupro_max_fpr)


def evaluate_run(
    cfg: RunConfig,
    model: nn.Module,
    splits: Any,
    device: torch.device | str | None = None,
    examples_per_defect: int = 2,
    progress: bool = False,
) -> EvalResult:
    """Evaluate a trained model on ``splits.test`` with a calibration fitted on ``splits.val`` (PN 8-11).

    Args:
        cfg: the run config (method, setting, thresholds).
        model: trained AVAGA or baseline network.
        splits: :class:`avaga_lib.data.Splits` (test labels are read only to *score* predictions).
        device: where to run; None = the model's device.
        examples_per_defect: images kept (uint8) per defect type for the qualitative figure.
        progress: tqdm bar over test batches.

    Returns:
        :class:`EvalResult` with ``metrics`` keyed as docs/ARCHITECTURE.md's results contract.
    """
    from tqdm.auto import tqdm

    from avaga_lib.data import AnomalyDataset

    t0 = time.perf_counter()
    device = torch.device(device) if device is not None else _device_of(model)
    model.to(device)
    was_training = model.training
    model.eval()
    thr = cfg.eval.threshold
    weak = cfg.method == "avaga" and cfg.train.setting == "weak"
    has_masks = bool(splits.has_masks)

    cal, val_scores, val_samples = calibrate(cfg, model, list(splits.val), device)
    if not splits.test:
        raise ValueError(f"no test image for {cfg.data.category}; check the dataset's test/ folder")
    ds = AnomalyDataset(list(splits.test), cfg.data.image_size, train=False, has_masks=has_masks)
    acc = _pixel_accumulator(cfg, cal, val_samples) if has_masks else None
    thresholds = sorted({float(t) for t in cfg.eval.thresholds_study} | {thr})

    raw_scores, probs, ious, fps = [], [], [], []
    iou_at: dict[float, list[np.ndarray]] = {t: [] for t in thresholds}
    inter_sum = union_sum = 0
    ex: dict[str, list[Any]] = {k: [] for k in ("image", "gt", "map", "pred", "path", "defect", "label")}
    kept: dict[str, int] = {}
    for sl in tqdm(list(iterate_batches(len(ds), _EVAL_BATCH)), desc="evaluating", disable=not progress, leave=False):
        x = _to_device(ds.images[sl], device)
        b = infer_batch(cfg, model, x, cal)
        raw_scores.append(b.score_raw.cpu().numpy())
        labels = ds.labels[sl].numpy()
        gate = np.ones(len(labels), dtype=bool)
        if weak:
            assert b.prob is not None
            p = b.prob.cpu().numpy()
            probs.append(p)
            gate = p > thr  # called normal -> empty predicted mask (PN 4)
        amap = b.amap.cpu()
        gt = ds.masks[sl, 0].bool()
        g = torch.from_numpy(gate).view(-1, 1, 1)
        pred = (amap > thr) & g  # strict, as metrics.binarize
        if has_masks:
            acc.update(b.raw_map.cpu(), gt)  # type: ignore[union-attr]  # ungated, unclipped map
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ious.append(np.where(labels == 1, M.iou_per_image(pred, gt), np.nan))
                for t in thresholds:
                    iou_at[t].append(np.where(labels == 1, M.iou_per_image((amap > t) & g, gt), np.nan))
            anom = torch.from_numpy(labels == 1).view(-1, 1, 1)
            inter_sum += int((pred & gt & anom).sum())
            union_sum += int(((pred | gt) & anom).sum())
        fps.append(np.where(labels == 0, pred.flatten(1).float().mean(1).numpy(), np.nan))
        for i in range(len(labels)):
            d = ds.defects[sl.start + i]
            if kept.get(d, 0) < examples_per_defect:
                kept[d] = kept.get(d, 0) + 1
                ex["image"].append(ds.images[sl.start + i].numpy())
                ex["gt"].append(gt[i].numpy().astype(np.uint8))
                ex["map"].append((amap[i].clamp(0, 1) * 255).round().to(torch.uint8).numpy())
                ex["pred"].append(pred[i].numpy())
                ex["path"].append(ds.paths[sl.start + i])
                ex["defect"].append(d)
                ex["label"].append(int(labels[i]))
    model.train(was_training)

    raw = np.concatenate(raw_scores)
    y = ds.labels.numpy()
    score = cal.normalize_scores(raw)
    score_td = transductive_scores(raw)
    pred_score = (score > thr).astype(np.int64)
    prob = np.concatenate(probs) if probs else None
    pred_label = (prob > thr).astype(np.int64) if prob is not None else pred_score
    iou_img = np.concatenate(ious) if ious else np.full(len(y), np.nan)
    fp_img = np.concatenate(fps)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined metrics are NaN -> null; the reason is in metrics.json
        m: dict[str, Any] = {
            "iou": _nanmean(iou_img[y == 1]) if has_masks else math.nan,
            "iou_pooled": (inter_sum / union_sum if union_sum else math.nan) if has_masks else math.nan,
            "mean_accuracy": M.mean_class_accuracy(y, pred_label),
            "image_auroc": M.image_auroc(y, raw),
            "image_auroc_classifier": M.image_auroc(y, prob) if prob is not None else math.nan,
            "pixel_auroc": math.nan,
            "aupro": math.nan,
            "fp_area_normal": _nanmean(fp_img[y == 0]),
            "mean_accuracy_transductive": M.mean_class_accuracy(y, (score_td > thr).astype(np.int64)),
            "iou_at": {
                f"{t:g}": (_nanmean(np.concatenate(iou_at[t])[y == 1]) if has_masks else math.nan) for t in thresholds
            },
        }
        if weak:
            m["mean_accuracy_score"] = M.mean_class_accuracy(y, pred_score)
        if has_masks:
            m.update(acc.compute())  # type: ignore[union-attr]
    m.update(
        {
            "n_test": int(len(y)),
            "n_anomalous": int((y == 1).sum()),
            "n_val": int(len(val_scores)),
            "pixel_metrics_available": has_masks,
            "pixel_metrics_note": (
                f"pixel AUROC / AUPRO streamed over {acc.bins} fixed score bins (metrics.PixelMetricAccumulator)"
                if acc is not None
                else "dataset has image-level labels only: IoU, pixel AUROC and AUPRO unavailable (null)"
            ),
            "threshold": thr,
            "score_calibration": "validation (normal-only split; its [min, max] -> [0, 0.5])",
            "transductive_flag": TRANSDUCTIVE_FLAG,
            "detection_rule": "classifier (PN 4)" if weak else "calibrated score > threshold",
            "eval_wall_time_s": time.perf_counter() - t0,
        }
    )
    frame = pd.DataFrame(
        {
            "path": ds.paths,
            "label": y,
            "defect": ds.defects,
            "score": score,
            "score_raw": raw,
            "score_transductive": score_td,
            "pred_label": pred_label,
            "iou": iou_img,
            "fp_area": fp_img,
        }
    )
    if prob is not None:
        frame.insert(6, "prob_anomalous", prob)
    arrays = ("image", "gt", "map", "pred")
    examples: dict[str, Any] = {k: (np.stack(v) if k in arrays and v else v) for k, v in ex.items()}
    return EvalResult(m, frame, cal, examples, val_scores, time.perf_counter() - t0)


def _nanmean(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.nanmean(a)) if a.size and not np.all(np.isnan(a)) else math.nan


# ------------------------------------------------------------------------------------------------------- saving


def save_run(cfg: RunConfig, train_result: Any, eval_result: EvalResult, figures: bool = True) -> Path:
    """Write a run folder: config.json, metrics.json, predictions.csv, calibration.json, losses.csv, fig_*.png.

    Args:
        cfg: the run config (the train result's config, with its notes, is preferred when present).
        train_result: :class:`avaga_lib.train.TrainResult` (or None for an evaluation-only save).
        eval_result: :class:`EvalResult`.
        figures: draw fig_losses.png, fig_scores.png, fig_qualitative.png through :mod:`avaga_lib.plots`.

    Returns:
        The run folder.
    """
    run_cfg = getattr(train_result, "cfg", None) or cfg
    out = Path(run_cfg.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = dict(eval_result.metrics)
    if train_result is not None:
        # config.json stays loadable by RunConfig.load: what happened is recorded as notes, not new keys
        source = getattr(train_result.model, "pretrained_source", "none (no pretrained encoder)")
        run_cfg = run_cfg.with_note(f"pretrained_source={source}")
        metrics["device"] = train_result.device
        metrics["train_wall_time_s"] = train_result.wall_time_s
        metrics["epochs_done"] = train_result.epochs_done
        metrics["wall_time_s"] = train_result.wall_time_s + eval_result.wall_time_s
        write_csv(out / "losses.csv", train_result.history)
    else:
        metrics["wall_time_s"] = eval_result.wall_time_s
    metrics["setting_name"] = run_cfg.setting_name
    write_json(out / "config.json", run_cfg.to_dict())
    write_json(out / "metrics.json", M.nan_to_none(metrics))
    write_json(out / CALIBRATION_NAME, eval_result.calibration.to_dict())
    write_csv(out / "predictions.csv", eval_result.predictions)
    if figures:
        from avaga_lib import plots

        if train_result is not None and len(train_result.history):
            plots.plot_loss_curves(train_result.history, out / "fig_losses.png", title=run_cfg.setting_name, close=True)
        plots.plot_score_histogram(
            eval_result.predictions, cfg.eval.threshold, out / "fig_scores.png", title=run_cfg.setting_name, close=True
        )
        if eval_result.examples.get("path"):
            plots.plot_qualitative_grid(
                eval_result.examples, out / "fig_qualitative.png", title=run_cfg.setting_name, close=True
            )
    return out


def train_and_evaluate(
    cfg: RunConfig, progress: bool = True, figures: bool = True
) -> tuple[Any, EvalResult | None, Path]:
    """Train, evaluate and save one run (what ``python -m avaga_lib.cli train`` does).

    Under torchrun (``train.nproc > 1``) every rank trains; rank 0 alone evaluates and writes, the others return
    ``EvalResult`` None.

    Returns:
        (TrainResult, EvalResult, run folder).
    """
    from avaga_lib.data import make_splits
    from avaga_lib.train import train_run

    splits = make_splits(cfg.data, cfg.train.setting, save_dir=cfg.run_dir)
    tr = train_run(cfg, splits, progress=progress)
    if not tr.extra.get("is_main", True):  # torchrun rank > 0 (issue 8): rank 0 evaluates and writes the run
        return tr, None, Path(cfg.run_dir)
    ev = evaluate_run(tr.cfg, tr.model, splits, progress=progress)
    return tr, ev, save_run(tr.cfg, tr, ev, figures=figures)


def load_calibration(run_dir: Path | str) -> Calibration:
    """Read ``calibration.json`` of a run folder."""
    path = Path(run_dir) / CALIBRATION_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: evaluate the run first (evaluate_run + save_run write it)")
    return Calibration.from_dict(read_json(path))


# -------------------------------------------------------------------------------------------------- paper values


def paper_column(cfg: RunConfig) -> str:
    """Column of the paper's Tables 2-5 for this run (``AVAGA-R_u``, ``AE_L2``, ...)."""
    from avaga_lib.report import PAPER_MAIN_COLUMN, method_key

    key = method_key(cfg.setting_name)
    return PAPER_MAIN_COLUMN.get(key, key)


def paper_value(table: str, category: str, column: str) -> float:
    """One number of the paper's transcribed tables; NaN where the paper has none (e.g. embedded / MTD data).

    Args:
        table: CSV file name in ``avaga_lib/paper_tables`` (``table2_mvtec_iou.csv``; the ``.csv`` may be omitted).
        category: category or scene id (first column).
        column: method column, e.g. ``AVAGA-R_u`` or ``AE_L2``.
    """
    from avaga_lib.report import paper_table

    frame = paper_table(table if table.endswith(".csv") else f"{table}.csv")
    if category not in frame.index or column not in frame.columns:
        return math.nan
    v = frame.loc[category, column]
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def paper_comparison(cfg: RunConfig, metrics: dict[str, Any]) -> pd.DataFrame:
    """One-row-per-metric table: our value beside the paper's for this dataset / category / method (NaN = n/a)."""
    from avaga_lib.report import PAPER_FILES

    col = paper_column(cfg)
    rows = []
    for metric in ("iou", "mean_accuracy", "image_auroc", "pixel_auroc", "aupro"):
        table = PAPER_FILES.get((cfg.data.dataset, metric))
        pv = paper_value(table, cfg.data.category, col) if table else math.nan
        ours = metrics.get(metric)
        rows.append({"metric": metric, "ours": math.nan if ours is None else float(ours), "paper": pv})
    frame = pd.DataFrame(rows).set_index("metric")
    frame.columns.name = f"{cfg.data.dataset}/{cfg.data.category} {col}"
    return frame


ROW_METRICS = ("iou", "mean_accuracy", "image_auroc", "image_auroc_classifier", "pixel_auroc", "aupro", "iou_pooled",
               "fp_area_normal", "mean_accuracy_transductive")


def metrics_row(cfg: RunConfig, metrics: dict[str, Any]) -> pd.DataFrame:
    """One-row table of a run's metrics with the paper's value beside ours (``<metric> (paper)``; NaN = n/a).

    The paper reports IoU and mean accuracy only (Tables 2-5, MVTec AD and STC); the threshold-free metrics and
    every other dataset have no paper value.
    """
    from avaga_lib.report import PAPER_FILES

    col = paper_column(cfg)
    row: dict[str, float] = {}
    for k in ROW_METRICS:
        v = metrics.get(k)
        if k == "image_auroc_classifier" and (v is None or math.isnan(v)):
            continue  # weak setting only
        row[k] = math.nan if v is None else float(v)
        table = PAPER_FILES.get((cfg.data.dataset, k))
        if k in ("iou", "mean_accuracy"):
            row[f"{k} (paper)"] = paper_value(table, cfg.data.category, col) if table else math.nan
    return pd.DataFrame([row], index=[f"{cfg.data.dataset}/{cfg.data.category}/{cfg.setting_name}"])


__all__ = [
    "CALIBRATION_NAME",
    "ROW_METRICS",
    "metrics_row",
    "Calibration",
    "EvalResult",
    "calibrate",
    "evaluate_run",
    "fit_calibration",
    "infer_batch",
    "load_calibration",
    "paper_column",
    "paper_comparison",
    "paper_value",
    "save_run",
    "train_and_evaluate",
    "transductive_scores",
]
