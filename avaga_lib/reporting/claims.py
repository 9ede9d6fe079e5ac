"""The paper's claims checked against our numbers: the mean paired difference and its 95% t-interval.

Each claim compares study runs by name (:mod:`avaga_lib.study`). In each category the run of each side with the best
mean over seeds on the claim's test metric is taken (the best baseline, say; the sentence says when a side had several
candidates, lists them, and warns that the pick was made on the test set), and their values are paired by seed (the
same seed trains both: the same split, the same initialisation stream). The paired (category, seed) differences give
a mean and a Student t-interval (95%, df = cells - 1); the verdict is read off that interval: **holds** when it lies
above 0, **contradicted** when it lies below 0, **undecided** when it contains 0 or when a single cell gives no
interval. A claim on localization is **cannot test** on runs whose latent grid is under 4x4 (64 px), and an IoU claim
is **cannot test** when the grid caps the best reachable IoU of the claimed-better side under the paper's number. A
classification claim is **cannot test** when a side predicts one class for every test image (its mean accuracy is
then 0.500 whatever it learned) or when the t-interval of a side's mean accuracy does not lie above chance (0.5), and
any claim is **cannot test** when its sides were measured under different rules (before and after issue 20). What is
judged is listed in :mod:`avaga_lib.reporting.questions`; why a claim cannot be tested, in
:mod:`avaga_lib.reporting.testability`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from avaga_lib.evaluation import metrics as M
from avaga_lib.reporting.questions import CLAIMS, STUDY_QUESTIONS
from avaga_lib.reporting.results import (
    FLOOR_ROWS,
    REFERENCE_ROWS,
    aggregate,
    with_prior_rows,
)
from avaga_lib.reporting.tables import THRESHOLDS, lacks_pixel_masks, needs_pixel_masks, no_pixel_masks
from avaga_lib.reporting.testability import (
    CHANCE,
    coarse_grid,
    grid_capped,
    mixed_measurement,
    one_class,
    with_decisions,
)
from avaga_lib.study import BASELINES

CONFIDENCE = 0.95  # level of the t-interval of the mean paired difference


def t_interval(diffs: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Student t-interval of the mean of ``diffs``: mean ± t_{(1+confidence)/2, n-1} * s / sqrt(n).

    Args:
        diffs: paired differences, one per (category, seed) cell. confidence: coverage of the interval (0.95: 95%).

    Returns:
        (low, high), or None for fewer than two cells (no spread to estimate).
    """
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return None
    half = float(stats.t.ppf((1 + confidence) / 2, d.size - 1)) * float(d.std(ddof=1)) / math.sqrt(d.size)
    mean = float(d.mean())
    return mean - half, mean + half


@dataclass
class Claim:
    """One paper claim (or study question) checked against our numbers.

    Attributes:
        claim: the claim's text. source: where the paper makes it (table, section). dataset: the dataset the runs were
        measured on. k: categories whose means over seeds order as claimed (a description; the verdict rests on the
        interval). n: categories where both sides were measured. detail: per category, the runs compared, their means
        and the per-seed differences. basis: the profile, image size, seeds and categories the verdict rests on.
        untestable: why these runs cannot test the claim (empty: they can). diffs: the paired differences (better minus
        worse), one per (category, seed) cell. cells: how many categories and seeds ``diffs`` spans, in words (``1
        category x 3 seeds``).
    """

    claim: str
    source: str
    dataset: str
    k: int = 0
    n: int = 0
    detail: str = ""
    basis: str = ""
    untestable: str = ""
    diffs: tuple[float, ...] = field(default_factory=tuple)
    cells: str = ""

    @property
    def mean_diff(self) -> float | None:
        """Mean of the paired differences (None when nothing was measured)."""
        return float(np.mean(self.diffs)) if self.diffs else None

    @property
    def ci(self) -> tuple[float, float] | None:
        """95% Student t-interval of the mean paired difference (None with fewer than two cells)."""
        return t_interval(self.diffs)

    @property
    def verdict(self) -> str:
        """``holds`` / ``contradicted`` / ``undecided (interval contains 0)`` / ``undecided (one seed: no
        interval)`` / ``cannot test`` / ``not measured``."""
        if self.n == 0:
            return "not measured"
        if self.untestable:
            return "cannot test"
        ci = self.ci
        if ci is None:
            return "undecided (one seed: no interval)"
        if ci[0] > 0:
            return "holds"
        if ci[1] < 0:
            return "contradicted"
        return "undecided (interval contains 0)"

    def statistic(self) -> str:
        """The mean paired difference, its interval and the cells it spans, in words."""
        if not self.diffs:
            return ""
        ci = self.ci
        if ci is None:
            return f"paired difference {self.diffs[0]:+.3f} over {self.cells}: one cell gives no interval"
        return (f"mean paired difference {self.mean_diff:+.3f}, 95% t-interval [{ci[0]:+.3f}, {ci[1]:+.3f}] "
                f"(df {len(self.diffs) - 1}) over {self.cells}")

    def sentence(self) -> str:
        """One line of REPORT.md."""
        if self.n == 0:
            return f"- **{self.claim}** ({self.source}, {self.dataset}): not measured — {self.detail}"
        head = f"- **{self.claim}** ({self.source}, {self.dataset}; {self.basis}): **{self.verdict}**"
        cats = f"categor{'y' if self.n == 1 else 'ies'}"  # issue 23: never "1 categories"
        body = f"{self.statistic()}; the means order as claimed in {self.k} of {self.n} {cats}. {self.detail}"
        if self.untestable:
            return f"{head} — {self.untestable}. Measured anyway: {body}"
        return f"{head} — {body}"


