"""Gathering a results tree: one row per finished run, and the mean / std over seeds per table cell.

Reads ``<results_dir>/<dataset>/<category>/<setting>/{metrics,config}.json`` (the results contract of
``docs/ARCHITECTURE.md``, :mod:`avaga_lib.run_folder`). Which run a folder holds (its study name, seed, profile) is
read from its ``config.json``, never parsed from the folder name; what happened during the run (fallback notes) from
its ``metrics.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from avaga_lib.io import read_json
from avaga_lib.run_folder import ResultsTree, RunFolder, config_from_record

# The evaluator's only score calibration: the normal validation split (PN 8); the transductive one is a metric
# of its own (mean_accuracy_transductive). Shown in REPORT.md's protocol line.
CALIBRATION = "validation"


class ReportError(ValueError):
    """A results tree that cannot be read (the message names the file and what was expected)."""


def collect_runs(results_dir: Path | str) -> pd.DataFrame:
    """One row per finished run found under ``results_dir`` (folders holding a ``metrics.json``).

    Columns: dataset, category, method (the study run's name), seed, profile, setting, run_dir, epochs, image_size,
    calibration, attention_norm, notes (tuple), every scalar metric of the results contract, and ``iou@<t>`` for
    each threshold of ``iou_at``.

    Raises:
        ReportError: when a ``metrics.json`` or its ``config.json`` is missing or cannot be parsed.
    """
    base = Path(results_dir)
    rows: list[dict[str, Any]] = []
    if not base.is_dir():
        return pd.DataFrame(rows)
    for folder in ResultsTree(base).finished_runs():
        dataset, category = folder.path.parts[-3:-1]
        metrics = _read_object(folder.metrics_path, "a JSON object of metrics")
        config = _read_object(folder.config_path, "the run's config")
        rows.append(_run_row(dataset, category, folder, metrics, config))
    return pd.DataFrame(rows)


def _read_object(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise ReportError(f"{path} missing: expected {what} beside metrics.json; rerun the run or delete its folder")
    try:
        data = read_json(path)
    except ValueError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc}); rerun the run or delete its folder") from exc
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected {what}")
    return data


def _run_row(dataset: str, category: str, folder: RunFolder, metrics: dict[str, Any],
             config: dict[str, Any]) -> dict[str, Any]:
    """The report row of one run: identity from config.json, outcome (notes, metrics) from metrics.json."""
    try:
        cfg = config_from_record(config)
    except (TypeError, ValueError) as exc:
        raise ReportError(f"{folder.config_path}: not a run config ({exc})") from exc
    # notes: metrics.json since the study registry; configs saved before it held them
    notes = metrics.get("notes", config.get("notes", ()))
    row: dict[str, Any] = {
        "dataset": dataset,
        "category": category,
        "method": cfg.name,
        "seed": int(cfg.train.seed),
        "profile": cfg.profile,
        "setting": cfg.run_id,
        "run_dir": str(folder.path),
        "epochs": cfg.train.epochs,
        "image_size": cfg.data.image_size,
        "calibration": CALIBRATION,
        "attention_norm": cfg.model.attention_norm,
        "notes": tuple(notes),
    }
    for key, value in metrics.items():
        if key == "iou_at" and isinstance(value, dict):
            for thr, iou in value.items():
                row[f"iou@{float(thr):.1f}"] = _num(iou)
        elif isinstance(value, bool) or not isinstance(value, dict | list):
            row[key] = _num(value) if not isinstance(value, bool) else value
    # issue 20 changed what iou / pixel_auroc measure: runs evaluated before it are named, never mixed unawares
    row["measurement"] = CURRENT_MEASUREMENT if "threshold_rule" in metrics else STALE_MEASUREMENT
    if row["measurement"] == STALE_MEASUREMENT and "iou_val_quantile" in metrics:
        # before issue 20 the headline iou was the 0.5 rule and the label-free quantile rule (today's headline) was
        # iou_val_quantile: the row reads the same rule under today's name, the old rule's value kept beside it
        row["iou_old_rule"], row["iou"] = row.get("iou", math.nan), _num(metrics["iou_val_quantile"])
    device = metrics.get("device")  # where it trained (cpu / cuda / mps): a record, kept as text
    row["device"] = str(device).split(":")[0] if isinstance(device, str) and device else None
    return row


CURRENT_MEASUREMENT = "issue 20"  # one quantile threshold rule, exact pixel AUROC, grid caps, intervals, floors
STALE_MEASUREMENT = "before issue 20"


def _num(value: Any) -> float:
    """JSON null (unavailable) -> NaN; numbers -> float."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def aggregate(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for one seed), n_seeds and seed list per (dataset, category, method)."""
    cols = ["dataset", "category", "method", "mean", "std", "n_seeds", "seeds"]
    if runs.empty or metric not in runs.columns:
        return pd.DataFrame(columns=cols)
    valid = runs[runs[metric].notna()]
    out = []
    for (dataset, category, method), grp in valid.groupby(["dataset", "category", "method"], sort=False):
        values = grp[metric].astype(float)
        out.append(
            {
                "dataset": dataset,
                "category": category,
                "method": method,
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                "n_seeds": len(values),
                "seeds": tuple(sorted(int(s) for s in grp["seed"])),
            }
        )
    return pd.DataFrame(out, columns=cols)


# The centred-Gaussian position prior and the network-free floors (issue 26) scored like a method (a method is
# credited only for beating position and raw pixels). Their maps never see a training step, so their numbers are
# the same in every run of a (dataset, category, seed): the row takes them from the first run of each.
PRIOR_CENTER = "prior: centred Gaussian"
FLOOR_ROWS: dict[str, str] = {  # row name -> metrics.json prefix
    "floor: raw intensity": "floor_intensity",
    "floor: inverse intensity": "floor_intensity_inv",
    "floor: residual to the mean training image": "floor_train_residual",
}
REFERENCE_ROWS: dict[str, str] = {PRIOR_CENTER: "prior_center", **FLOOR_ROWS}  # every row that is no trained run
_ROW_METRICS: tuple[str, ...] = ("pixel_auroc", "aupro", "iou")


def with_prior_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` plus one row per (dataset, category, seed) for the centred-Gaussian prior (:data:`PRIOR_CENTER`) and
    each network-free floor (:data:`FLOOR_ROWS`) its runs scored: pixel AUROC, AUPRO and label-free IoU under the
    method's metric names; every other metric NaN."""
    if runs.empty:
        return runs
    rows = []
    for name, prefix in REFERENCE_ROWS.items():
        if f"{prefix}_pixel_auroc" not in runs.columns:
            continue
        scored = runs[runs[f"{prefix}_pixel_auroc"].notna()]
        for (dataset, category, seed), grp in scored.groupby(["dataset", "category", "seed"], sort=False):
            # a tree holding both measurements scores the prior on the current test set; the row carries the
            # measurement of the run it was read from (claims refuse to compare across measurements)
            current = grp[grp["measurement"] == CURRENT_MEASUREMENT] if "measurement" in grp.columns else grp
            first = (current if len(current) else grp).iloc[0]
            row = {"dataset": dataset, "category": category, "method": name, "seed": seed,
                   "profile": first["profile"], "image_size": first["image_size"], "epochs": first["epochs"],
                   "measurement": first.get("measurement", math.nan)}
            row |= {metric: first.get(f"{prefix}_{metric}", math.nan) for metric in _ROW_METRICS}
            rows.append(row)
    return pd.concat([runs, pd.DataFrame(rows)], ignore_index=True) if rows else runs
