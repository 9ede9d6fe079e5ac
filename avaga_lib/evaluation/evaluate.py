"""Evaluation of a trained run the paper's way (threshold 0.5) and the modern way (threshold-free), label-free.

Protocol (PROTOCOL_NOTES 8-11, 16):

* **One label-free threshold rule for every map** (issue 20, docs/PROTOCOL.md "Measurement"). A
  :class:`Calibration` fitted on the **normal validation split only** (:func:`fit_calibration`) places the pixel
  threshold at the ``eval.val_quantile`` (0.99) quantile of the run's own raw map over the validation pixels, and
  the image threshold at the ``eval.image_val_quantile`` (0.95) quantile of the validation images' raw scores. Both
  become 0.5 of the paper's "normalised to [0, 1], threshold 0.5" (scores: [validation min, threshold] -> [0, 0.5];
  maps: x 0.5 / threshold), so ``calibrated > 0.5`` is ``raw > threshold``, for AVAGA's 1 - A, A^{c_a}, each
  remedy and the baselines' residual maps alike. No test label or test score touches it (tested by shuffling test
  labels). The paper's literal rule, AVAGA's attention map itself at 0.5, is scored beside it (``iou_literal``,
  Table 7's ``iou_at``); the **transductive** variant of the image decision (min-max over the unlabeled test scores)
  as ``mean_accuracy_transductive``, flagged because it depends on the test set.
* **Maps.** AVAGA_u: 1 - A; AVAGA_w: A^{c_a}, gated by the classifier (an image called normal gets an empty
  predicted mask, PN 4; the ungated map feeds the threshold-free pixel metrics). Baselines: the residual map.
* **Detection decision.** AVAGA_u and baselines: calibrated score > 0.5. AVAGA_w: the classifier (PN 4); the
  calibrated-score decision is reported as ``mean_accuracy_score``.
* **Localization on equal terms** (:mod:`avaga_lib.evaluation.localization`): the run's map, its reconstruction error
  |x - x_hat|, two position priors and the floors (:mod:`avaga_lib.evaluation.floors`) are scored alike: exact pixel
  AUROC, AUPRO, IoU at each map's own validation quantile. Beside every IoU, ``iou_grid_cap``: the best IoU the map's
  native grid allows (test masks pooled to it: an upper bound, flagged). Per run, 95% bootstrap intervals over the
  test images (``<metric>_ci_lo`` / ``_ci_hi``).

Every number of ``metrics.json`` comes from :mod:`avaga_lib.evaluation.metrics` /
:mod:`avaga_lib.evaluation.pixel_metrics` applied to the per-image maps and ``predictions.csv``. The maps (float32, so
the metrics recomputed from them are exactly equal), edges and thresholds are kept in :attr:`EvalResult.maps`;
:func:`avaga_lib.training.run.save_run` writes them as ``maps/test_maps.npz`` (git-ignored;
:func:`avaga_lib.training.run.load_maps`): an MVTec category at 256 px is tens of MB.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from avaga_lib.config import RunConfig
from avaga_lib.data import AnomalyDataset
from avaga_lib.evaluation import floors
from avaga_lib.evaluation import metrics as M
from avaga_lib.evaluation.calibration import Calibration, fit_calibration, transductive_scores
from avaga_lib.evaluation.localization import (
    LocalizationScorer,
    ValidationMaps,
    grid_cap,
    metrics_from_maps,
    recon_error_map,
    test_intervals,
)
from avaga_lib.models.registry import method_of
from avaga_lib.runtime import amp_dtype, configure_precision, configure_threads, iterate_batches

TRANSDUCTIVE_FLAG = (
    "mean_accuracy_transductive normalises scores by min-max over the unlabeled TEST scores (label-free but "
    "test-dependent, PROTOCOL_NOTES 8); the default mean_accuracy uses the normal validation split only"
)
# Images per inference batch by device type (eval_batch_size). CPU: 16, memory-bound at 256 px and what every committed
# CPU result used. CUDA: no_grad inference, where 16 leaves an H200 idle; 128 is what `make bench` times (unmeasured).
_EVAL_BATCH: dict[str, int] = {"cpu": 16, "cuda": 128}
_VAL_PIXEL_STRIDE = 4  # every 4th validation pixel (each axis) places the bin edges and thresholds (memory bound)
_RECON_UPPER = 1.0  # |x - x_hat|, intensities and residuals of images in [0, 1]


# ------------------------------------------------------------------------------------------------------ results


@dataclass
class EvalResult:
    """What :func:`evaluate_run` returns.

    Attributes:
        metrics: the ``metrics.json`` dict (NaN = unavailable; written as null). predictions: one row per test image
        (path, label, defect, score, pred_label, iou, ...). calibration: the validation calibration used.
        examples: a few images per defect type for the qualitative figure: ``image`` uint8 (K,3,H,W), ``gt``
            uint8 (K,H,W), ``map`` uint8 (K,H,W) = round(255 * map), ``pred`` bool (K,H,W), ``path``, ``defect``,
            ``label`` lists.
        val_scores: raw validation scores (for the histogram). wall_time_s: seconds spent evaluating.
        maps: per-image test maps, rows in the order of ``predictions``: ``maps`` float32 (N,H,W) (calibrated,
            thresholded at 0.5, ungated: an image the weak classifier calls normal has ``pred_label`` 0 and an empty
            predicted mask), ``raw_maps`` (uncalibrated: what the threshold-free metrics rank), ``gt`` bool (N,H,W),
            ``<name>_maps`` float32 (N,H,W) of every other scored map (``recon_maps`` = |x - x_hat|, floors),
            ``prior_center`` / ``prior_mean`` (H,W), ``scored`` (the names), ``edges_<name>`` (AUPRO bin edges)
            and ``val_quantile_thresholds`` (label-free thresholds, in ``scored`` order); letterbox runs also
            ``valid`` bool (N,H,W) (False on padding, which no pixel metric counts).
    """

    metrics: dict[str, Any]
    predictions: pd.DataFrame
    calibration: Calibration
    examples: dict[str, Any] = field(default_factory=dict)
    val_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    wall_time_s: float = 0.0
    maps: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class _Batch:
    recon: torch.Tensor
    score_raw: torch.Tensor  # (B,)
    amap: torch.Tensor  # (B,H,W) calibrated map in [0, 1]: 0.5 at the label-free pixel threshold (raw without one)
    raw_map: torch.Tensor  # (B,H,W) map before calibration (AVAGA: the attention map as inferred)
    prob: torch.Tensor | None  # (B,) classifier probability of c_a (weak) or None


def infer_batch(cfg: RunConfig, model: nn.Module, x: torch.Tensor, calibration: Calibration | None) -> _Batch:
    """Reconstruction, raw score and anomaly map of a batch (AVAGA via attention.infer, baselines via residuals).

    Under ``train.amp``'s autocast only the networks' forward runs in bf16; reconstructions (float32 sigmoid),
    scores, Grad-CAM and SSIM / L2 maps are float32, computed outside autocast as in training (issue 15 row 6).
    """
    b = method_of(cfg.method).infer(cfg, model, x, amp_dtype(cfg.train.amp, x.device))
    amap = b.raw_map if calibration is None else calibration.normalize_maps(b.raw_map)
    return _Batch(b.recon, b.score_raw, amap, b.raw_map, b.prob)


def eval_batch_size(device: torch.device | str) -> int:
    """Images per inference batch on ``device``: 128 on CUDA, 16 elsewhere (CPU, MPS), see ``_EVAL_BATCH``."""
    return _EVAL_BATCH.get(torch.device(device).type, _EVAL_BATCH["cpu"])


def _to_device(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    nb = device.type == "cuda"
    src = images_u8.pin_memory() if nb else images_u8
    return src.to(device, non_blocking=nb).float() / 255.0


@dataclass
class Inferred:
    """One inference pass over a dataset, rows in the dataset's order.

    Attributes:
        score_raw: (N,) raw detection scores (float32). prob: (N,) classifier probability of c_a (weak AVAGA) or None.
        maps: (N,H,W) float32 maps as :func:`infer_batch` calibrates them (None when not kept). raw_maps: (N,H,W)
        float32 uncalibrated maps (None when not kept).
    """

    score_raw: np.ndarray
    prob: np.ndarray | None
    maps: np.ndarray | None
    raw_maps: np.ndarray | None


def infer_dataset(
    cfg: RunConfig,
    model: nn.Module,
    ds: AnomalyDataset,
    calibration: Calibration | None,
    device: torch.device,
    batch_size: int | None = None,
    keep_maps: bool = True,
    on_batch: Callable[[slice, _Batch], None] | None = None,
    progress: bool = False,
) -> Inferred:
    """Run :func:`infer_batch` over every image of ``ds`` in batches (the one inference loop of the evaluator).

    Args:
        cfg: the run config (method, setting, AMP). model: trained network, in eval mode. ds: the images (uint8, test
        geometry). calibration: normalises baseline maps; None = raw maps. device: where to infer. batch_size: images
        per batch (memory bound); None = :func:`eval_batch_size` of ``device``. keep_maps: concatenate the maps on the
        CPU (False: scores only, e.g. the validation pass). on_batch: called with (slice of ``ds``, batch) after each
        batch (streamed accumulators). progress: tqdm bar over batches.
    """
    scores, probs, maps, raws = [], [], [], []
    batches = list(iterate_batches(len(ds), eval_batch_size(device) if batch_size is None else batch_size))
    for sl in tqdm(batches, desc="evaluating", disable=not progress, leave=False):
        b = infer_batch(cfg, model, _to_device(ds.images[sl], device), calibration)
        scores.append(b.score_raw.cpu().numpy())
        if b.prob is not None:
            probs.append(b.prob.cpu().numpy())
        if on_batch is not None:
            on_batch(sl, b)
        if keep_maps:
            maps.append(b.amap.cpu().numpy())
            raws.append(b.raw_map.cpu().numpy())
    return Inferred(np.concatenate(scores), _concat(probs), _concat(maps), _concat(raws))


def _concat(parts: list[np.ndarray]) -> np.ndarray | None:
    return np.concatenate(parts) if parts else None


def calibrate(cfg: RunConfig, model: nn.Module, val_records: list[Any], device: torch.device,
              extra: ExtraMaps | None = None) -> tuple[Calibration, np.ndarray, ValidationMaps]:
    """Fit the calibration on the normal validation records only, and collect what their maps give (label-free):
    strided values of every scored map (the run's, its reconstruction error, the floors of ``extra``) and the mean
    map (:class:`ValidationMaps`).

    Returns:
        (calibration, raw validation scores, validation maps).
    """
    if not val_records:
        raise ValueError(f"no normal validation image for {cfg.data.category}: the calibration (PN 8) needs "
                         f"data.val_fraction > 0 and at least 2 training images")
    if any(getattr(r, "label", 0) != 0 for r in val_records):
        raise ValueError("the validation split must hold normal images only (PN 8)")
    ds = AnomalyDataset(val_records, cfg.data.image_size, train=False, has_masks=False, geometry=cfg.data.geometry)
    vm = ValidationMaps(_VAL_PIXEL_STRIDE)

    def track(sl: slice, b: _Batch) -> None:  # letterbox padding: in none of them
        scored = {"map": b.raw_map.cpu().numpy(), "recon": recon_error_map(ds.images[sl], b.recon)}
        scored |= extra(ds.images[sl]) if extra is not None else {}
        vm.update(scored, ds.valid[sl, 0].numpy())

    val = infer_dataset(cfg, model, ds, None, device, keep_maps=False, on_batch=track)
    cal = fit_calibration(val.score_raw, vm.samples("map"), cfg.eval.image_val_quantile, cfg.eval.val_quantile)
    return cal, val.score_raw, vm


ExtraMaps = Callable[[torch.Tensor], dict[str, np.ndarray]]  # uint8 images (B,3,H,W) -> name -> (B,H,W) floor map


def _infer_test(cfg: RunConfig, model: nn.Module, ds: AnomalyDataset, cal: Calibration, device: torch.device,
                progress: bool, extra: ExtraMaps | None = None) -> tuple[Inferred, dict[str, np.ndarray]]:
    """The test pass: calibrated and raw maps, scores, and the other scored maps (reconstruction error, floors)."""
    other: dict[str, list[np.ndarray]] = {}

    def collect(sl: slice, b: _Batch) -> None:  # ungated, unclipped
        scored = {"recon": recon_error_map(ds.images[sl], b.recon)}
        scored |= extra(ds.images[sl]) if extra is not None else {}
        for name, m in scored.items():
            other.setdefault(name, []).append(np.asarray(m, dtype=np.float32))

    test = infer_dataset(cfg, model, ds, cal, device, on_batch=collect, progress=progress)
    return test, {name: np.concatenate(parts) for name, parts in other.items()}


def _uppers(own: float, names: Any) -> dict[str, float]:
    """The largest value each scored map can take (top of its pixel bins): ``own`` for the run's map (its method's
    :attr:`~avaga_lib.models.interface.Method.map_upper`), images and residuals in [0, 1]."""
    return {name: own if name == "map" else floors.floor_upper(name, own) if name in floors.FLOORS else _RECON_UPPER
            for name in names}


def _floors(cfg: RunConfig, splits: Any, device: torch.device) -> ExtraMaps:
    """The floors' map function (issue 26): network-free floors from the normal training images, and the run's
    network at the trainer's initial weights for this seed, mapped by the run's own map function."""
    mean = floors.train_mean_image(cfg, list(splits.train))  # normal training images only: no label
    untrained = floors.untrained_model(cfg, device)
    return floors.floor_map_fn(cfg, mean, untrained, device,
                               infer=lambda m, x: infer_batch(cfg, m, x, None).raw_map)


def evaluate_run(
    cfg: RunConfig,
    model: nn.Module,
    splits: Any,
    device: torch.device | str | None = None,
    examples_per_defect: int = 2,
    progress: bool = False,
    extra: ExtraMaps | None = None,
    with_floors: bool = True,
) -> EvalResult:
    """Evaluate a trained model on ``splits.test`` with a calibration fitted on ``splits.val`` (PN 8-11, issue 20).

    Args:
        cfg: the run config (method, setting, thresholds). model: trained AVAGA or baseline network.
        splits: :class:`avaga_lib.data.Splits` (test labels are read only to *score* predictions). device: where to run;
        None = the model's device. examples_per_defect: images kept (uint8) per defect type for the qualitative figure.
        progress: tqdm bar over test batches. extra: more label-free maps to score alike; None: the floors of
        :mod:`avaga_lib.evaluation.floors` (issue 26) when
            ``with_floors``, else none.
        with_floors: score the floors (raw intensity and its inverse, the residual to the mean training image, the
            same network untrained) beside the run's map.

    Returns:
        :class:`EvalResult` with ``metrics`` keyed as docs/ARCHITECTURE.md's results contract.
    """
    t0 = time.perf_counter()
    method = method_of(cfg.method)
    configure_threads(cfg.train.threads)  # the run's CPU thread count (floats depend on it)
    device = torch.device(device or next((p.device for p in model.parameters()), "cpu"))  # None: the model's own
    configure_precision(device)  # the trainer's (and the bench's) matmul precision
    was_training, has_masks = model.training, bool(splits.has_masks)
    model.to(device).eval()
    extra = _floors(cfg, splits, device) if extra is None and with_floors else extra
    try:
        cal, val_scores, vm = calibrate(cfg, model, list(splits.val), device, extra)
        if not splits.test:
            raise ValueError(f"no test image for {cfg.data.category}; check the dataset's test/ folder")
        ds = AnomalyDataset(list(splits.test), cfg.data.image_size, train=False, has_masks=has_masks,
                            geometry=cfg.data.geometry)
        test, other = _infer_test(cfg, model, ds, cal, device, progress, extra)
    finally:
        model.train(was_training)
    thr, gt = cfg.eval.threshold, ds.masks[:, 0].bool().numpy()
    assert test.maps is not None and test.raw_maps is not None
    valid = None if bool(ds.valid.all()) else ds.valid[:, 0].numpy()  # None: every pixel is content (squash)
    gate = test.prob > thr if test.prob is not None else np.ones(len(test.score_raw), dtype=bool)  # PN 4
    pred = M.binarize(test.maps, thr) & gate[:, None, None] & (True if valid is None else valid)
    frame = _predictions(ds, test, cal, pred, gt, thr, has_masks, valid)
    thresholds = sorted({float(t) for t in cfg.eval.thresholds_study} | {thr})
    literal = test.raw_maps if method.has_attention else None  # the paper's rule: the map at 0.5
    m = metrics_from_maps(frame, test.maps, gt, thr, has_masks, valid, literal, thresholds)
    scorer = LocalizationScorer(vm.references(cfg.eval.pixel_bins, cfg.eval.val_quantile,
                                              _uppers(method.map_upper, ["map", *other])), cfg.eval.aupro_max_fpr)
    priors = vm.priors(*ds.images.shape[-2:])
    native = method.native_side(cfg.data.image_size)
    m.update(_localization(native, test, other, priors, scorer, frame, gt, gate, valid, has_masks))
    m.update(_run_info(cfg, method.classifies(cfg.train.setting), frame, len(val_scores), has_masks, t0))
    maps = _maps_to_save(test, gt, valid, other, priors, scorer)
    examples = _examples(ds, test.maps, pred, examples_per_defect)
    return EvalResult(m, frame, cal, examples, val_scores, time.perf_counter() - t0, maps)


def _localization(native: int, test: Inferred, other: dict[str, np.ndarray], priors: dict[str, np.ndarray],
                  scorer: LocalizationScorer, frame: pd.DataFrame, gt: np.ndarray, gate: np.ndarray,
                  valid: np.ndarray | None, has_masks: bool) -> dict[str, Any]:
    """Every scored map alike (where there are masks), the grid cap of the run's map (``native`` cells a side), the
    per-run intervals."""
    y, out = frame["label"].to_numpy(), {}
    if has_masks:
        out |= scorer.compute({"map": test.raw_maps, **other, **priors}, gt, y, gate, valid)
        out |= {M.GRID_CAP: grid_cap(gt, y, native, valid), "map_grid_side": int(native)}
    out |= test_intervals(y, test.score_raw, frame["iou"].to_numpy(), test.raw_maps, gt if has_masks else None,
                          valid, scorer.edges.get("map"))
    return out


def _predictions(ds: AnomalyDataset, test: Inferred, cal: Calibration, pred: np.ndarray, gt: np.ndarray,
                 thr: float, has_masks: bool, valid: np.ndarray | None = None) -> pd.DataFrame:
    """One row per test image: label, scores (calibrated, raw, transductive), decision, IoU and FP area (of the
    ``valid`` pixels: letterbox padding is no image content)."""
    y = ds.labels.numpy()
    score = cal.normalize_scores(test.score_raw)
    # the classifier decides in the weak setting (PN 4), the calibrated score otherwise
    pred_label = M.binarize(test.prob if test.prob is not None else score, thr).astype(np.int64)
    iou = np.where(y == 1, M.iou_per_image(pred, gt), np.nan) if has_masks else np.full(len(y), np.nan)
    frame = pd.DataFrame(
        {
            "path": ds.paths,
            "label": y,
            "defect": ds.defects,
            "score": score,
            "score_raw": test.score_raw,
            "score_transductive": transductive_scores(test.score_raw),
            "pred_label": pred_label,
            "iou": iou,
            # float32 column as before this refactor (exact for 2^k-pixel images: 64 and 256 px)
            "fp_area": np.where(y == 0, M.fp_area_per_image(pred, valid).astype(np.float32), np.nan),
        }
    )
    if test.prob is not None:
        frame.insert(6, "prob_anomalous", test.prob)
    return frame


def _run_info(cfg: RunConfig, weak: bool, predictions: pd.DataFrame, n_val: int, has_masks: bool,
              t0: float) -> dict[str, Any]:
    """Counts, protocol choices and wall time written beside the metrics (``weak``: the classifier decides)."""
    y = predictions["label"].to_numpy()
    q, qi = cfg.eval.val_quantile, cfg.eval.image_val_quantile
    return {
        "n_test": int(len(y)),
        "n_anomalous": int((y == 1).sum()),
        "n_val": int(n_val),
        "pixel_metrics_available": has_masks,
        "pixel_metrics_note": (
            "pixel AUROC exact (scikit-learn, every scored pixel); AUPRO on bins from the normal validation maps "
            "merged with quantiles of the unlabeled test values (pixel_metrics.covering_edges); the same for every "
            "scored map (the run's, its reconstruction error, priors, floors)"
            if has_masks
            else "dataset has image-level labels only: IoU, pixel AUROC and AUPRO unavailable (null)"
        ),
        "threshold": cfg.eval.threshold,
        "threshold_rule": (f"label-free: pixels above the {q:g} quantile of the run map's normal-validation pixels "
                           f"(iou, fp_area_normal); images above the {qi:g} quantile of the normal-validation image "
                           f"scores; iou_literal = the attention map itself at {cfg.eval.threshold:g} (the paper's "
                           "rule, AVAGA only)"),
        "score_calibration": f"validation (normal-only split; [min, {qi:g} quantile] -> [0, 0.5])",
        "interval": (f"{M.CI_LEVEL:.0%} percentile bootstrap over test images ({M.BOOTSTRAP_RESAMPLES} stratified "
                     "resamples; <metric>_ci_lo / _ci_hi)"),
        "grid_cap_flag": "iou_grid_cap reads the TEST masks (pooled to the map's native grid): an upper bound only",
        "transductive_flag": TRANSDUCTIVE_FLAG,
        "detection_rule": "classifier (PN 4)" if weak else "calibrated score > threshold",
        "eval_wall_time_s": time.perf_counter() - t0,
        "cpu_threads": torch.get_num_threads(),  # in effect (train.threads, or torch's default when 0)
    }


def _maps_to_save(test: Inferred, gt: np.ndarray, valid: np.ndarray | None, other: dict[str, np.ndarray],
                  priors: dict[str, np.ndarray], scorer: LocalizationScorer) -> dict[str, np.ndarray]:
    """What ``maps/test_maps.npz`` holds: the calibrated and raw maps, every other scored map, the AUPRO edges and
    the label-free threshold of each (``scored`` names their order)."""
    assert test.maps is not None and test.raw_maps is not None
    maps = {"maps": test.maps, "raw_maps": test.raw_maps, "gt": gt} | ({} if valid is None else {"valid": valid})
    maps |= {f"{name}_maps": m for name, m in other.items()} | dict(priors)
    maps |= {f"edges_{n}": e for n, e in scorer.edges.items()}
    names = list(scorer.refs)
    maps["scored"] = np.array(names)
    maps["val_quantile_thresholds"] = np.array([scorer.refs[n].threshold for n in names])
    return maps


def _examples(ds: AnomalyDataset, maps: np.ndarray, pred: np.ndarray, per_defect: int) -> dict[str, Any]:
    """The first ``per_defect`` test images of each defect type, uint8-quantised, for the qualitative figure."""
    ex: dict[str, list[Any]] = {k: [] for k in ("image", "gt", "map", "pred", "path", "defect", "label")}
    kept: dict[str, int] = {}
    for i, d in enumerate(ds.defects):
        if kept.get(d, 0) >= per_defect:
            continue
        kept[d] = kept.get(d, 0) + 1
        ex["image"].append(ds.images[i].numpy())
        ex["gt"].append(ds.masks[i, 0].bool().numpy().astype(np.uint8))
        shown = torch.from_numpy(maps[i]) * ds.valid[i, 0]  # letterbox padding drawn as 0 (it is never scored)
        ex["map"].append((shown.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
        ex["pred"].append(pred[i])
        ex["path"].append(ds.paths[i])
        ex["defect"].append(d)
        ex["label"].append(int(ds.labels[i]))
    return {k: (np.stack(v) if k in ("image", "gt", "map", "pred") and v else v) for k, v in ex.items()}


__all__ = ["EvalResult", "Inferred", "calibrate", "eval_batch_size", "evaluate_run", "infer_batch", "infer_dataset",
           "metrics_from_maps"]