@dataclass
class _Side:
    """The run one side of a claim is judged on in one category, and every candidate it was picked from."""

    method: str
    mean: float
    candidates: list[tuple[str, float]]  # (run, mean over seeds) of every measured candidate, best first
    listed: int  # how many runs the side lists (several: the best is picked on the test metric)


@dataclass
class _Category:
    """One category of a claim: both sides' picks and their paired differences."""

    category: str
    better: _Side
    worse: _Side
    diffs: np.ndarray
    paired: bool  # False: no seed shared, ``diffs`` is the one difference of the means


def _pick(agg: pd.DataFrame, category: str, methods: Sequence[str]) -> _Side | None:
    side = agg[(agg["category"] == category) & agg["method"].isin(methods)]
    if side.empty:
        return None
    best = side.loc[side["mean"].idxmax()]
    ranked = sorted(zip(side["method"].astype(str), side["mean"].astype(float)), key=lambda mv: -mv[1])
    return _Side(str(best["method"]), float(best["mean"]), ranked, len(methods))


def _paired(sub: pd.DataFrame, column: str, category: str, a: str, b: str) -> tuple[np.ndarray, bool]:
    """Per seed measured on both sides: value(a) - value(b); their means' difference when no seed is shared."""
    cell = sub[(sub["category"] == category) & sub[column].notna()]
    va = cell[cell["method"] == a].groupby("seed")[column].mean()
    vb = cell[cell["method"] == b].groupby("seed")[column].mean()
    common = va.index.intersection(vb.index)
    if len(common) == 0:
        return np.array([va.mean() - vb.mean()]), False
    return (va[common] - vb[common]).to_numpy(dtype=float), True


def _compare(sub: pd.DataFrame, column: str, better: str | Sequence[str],
             worse: str | Sequence[str]) -> list[_Category]:
    """Per category: best of ``better`` vs best of ``worse`` (by mean over seeds of ``column``), paired by seed."""
    agg = aggregate(sub, column)
    better_l, worse_l = _as_list(better), _as_list(worse)
    out = []
    for cat in dict.fromkeys(agg["category"]):
        ra, rb = _pick(agg, cat, better_l), _pick(agg, cat, worse_l)
        if ra is None or rb is None:
            continue
        diffs, paired = _paired(sub, column, cat, ra.method, rb.method)
        out.append(_Category(str(cat), ra, rb, diffs, paired))
    return out


