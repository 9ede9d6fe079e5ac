"""One run of the study, start to finish: splits, training, evaluation and the run folder.

:func:`run_one` is what the command line (``python -m avaga_lib.cli train``), the pipeline and the notebooks call;
:func:`save_run` writes the run folder of the results contract (docs/ARCHITECTURE.md): ``config.json`` (the
config only), ``predictions.csv``, ``calibration.json``, ``maps/test_maps.npz`` (git-ignored), ``losses.csv``, the
figures, and last ``metrics.json`` (metrics, run record with the machine, and ``notes``: the fallbacks that
happened), the marker that the run is finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from avaga_lib.config import RunConfig
from avaga_lib.data import make_splits
from avaga_lib.data.dataset import relative_to_root
from avaga_lib.evaluation import metrics as M
from avaga_lib.evaluation import plots
from avaga_lib.evaluation.evaluate import EvalResult, evaluate_run
from avaga_lib.io import atomic_write, read_json, write_csv, write_json
from avaga_lib.run_folder import LOSSES_FIGURE, QUALITATIVE_FIGURE, SCORES_FIGURE, RunFolder
from avaga_lib.training.train import train_run


def run_one(cfg: RunConfig, figures: bool = True, progress: bool = False) -> Path:
    """Train, evaluate and save one run: :func:`~avaga_lib.data.make_splits`,
    :func:`~avaga_lib.training.train.train_run`, :func:`~avaga_lib.evaluation.evaluate.evaluate_run`, :func:`save_run`.

    Under torchrun (``train.nproc > 1``) every rank trains; rank 0 alone evaluates and writes (the others hold the
    same weights, so a second evaluation would only repeat it) and the other ranks return at once.

    Args:
        cfg: the run config. figures: draw fig_losses.png, fig_scores.png and fig_qualitative.png. progress: tqdm bars
        over epochs and test batches.

    Returns:
        The run folder (``cfg.run_dir``).
    """
    splits = make_splits(cfg.data, cfg.train.setting, save_dir=cfg.run_dir)
    result = train_run(cfg, splits, progress=progress)
    if not result.extra.get("is_main", True):  # torchrun rank > 0 (issue 8)
        return Path(cfg.run_dir)
    run_cfg = getattr(result, "cfg", None) or cfg
    evaluation = evaluate_run(run_cfg, result.model, splits, progress=progress)
    return save_run(run_cfg, result, evaluation, figures=figures)


def run_notes(cfg: RunConfig, train_result: Any) -> list[str]:
    """What happened during the run (fallbacks, resume, the encoder's initialisation), without duplicates.

    Reads ``TrainResult.notes`` and, while the config still carries them, ``cfg.notes``; both via getattr.
    """
    notes = [*getattr(cfg, "notes", ()), *(getattr(train_result, "notes", None) or [])]
    if train_result is not None:
        source = getattr(train_result.model, "pretrained_source", "none (no pretrained encoder)")
        notes.append(f"pretrained_source={source}")
    return list(dict.fromkeys(notes))


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    """``config.json``: the config only (notes are a run outcome: ``metrics.json["notes"]``)."""
    d = cfg.to_dict()
    d.pop("notes", None)
    return d


def machine_record() -> dict[str, str]:
    """What tells two machines' numbers apart: ``torch_version`` and ``cpu_capability`` (the instruction set ATen's
    CPU kernels dispatch to, e.g. ``AVX2`` / ``AVX512``; ``ATEN_CPU_CAPABILITY`` can lower it). Bit-identical
    results hold per (torch version, CPU capability), not across machines, so the reference comparison reads these.
    """
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # torch builds without the query
        capability = "unknown"
    return {"torch_version": str(torch.__version__), "cpu_capability": capability}


def save_run(cfg: RunConfig, train_result: Any, eval_result: EvalResult, figures: bool = True) -> Path:
    """Write a run folder: config.json, calibration.json, predictions.csv, maps/test_maps.npz, losses.csv,
    fig_*.png, and metrics.json last.

    ``metrics.json`` is the finished marker (:func:`avaga_lib.plan.is_finished`), so it is written after
    every other file and a stale one is removed first: a process killed while saving leaves a run that counts as
    unfinished (and is run again), never one that counts as finished with files missing. It records the machine
    (``device``, ``torch_version``, ``cpu_capability``: :func:`machine_record`). Image paths in predictions.csv
    are relative to the dataset root named by the run's splits.json (as in splits.json itself).

    Args:
        cfg: the run config (the train result's config is preferred when present). train_result:
        :class:`avaga_lib.training.train.TrainResult` (or None for an evaluation-only save). eval_result:
        :class:`EvalResult`. figures: draw fig_losses.png, fig_scores.png, fig_qualitative.png through
        :mod:`avaga_lib.evaluation.plots`.

    Returns:
        The run folder.
    """
    run_cfg = getattr(train_result, "cfg", None) or cfg
    out = Path(run_cfg.run_dir)
    folder = RunFolder(out)
    out.mkdir(parents=True, exist_ok=True)
    folder.metrics_path.unlink(missing_ok=True)  # the folder's files are being rewritten: not finished until done
    metrics = dict(eval_result.metrics)
    if train_result is not None:
        metrics["device"] = train_result.device
    metrics |= machine_record()
    if train_result is not None:
        metrics["train_wall_time_s"] = train_result.wall_time_s
        metrics["epochs_done"] = train_result.epochs_done
        metrics["wall_time_s"] = train_result.wall_time_s + eval_result.wall_time_s
        write_csv(folder.losses_path, train_result.history)
    else:
        metrics["wall_time_s"] = eval_result.wall_time_s
    metrics["run_id"] = run_cfg.run_id
    metrics["notes"] = run_notes(run_cfg, train_result)
    write_json(folder.config_path, config_dict(run_cfg))
    write_json(folder.calibration_path, eval_result.calibration.to_dict())
    write_csv(folder.predictions_path, _portable_predictions(eval_result.predictions, folder))
    if eval_result.maps:
        save_maps(folder.maps_path, eval_result.maps)
    if figures:
        _save_figures(folder, run_cfg, train_result, eval_result)
    write_json(folder.metrics_path, M.nan_to_none(metrics))  # last: the finished marker
    return out


def _portable_predictions(predictions: Any, folder: RunFolder) -> Any:
    """``predictions`` with its ``path`` column relative to the dataset root of the run's splits.json (unchanged
    when the folder has none, e.g. an evaluation-only save, or the frame has no path column)."""
    splits = folder.splits_path
    if "path" not in getattr(predictions, "columns", ()) or not splits.is_file():
        return predictions
    root = read_json(splits).get("root")
    frame = predictions.copy()
    frame["path"] = [relative_to_root(p, root) for p in frame["path"]]
    return frame


def _save_figures(folder: RunFolder, cfg: RunConfig, train_result: Any, eval_result: EvalResult) -> None:
    """fig_losses.png (when trained), fig_scores.png and fig_qualitative.png of a run folder."""
    name = cfg.run_id
    if train_result is not None and len(train_result.history):
        plots.plot_loss_curves(train_result.history, folder.figure_path(LOSSES_FIGURE), title=name, close=True)
    plots.plot_score_histogram(eval_result.predictions, cfg.eval.threshold, folder.figure_path(SCORES_FIGURE),
                               title=name, close=True)
    if eval_result.examples.get("path"):
        plots.plot_qualitative_grid(eval_result.examples, folder.figure_path(QUALITATIVE_FIGURE), title=name,
                                    close=True)




def save_maps(path: Path | str, maps: dict[str, np.ndarray]) -> Path:
    """Write per-image maps as one compressed ``.npz`` (atomically, through :func:`avaga_lib.io.atomic_write`)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temp name
            np.savez_compressed(f, **maps)

    return atomic_write(path, write)


def load_maps(run_dir: Path | str) -> dict[str, np.ndarray]:
    """Read ``maps/test_maps.npz`` of a run folder (see :attr:`EvalResult.maps`)."""
    path = RunFolder(run_dir).maps_path
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: evaluate the run first (evaluate_run + save_run write it)")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


__all__ = ["config_dict", "load_maps", "machine_record", "run_notes", "run_one", "save_maps", "save_run"]
