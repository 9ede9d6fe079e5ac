"""Why a claim cannot be tested even where both sides were measured: the map's latent grid is too coarse to
localize, the grid caps IoU under the paper's number, the two sides were measured under different rules, or a side's
classifier predicts one class (the chance rule itself, which needs the verdict's t-interval, is
:mod:`avaga_lib.reporting.claims`'s). Each function returns the reason in words, or "" when there is none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from avaga_lib import study
from avaga_lib.config import MIN_LATENT_GRID, latent_side
from avaga_lib.evaluation import metrics as M
from avaga_lib.reporting.paper import PAPER_FILES, frame_value, paper_table
from avaga_lib.reporting.results import STALE_MEASUREMENT
from avaga_lib.reporting.tables import PIXEL_METRICS
from avaga_lib.run_folder import RunFolder

__all__ = ["CALLED", "CHANCE", "LOCALIZATION_METRICS", "coarse_grid", "grid_capped", "mixed_measurement",
           "one_class", "paper_column", "with_decisions"]

LOCALIZATION_METRICS: tuple[str, ...] = (*PIXEL_METRICS, "pixel_auroc_recon", "aupro_recon")
_TABLE_NAMES = {"table2_mvtec_iou.csv": "Table 2", "table4_stc_iou.csv": "Table 4"}


def coarse_grid(runs: pd.DataFrame, dataset: str, methods: Sequence[str], metric: str) -> str:
    """Why runs of ``methods`` cannot test a localization claim: every AVAGA run among them has a latent grid under
    4x4 (its attention map has that many cells; a baseline's residual map and the prior are per pixel)."""
    sub = runs[(runs["dataset"] == dataset) & runs["method"].isin(methods) & runs["method"].str.startswith("AVAGA")]
    sizes = pd.to_numeric(sub["image_size"], errors="coerce").dropna()
    if metric not in LOCALIZATION_METRICS or sizes.empty or (latent_side(sizes) >= MIN_LATENT_GRID).any():
        return ""
    side = latent_side(int(sizes.max()))
    return (f"at {int(sizes.max())} px the latent grid is {side}x{side}, under {MIN_LATENT_GRID}x{MIN_LATENT_GRID}: "
            "an attention map of so few cells cannot localize, so this budget cannot test a localization claim "
            "(PROFILE=cpu or paper can)")


def mixed_measurement(runs: pd.DataFrame, dataset: str, methods: Sequence[str]) -> str:
    """Why runs of ``methods`` cannot be compared: some were evaluated before issue 20 and some after (a tree that
    holds both, e.g. one run rerun and its counterpart not). The two measurements differ in test sets, pixel-AUROC
    bins and threshold rule, so a difference between them would measure the rules, not the methods."""
    if "measurement" not in runs.columns:
        return ""
    sub = runs[(runs["dataset"] == dataset) & runs["method"].isin(methods) & runs["measurement"].notna()]
    is_stale = sub["measurement"] == STALE_MEASUREMENT  # prior and floor rows carry their source run's measurement
    if not is_stale.any() or is_stale.all():
        return ""
    stale = sorted(set(sub.loc[is_stale, "method"]))
    return (f"the runs compared were measured under different rules: {', '.join(stale)} before issue 20 (older "
            "test sets, binned pixel AUROC), the other side after; rerun the stale side to compare them")


def paper_column(method: str) -> str | None:
    """The paper's Table 2/4 column of an AVAGA run; a remedy sits beside the recipe it changes."""
    column = study.PAPER_MAIN_COLUMN.get(method)
    if column is None and method in study.names() and study.get(method).remedy_of:
        column = study.PAPER_MAIN_COLUMN.get(study.get(method).remedy_of)
    return column


def grid_capped(sub: pd.DataFrame, dataset: str, metric: str, better: Sequence[tuple[str, str]]) -> str:
    """Why an IoU claim cannot be tested at this resolution: the mean ``iou_grid_cap`` (the best IoU its map's grid
    allows) of the claimed-better AVAGA side (``better``: its (category, run) in each category compared) is under the
    paper's IoU for that side; "" when it is not, or when the runs carry no cap.

    The paper's number is the mean of its cells (Table 2 / 4) over the categories measured; a dataset without paper
    cells (embedded, mtd) is held against the paper's MVTec AD mean (Table 2, over its categories), as said.
    """
    if metric != "iou" or M.GRID_CAP not in sub.columns:
        return ""
    table = PAPER_FILES.get((dataset, "iou"))
    paper = paper_table(table) if table else None
    mvtec = paper_table(PAPER_FILES[("mvtec", "iou")])
    # (method, mean cap over seeds, paper value): against the dataset's own paper cells / the paper's MVTec means
    cells: list[tuple[str, float, float]] = []
    means: list[tuple[str, float, float]] = []
    for category, method in better:
        column = paper_column(method)
        own = sub[(sub["category"] == category) & (sub["method"] == method)]
        cap = pd.to_numeric(own[M.GRID_CAP], errors="coerce").dropna()
        if not method.startswith("AVAGA") or column is None or cap.empty:
            continue
        cell = frame_value(paper, category, column) if paper is not None else math.nan
        if not math.isnan(cell):
            cells.append((method, float(cap.mean()), cell))
        if column in mvtec.columns:
            means.append((method, float(cap.mean()), float(mvtec[column].astype(float).mean())))
    if cells:
        rows = cells
        where = (f"{_TABLE_NAMES.get(table or '', table)}, mean of its cells over the {len(cells)} "
                 f"categor{'y' if len(cells) == 1 else 'ies'} measured")
    elif means:
        rows = means
        where = (f"its MVTec AD mean IoU, Table 2 averaged over its {len(mvtec.index)} categories: {dataset} has no "
                 f"paper cell{' for these categories' if paper is not None else ''}")
    else:
        return ""
    cap, number = float(np.mean([r[1] for r in rows])), float(np.mean([r[2] for r in rows]))
    if cap >= number:
        return ""
    names = "/".join(dict.fromkeys(r[0] for r in rows))
    return (f"at this resolution the best reachable IoU is {cap:.3f} < the paper's {number:.2f} ({names}; {where}): "
            f"{M.GRID_CAP}, the ground-truth masks pooled to the map's grid and upsampled like the map at the best "
            "threshold, caps what any map of this grid can score")


CHANCE = 0.5  # the mean (balanced) accuracy of a classifier that ignores the image
CALLED = "share_called_anomalous"  # per run: the fraction of its test images it called anomalous (predictions.csv)


def with_decisions(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with :data:`CALLED`, read from each run's ``predictions.csv`` (``pred_label``) where the runs frame
    names a ``run_dir`` holding one; NaN elsewhere (hand-made frames, runs without the file)."""
    if CALLED in runs.columns or "run_dir" not in runs.columns:
        return runs
    shares = []
    for run_dir in runs["run_dir"]:
        path = RunFolder(run_dir).predictions_path if isinstance(run_dir, str) else None
        share = math.nan
        if path is not None and path.is_file():
            try:
                labels = pd.read_csv(path, usecols=["pred_label"])["pred_label"]
                share = float(pd.to_numeric(labels, errors="coerce").dropna().mean())
            except (ValueError, OSError):  # an unreadable or older file: the mean-accuracy rule decides instead
                share = math.nan
        shares.append(share)
    return runs.assign(**{CALLED: shares})


def one_class(values: pd.DataFrame, column: str) -> str:
    """How the runs in ``values`` show one class for every test image, or "".

    The decisions themselves (:data:`CALLED` 0 or 1 in every run) are read first; without them a mean accuracy of
    exactly 0.500 in every run is taken as the sign: it is the balanced accuracy of a constant classifier (one class
    right, the other wrong), and a classifier that is not constant yet scores exactly chance in every seed would be
    untestable by the chance rule anyway."""
    shares = pd.to_numeric(values[CALLED], errors="coerce") if CALLED in values else pd.Series(math.nan, values.index)
    if shares.notna().all() and len(shares):
        if not shares.isin([0.0, 1.0]).all():
            return ""
        called = {0.0: "normal", 1.0: "anomalous"}
        kinds = sorted({called[float(v)] for v in shares})
        what = f"every test image called {kinds[0]}" if len(kinds) == 1 else "one class per run"
        return f"{what} in {'all ' if len(shares) > 1 else ''}{len(shares)} run{'s' if len(shares) > 1 else ''}"
    acc = pd.to_numeric(values[column], errors="coerce")
    if len(acc) and acc.notna().all() and bool(np.isclose(acc, CHANCE, rtol=0, atol=1e-9).all()):
        return f"mean accuracy exactly {CHANCE:.3f} in every run, what a one-class classifier scores"
    return ""