def _run_interval(sub: pd.DataFrame, category: str, method: str, column: str) -> str:
    """`` (test bootstrap [lo, hi] per run, mean over seeds)`` where the evaluator wrote per-run intervals; else ""."""
    lo_col, hi_col = f"{column}_ci_lo", f"{column}_ci_hi"
    if column not in M.CI_METRICS or lo_col not in sub.columns or hi_col not in sub.columns:
        return ""  # a metric without per-run intervals, or runs evaluated before the evaluator wrote them
    own = sub[(sub["category"] == category) & (sub["method"] == method) & sub[column].notna()]
    lo, hi = pd.to_numeric(own[lo_col], errors="coerce").dropna(), pd.to_numeric(own[hi_col], errors="coerce").dropna()
    if lo.empty or hi.empty:
        return ""
    return f" (test bootstrap [{lo.mean():.2f}, {hi.mean():.2f}] per run, mean over seeds)"


def _describe(side: _Side, sub: pd.DataFrame, category: str, column: str, metric: str) -> str:
    """A side in one category: its run and mean, the per-run test interval, and how it was picked."""
    text = f"{side.method} {side.mean:.3f}{_run_interval(sub, category, side.method, column)}"
    if side.listed > 1 and len(side.candidates) > 1:
        # the pick sees the test labels: its mean is optimistic, so the sentence says so and shows the field
        field_ = ", ".join(f"{m} {v:.3f}" for m, v in side.candidates)
        text += f" [best of {len(side.candidates)} by mean test {metric}: selected on the test set; {field_}]"
    elif side.listed > 1:
        text += f" [the only one of {side.listed} candidates measured]"
    return text


def _line(c: _Category, sub: pd.DataFrame, column: str, metric: str) -> str:
    seeds = (f"per seed {' '.join(f'{v:+.3f}' for v in c.diffs)}" if c.paired
             else f"no seed shared: the difference of the means {c.diffs[0]:+.3f}, unpaired")
    return (f"{c.category}: {_describe(c.better, sub, c.category, column, metric)} vs "
            f"{_describe(c.worse, sub, c.category, column, metric)}, {seeds}{_floor(c, sub, column)}")


FLOOR_METRICS: tuple[str, ...] = ("pixel_auroc", "aupro", "iou")  # localization metrics every floor is scored on


def _floor(c: _Category, sub: pd.DataFrame, column: str) -> str:
    """Issue 26: the best floor of the category (raw intensity, its inverse, the residual to the mean training
    image, the claimed-better run's own network untrained) by mean over seeds, and whether that run clears it in
    every seed; "" for a metric the floors are not scored on, or runs evaluated before the floors existed."""
    if column not in FLOOR_METRICS:
        return ""
    cell = sub[(sub["category"] == c.category) & sub[column].notna()]
    own = cell[cell["method"] == c.better.method].groupby("seed")[column].mean()
    floors = {name: cell[cell["method"] == name].groupby("seed")[column].mean() for name in FLOOR_ROWS}
    untrained = f"floor_untrained_{column}"
    if untrained in cell.columns and c.better.method not in REFERENCE_ROWS:
        mine = cell[cell["method"] == c.better.method]
        floors[f"{c.better.method} untrained"] = mine.groupby("seed")[untrained].mean().dropna()
    floors = {k: v for k, v in floors.items() if len(v)}
    if not floors or own.empty or c.better.method in REFERENCE_ROWS:
        return ""
    name = max(floors, key=lambda k: floors[k].mean())
    best = floors[name]
    common = own.index.intersection(best.index)
    wins = int((own[common] > best[common]).sum())
    clears = "clears it" if wins == len(common) and wins > 0 else f"does not clear it ({wins} of {len(common)} seeds)"
    return f"; best floor ({name.removeprefix('floor: ')}) {best.mean():.3f}: {c.better.method} {clears}"


def _cells(counts: Sequence[int]) -> str:
    """``1 category x 3 seeds`` / ``5 cells (2 categories, 2-3 seeds each)``."""
    cats = f"{len(counts)} categor{'y' if len(counts) == 1 else 'ies'}"
    if len(set(counts)) == 1:
        return f"{cats} x {counts[0]} seed{'' if counts[0] == 1 else 's'}"
    return f"{sum(counts)} cells ({cats}, {min(counts)}-{max(counts)} seeds each)"


