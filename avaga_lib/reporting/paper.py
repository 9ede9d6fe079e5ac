"""The paper's published numbers: its tables transcribed as CSV, looked up per run.

The tables ship with the package (``avaga_lib/paper_tables``); which column a run sits beside comes from the study
registry (:mod:`avaga_lib.study`). Used by the training notebooks (one run beside the paper) and the report (every
run beside the paper).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from avaga_lib import study
from avaga_lib.config import RunConfig
from avaga_lib.paths import PAPER_TABLES_DIR

# Which paper CSV holds which (dataset, metric); the first column of each is the category / scene id.
PAPER_FILES: dict[tuple[str, str], str] = {
    ("mvtec", "iou"): "table2_mvtec_iou.csv",
    ("mvtec", "mean_accuracy"): "table3_mvtec_accuracy.csv",
    ("stc", "iou"): "table4_stc_iou.csv",
    ("stc", "mean_accuracy"): "table5_stc_accuracy.csv",
}
# Metrics of a run's one-row summary (metrics_row); the paper has values for iou and mean_accuracy only.
ROW_METRICS: tuple[str, ...] = ("iou", "mean_accuracy", "image_auroc", "image_auroc_classifier", "pixel_auroc",
                                "aupro", "iou_pooled", "fp_area_normal", "mean_accuracy_transductive")


def paper_table(filename: str) -> pd.DataFrame:
    """A transcribed paper table, indexed by category / scene id as strings (empty cell = NaN = "-" in the paper).

    Raises:
        FileNotFoundError: the CSV is missing from the package data.
    """
    path = PAPER_TABLES_DIR / filename
    if not path.exists():
        raise FileNotFoundError(f"paper table {path} missing; it ships with the package (avaga_lib/paper_tables)")
    frame = pd.read_csv(path, dtype={0: str})
    first = frame.columns[0]
    frame[first] = frame[first].astype(str)
    return frame.set_index(first)


def paper_value(table: str, category: str, column: str) -> float:
    """One number of the paper's transcribed tables; NaN where the paper has none (e.g. embedded / MTD data).

    Args:
        table: CSV file name in ``avaga_lib/paper_tables`` (``table2_mvtec_iou.csv``; the ``.csv`` may be omitted).
        category: category or scene id (first column). column: method column, e.g. ``AVAGA-R_u`` or ``AE_L2``.
    """
    return frame_value(paper_table(table if table.endswith(".csv") else f"{table}.csv"), category, column)


def frame_value(paper: pd.DataFrame, category: str, column: str | None) -> float:
    """The cell (category, column) of a loaded paper table as a float; NaN when absent or empty."""
    if column is None or column not in paper.columns or category not in paper.index:
        return math.nan
    try:
        return float(paper.loc[category, column])
    except (TypeError, ValueError):
        return math.nan


def paper_column(cfg: RunConfig) -> str:
    """Column of the paper's Tables 2-5 for this run (``AVAGA-R_u``, ``AE_L2``, ...; else the run's name)."""
    return study.PAPER_MAIN_COLUMN.get(cfg.name, cfg.name)


def paper_comparison(cfg: RunConfig, metrics: dict[str, Any]) -> pd.DataFrame:
    """One-row-per-metric table: our value beside the paper's for this dataset / category / method (NaN = n/a)."""
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


def metrics_row(cfg: RunConfig, metrics: dict[str, Any]) -> pd.DataFrame:
    """One-row table of a run's metrics with the paper's value beside ours (``<metric> (paper)``; NaN = n/a).

    The paper reports IoU and mean accuracy only (Tables 2-5, MVTec AD and STC); the threshold-free metrics and
    every other dataset have no paper value.
    """
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
    return pd.DataFrame([row], index=[f"{cfg.data.dataset}/{cfg.data.category}/{cfg.run_id}"])