def _basis(runs: pd.DataFrame, dataset: str, methods: Sequence[str]) -> str:
    sub = runs[(runs["dataset"] == dataset) & runs["method"].isin(methods)]
    if sub.empty:
        return ""
    sizes = "/".join(f"{int(v)} px" for v in sorted(set(sub["image_size"].dropna())))
    seeds = sorted({int(v) for v in sub["seed"]})
    devices = sorted({str(d) for d in sub["device"] if isinstance(d, str)}) if "device" in sub else []
    return (f"profile {'/'.join(sorted(set(sub['profile'].dropna())))}, {sizes}, seeds {seeds}, "
            f"{sub['category'].nunique()} categor{'y' if sub['category'].nunique() == 1 else 'ies'}"
            + (f", trained on {'/'.join(devices)}" if devices else ""))


def _not_run(sub: pd.DataFrame, better: Any, worse: Any) -> str:
    """``not run: no run of X`` for each side without a run in the dataset ``sub``; "" when both sides ran.

    A side of only the prior or the floors is never "not run": those rows exist only where pixel masks do."""
    absent = []
    for side in (better, worse):
        names = [m for m in _as_list(side) if m not in REFERENCE_ROWS]
        if names and not sub["method"].isin(names).any():
            absent.append(names[0] if len(names) == 1 else f"any of {', '.join(names)}")
    return f"not run: no run of {' nor '.join(absent)}" if absent else ""


def _unmeasured(sub: pd.DataFrame, runs: pd.DataFrame, dataset: str, metric: str, better: Any, worse: Any) -> str:
    """Why a claim has no category with both sides measured: a side never run, a metric the dataset's missing
    masks cannot give (named), or no category in common."""
    if not_run := _not_run(sub, better, worse):
        return not_run
    if needs_pixel_masks(metric) and lacks_pixel_masks(runs, dataset):
        return no_pixel_masks(metric)
    return "no category where both sides were measured"


def _classifier(sub: pd.DataFrame, column: str, metric: str, cats: Sequence[_Category]) -> str:
    """Why a classification claim cannot be tested: a side predicts one class (issue 23: two constant classifiers
    were ranked by ties of 0.500), or the t-interval of a side's mean accuracy over its (category, seed) cells does
    not lie above chance; "" for every other metric, or when both sides classify."""
    if metric != "mean_accuracy":
        return ""
    reasons = []
    for role in ("better", "worse"):
        picks = [(c.category, getattr(c, role).method) for c in cats]
        rows = pd.concat([sub[(sub["category"] == cat) & (sub["method"] == m)] for cat, m in picks])
        rows = rows[rows[column].notna()]
        names = "/".join(dict.fromkeys(m for _, m in picks))
        if rows.empty:
            continue
        if one := one_class(rows, column):
            reasons.append(f"{names} predicts one class ({one})")
            continue
        ci = t_interval(rows[column].astype(float).to_numpy())
        if ci is not None and ci[0] <= CHANCE:
            where = "below" if ci[1] < CHANCE else "at"
            reasons.append(f"{names} classifies {where} chance (mean accuracy {rows[column].mean():.3f}, 95% "
                           f"t-interval [{ci[0]:.3f}, {ci[1]:.3f}] over its runs does not lie above {CHANCE})")
    return "; ".join(reasons)


def _as_list(side: str | Sequence[str]) -> list[str]:
    return [side] if isinstance(side, str) else list(side)


def _sides(better: Any, worse: Any) -> list[str]:
    return _as_list(better) + _as_list(worse)


def check(runs: pd.DataFrame, dataset: str, text: str, source: str, metric: str, better: Any, worse: Any) -> Claim:
    """One claim on one dataset: the seed-paired differences and their t-interval, its basis and testability.

    Args:
        runs: one row per run (:func:`avaga_lib.reporting.results.collect_runs`, with the prior's rows).
        dataset: the dataset judged. text: the claim's text. source: where the paper makes it. metric: the test metric
        compared (higher is better). better: the run (or runs: the best by mean is picked) claimed better.
        worse: the run (or runs) claimed worse.
    """
    return _judge(runs, dataset, text, source, metric, better, worse, metric)


def _judge(runs: pd.DataFrame, dataset: str, text: str, source: str, metric: str, better: Any, worse: Any,
           column: str, prefix: str = "") -> Claim:
    """:func:`check` on the values of ``column`` (``metric`` names the claim's metric for the testability rules)."""
    sub = runs[runs["dataset"] == dataset]
    cats = _compare(sub, column, better, worse) if column in sub.columns else []
    if not cats:
        return Claim(text, source, dataset, detail=_unmeasured(sub, runs, dataset, metric, better, worse))
    methods = _sides(better, worse)
    return Claim(
        text, source, dataset,
        k=sum(int(c.better.mean > c.worse.mean) for c in cats),
        n=len(cats),
        detail=prefix + "; ".join(_line(c, sub, column, metric) for c in cats),
        basis=_basis(runs, dataset, methods),
        untestable=(mixed_measurement(runs, dataset, methods) or coarse_grid(runs, dataset, methods, metric)
                    or grid_capped(sub, dataset, metric, [(c.category, c.better.method) for c in cats])
                    or _classifier(sub, column, metric, cats)),
        diffs=tuple(float(v) for c in cats for v in c.diffs),
        cells=_cells([c.diffs.size for c in cats]),
    )


def evaluate_claims(runs: pd.DataFrame, questions: bool = False) -> list[Claim]:
    """Check each paper claim (or, with ``questions``, each of :data:`STUDY_QUESTIONS`) on every dataset with
    runs; the paper's claims end with the threshold-insensitivity claim of Table 7."""
    out: list[Claim] = []
    if runs.empty:
        return out
    runs = with_prior_rows(with_decisions(runs))
    for dataset in sorted(set(runs["dataset"])):
        for text, source, metric, better, worse in STUDY_QUESTIONS if questions else CLAIMS:
            out.append(check(runs, dataset, text, source, metric, better, worse))
        if not questions:
            out.append(_threshold_claim(runs, dataset))
    return out


_WORST_IOU = "iou@worst"  # AVAGA-R_u: its lowest IoU over thresholds 0.2-0.6; a baseline: its IoU at 0.5


def _threshold_claim(runs: pd.DataFrame, dataset: str) -> Claim:
    """Table 7: AVAGA-R_u at every threshold 0.2-0.6 beats the best baseline (insensitive to the threshold).

    "At every threshold" is "at its worst threshold": per seed, AVAGA-R_u's lowest IoU over the five thresholds is
    paired with the best baseline's IoU, and judged like every other claim.
    """
    text = "AVAGA-R_u beats the best baseline at every threshold 0.2-0.6 (threshold insensitivity)"
    source = "Table 7, App."
    if lacks_pixel_masks(runs, dataset):  # "not run" first: a run never made is not a mask-less run
        sub = runs[runs["dataset"] == dataset]
        return Claim(text, source, dataset, detail=_not_run(sub, "AVAGA-R_u", BASELINES) or no_pixel_masks("iou@0.5"))
    sub = runs[runs["dataset"] == dataset].copy()
    cols = [f"iou@{t:.1f}" for t in THRESHOLDS]
    worst = sub[cols].astype(float).min(axis=1, skipna=False) if all(c in sub for c in cols) else math.nan
    baseline_iou = sub["iou"].astype(float) if "iou" in sub else math.nan
    sub[_WORST_IOU] = np.where(sub["method"] == "AVAGA-R_u", worst, baseline_iou)
    claim = _judge(sub, dataset, text, source, "iou", "AVAGA-R_u", BASELINES, _WORST_IOU,
                   prefix="AVAGA-R_u's lowest IoU over thresholds 0.2-0.6 vs the best baseline's IoU; ")
    if claim.n == 0:
        claim.detail = "needs AVAGA-R_u with iou_at and a measured baseline"
        return claim
    spread = _threshold_spread(sub, cols)
    if not math.isnan(spread):
        claim.detail += f"; mean IoU spread over thresholds {spread:.3f} (paper: up to 0.10 on MVTec)"
    return claim


def _threshold_spread(sub: pd.DataFrame, cols: Sequence[str]) -> float:
    """Mean over the categories with a measured baseline of AVAGA-R_u's (max - min) over thresholds of its
    per-threshold means over seeds."""
    judged = sub[sub["method"].isin(BASELINES) & sub["iou"].notna()]["category"] if "iou" in sub else []
    own = sub[(sub["method"] == "AVAGA-R_u") & sub["category"].isin(set(judged))]
    if own.empty:
        return math.nan
    means = own.groupby("category")[list(cols)].mean()
    return float((means.max(axis=1) - means.min(axis=1)).mean())
