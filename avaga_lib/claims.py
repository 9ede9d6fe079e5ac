"""The paper's claims checked against our numbers, seed by seed: does an ordering exceed the seed spread?

Each claim compares study runs by name (:mod:`avaga_lib.study`). In each category the side with the best mean over
seeds is taken on each side (the best baseline, say), and their values are paired by seed (the same seed trains
both: the same split, the same initialisation stream). A category *supports* a claim when every paired seed agrees
by more than the paper's two-decimal precision, *contradicts* it when every seed disagrees, and is *mixed* (within
the seed spread) otherwise; a paired bootstrap over all (category, seed) cells gives the 95% interval of the mean
difference. A claim on localization is not testable on runs whose latent grid is under 4x4 (64 px): it says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from avaga_lib import study
from avaga_lib.config import MIN_LATENT_GRID, latent_side
from avaga_lib.results import PRIOR_CENTER, aggregate, with_prior_rows
from avaga_lib.study import BASELINES
from avaga_lib.tables import NO_PIXEL_MASKS, PIXEL_METRICS, THRESHOLDS, lacks_pixel_masks, threshold_table


@dataclass
class Claim:
    """One paper claim (or study question) checked against our numbers."""

    claim: str
    source: str
    dataset: str
    k: int  # categories where the ordering of the means over seeds holds
    n: int  # categories where both sides were measured
    clear: int  # categories where every paired seed agrees (by more than TIE_TOLERANCE)
    detail: str = ""
    ties: int = 0  # categories where every paired seed is within TIE_TOLERANCE: neither supports nor refutes
    against: int = 0  # categories where every paired seed disagrees
    basis: str = ""  # the profile, image size, seeds and categories the verdict rests on
    untestable: str = ""  # why these runs cannot test the claim (empty: they can)
    ci: tuple[float, float] | None = None  # paired bootstrap 95% interval of the mean difference (3+ cells)

    @property
    def verdict(self) -> str:
        """``holds`` / ``partly`` / ``does not hold`` / ``within seed spread`` / ``tie`` / ``cannot test`` /
        ``not measured``."""
        if self.n == 0:
            return "not measured"
        if self.untestable:
            return "cannot test"
        if self.ties == self.n:
            return "tie (no difference measured)"
        if self.clear == self.n:
            return "holds"
        if self.clear > 0:
            return "partly"
        if self.against > 0:
            return "does not hold"
        return "within seed spread (undecided)"

    def sentence(self) -> str:
        """One line of REPORT.md."""
        if self.n == 0:
            return f"- **{self.claim}** ({self.source}, {self.dataset}): not measured — {self.detail}"
        head = f"- **{self.claim}** ({self.source}, {self.dataset}; {self.basis}): **{self.verdict}**"
        if self.untestable:
            return f"{head} — {self.untestable}. Measured anyway: {self.detail}"
        counts = (f"every seed agrees in {self.clear} of {self.n} categories, disagrees in {self.against}"
                  f"{f', tied in {self.ties}' if self.ties else ''}; the means order as claimed in {self.k}")
        ci = f"; mean paired difference, 95% bootstrap interval [{self.ci[0]:+.3f}, {self.ci[1]:+.3f}]" \
            if self.ci else ""
        return f"{head} — {counts}{ci}. {self.detail}"


# Differences below this vanish at the paper's two-decimal precision: counted as ties, never as support for a claim.
TIE_TOLERANCE = 0.005
BOOTSTRAP_RESAMPLES = 2000  # paired bootstrap over (category, seed) cells; fixed generator: the report is repeatable
LOCALIZATION_METRICS: tuple[str, ...] = (*PIXEL_METRICS, "pixel_auroc_recon", "aupro_recon")


@dataclass
class _Tally:
    k: int = 0
    n: int = 0
    clear: int = 0
    ties: int = 0
    against: int = 0


def _best(agg: pd.DataFrame, category: str, methods: Sequence[str]) -> pd.Series | None:
    side = agg[(agg["category"] == category) & agg["method"].isin(methods)]
    return None if side.empty else side.loc[side["mean"].idxmax()]


def _paired(sub: pd.DataFrame, metric: str, category: str, a: str, b: str) -> np.ndarray:
    """Per seed measured on both sides: value(a) - value(b) (their means when no seed is shared)."""
    cell = sub[(sub["category"] == category) & sub[metric].notna()]
    va = cell[cell["method"] == a].groupby("seed")[metric].mean()
    vb = cell[cell["method"] == b].groupby("seed")[metric].mean()
    common = va.index.intersection(vb.index)
    if len(common) == 0:
        return np.array([va.mean() - vb.mean()])
    return (va[common] - vb[common]).to_numpy(dtype=float)


def _compare(runs: pd.DataFrame, dataset: str, metric: str, better: str | Sequence[str],
             worse: str | Sequence[str]) -> tuple[_Tally, np.ndarray, list[str]]:
    """Per category: best of ``better`` vs best of ``worse`` (by mean), paired by seed; the tally, every paired
    difference and one line per category."""
    sub = runs[runs["dataset"] == dataset]
    agg = aggregate(sub, metric)
    better_l, worse_l = _as_list(better), _as_list(worse)
    tally, diffs, lines = _Tally(), [], []
    for cat in dict.fromkeys(agg["category"]):
        ra, rb = _best(agg, cat, better_l), _best(agg, cat, worse_l)
        if ra is None or rb is None:
            continue
        d = _paired(sub, metric, cat, ra["method"], rb["method"])
        diffs.append(d)
        tally.n += 1
        tally.k += int(ra["mean"] - rb["mean"] >= TIE_TOLERANCE)
        tally.clear += int(bool(np.all(d >= TIE_TOLERANCE)))
        tally.against += int(bool(np.all(d <= -TIE_TOLERANCE)))
        tally.ties += int(bool(np.all(np.abs(d) < TIE_TOLERANCE)))
        seeds = " ".join(f"{v:+.3f}" for v in d)
        lines.append(f"{cat}: {ra['method']} {ra['mean']:.3f} vs {rb['method']} {rb['mean']:.3f} "
                     f"(per seed {seeds})")
    return tally, (np.concatenate(diffs) if diffs else np.array([])), lines


def bootstrap_interval(diffs: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``diffs`` over ``resamples`` paired bootstrap draws."""
    rng = np.random.default_rng(seed)
    means = rng.choice(diffs, size=(resamples, diffs.size), replace=True).mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


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


def _untestable(runs: pd.DataFrame, dataset: str, methods: Sequence[str], metric: str) -> str:
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


# (claim text, source in the paper, metric, better, worse)
CLAIMS: tuple[tuple[str, str, str, Any, Any], ...] = (
    ("AVAGA-R_w localizes better than AVAGA-R_u (IoU)", "Table 2/4, Sec. 4", "iou", "AVAGA-R_w", "AVAGA-R_u"),
    ("AVAGA-R_w classifies better than AVAGA-R_u (mean accuracy)", "Table 3/5", "mean_accuracy", "AVAGA-R_w",
     "AVAGA-R_u"),
    ("AVAGA-R_u localizes better than the best baseline (IoU)", "Table 2/4, abstract", "iou", "AVAGA-R_u", BASELINES),
    ("AVAGA-R_u classifies better than the best baseline (mean accuracy)", "Table 3/5, abstract", "mean_accuracy",
     "AVAGA-R_u", BASELINES),
    ("AVAGA-R_w localizes better than the best baseline (IoU)", "Table 2/4, abstract", "iou", "AVAGA-R_w", BASELINES),
    ("AVAGA-R_w classifies better than the best baseline (mean accuracy)", "Table 3/5, abstract", "mean_accuracy",
     "AVAGA-R_w", BASELINES),
    ("AVAGA-R_u beats AVAGA-D_u (IoU)", "Table 2", "iou", "AVAGA-R_u", "AVAGA-D_u"),
    ("AVAGA-R_w beats AVAGA-D_w (IoU)", "Table 2", "iou", "AVAGA-R_w", "AVAGA-D_w"),
    ("The guided attention loss improves localization", "Table 6/8 cols 1 vs 3", "iou", "AVAGA-R_u",
     "AVAGA-R_u-noattn"),
    ("The convolutional latent beats a flat latent", "Table 6/8 cols 2 vs 3", "iou", "AVAGA-R_u", "AVAGA-R_u-flat"),
    ("Adversarial reconstruction improves weak localization", "Table 6/8 cols 4 vs 6", "iou", "AVAGA-R_w",
     "AVAGA-R_w-noadv"),
    ("SGB improves weak localization", "Table 6/8 cols 5 vs 6", "iou", "AVAGA-R_w", "AVAGA-R_w-noSGB"),
)


# Questions of this study (issue 13), not claims of the paper: does a map beat position, does a remedy help?
_REMEDY_QUESTIONS = tuple(
    (f"{r.name} localizes better than the literal {r.remedy_of} (pixel AUROC)", "issue 13, remedy", "pixel_auroc",
     r.name, r.remedy_of) for r in study.RUNS if r.remedy_of
)
_AVAGA_U_MAPS = ("AVAGA-R_u", *study.remedies_of("AVAGA-R_u"))  # the recipe and its remedies: the best one is judged
STUDY_QUESTIONS: tuple[tuple[str, str, str, Any, Any], ...] = (
    ("AVAGA-R_u's attention map beats the centred-Gaussian position prior (pixel AUROC)", "issue 13, position",
     "pixel_auroc", "AVAGA-R_u", PRIOR_CENTER),
    ("The best unsupervised AVAGA attention map (the recipe or a remedy) beats the centred-Gaussian prior "
     "(pixel AUROC)", "issue 13, position", "pixel_auroc", _AVAGA_U_MAPS, PRIOR_CENTER),
    ("The best baseline's residual map beats the centred-Gaussian position prior (pixel AUROC)",
     "issue 13, position", "pixel_auroc", BASELINES, PRIOR_CENTER),
    ("AVAGA-R_u localizes better than the best baseline (pixel AUROC, threshold-free)", "issue 13, PN 11",
     "pixel_auroc", "AVAGA-R_u", BASELINES),
    ("AVAGA-R_u detects better than the best baseline (image AUROC, threshold-free)", "issue 13, PN 11",
     "image_auroc", "AVAGA-R_u", BASELINES),
    *_REMEDY_QUESTIONS,
)


def _as_list(side: str | Sequence[str]) -> list[str]:
    return [side] if isinstance(side, str) else list(side)


def _sides(better: Any, worse: Any) -> list[str]:
    return _as_list(better) + _as_list(worse)


def check(runs: pd.DataFrame, dataset: str, text: str, source: str, metric: str, better: Any, worse: Any) -> Claim:
    """One claim on one dataset: the seed-paired tally, the bootstrap interval, its basis and testability."""
    tally, diffs, lines = _compare(runs, dataset, metric, better, worse)
    if tally.n == 0:
        missing = [m for m in _sides(better, worse) if not (runs["method"] == m).any()]
        detail = f"no runs of {', '.join(missing) or 'both sides in a common category'}"
        if metric in PIXEL_METRICS and lacks_pixel_masks(runs, dataset):
            detail = NO_PIXEL_MASKS
        return Claim(text, source, dataset, 0, 0, 0, detail)
    ci = bootstrap_interval(diffs) if diffs.size >= 3 else None
    return Claim(text, source, dataset, tally.k, tally.n, tally.clear, "; ".join(lines), tally.ties, tally.against,
                 _basis(runs, dataset, _sides(better, worse)), _untestable(runs, dataset, _sides(better, worse),
                                                                           metric), ci)


def evaluate_claims(runs: pd.DataFrame, questions: bool = False) -> list[Claim]:
    """Check each paper claim (or, with ``questions``, each of :data:`STUDY_QUESTIONS`) on every dataset with
    runs; the paper's claims end with the threshold-insensitivity claim of Table 7."""
    out: list[Claim] = []
    if runs.empty:
        return out
    runs = with_prior_rows(runs)
    for dataset in sorted(set(runs["dataset"])):
        for text, source, metric, better, worse in STUDY_QUESTIONS if questions else CLAIMS:
            out.append(check(runs, dataset, text, source, metric, better, worse))
        if not questions:
            out.append(_threshold_claim(runs, dataset))
    return out


def _threshold_claim(runs: pd.DataFrame, dataset: str) -> Claim:
    """Table 7: AVAGA-R_u at every threshold 0.2-0.6 beats the best baseline (insensitive to the threshold), judged
    on the means over seeds (a category supports it when all five thresholds beat, contradicts it otherwise)."""
    text = "AVAGA-R_u beats the best baseline at every threshold 0.2-0.6 (threshold insensitivity)"
    if lacks_pixel_masks(runs, dataset):
        return Claim(text, "Table 7, App.", dataset, 0, 0, 0, NO_PIXEL_MASKS)
    table = threshold_table(runs, dataset).frame
    if table.empty or table["best_baseline_iou"].isna().all():
        return Claim(text, "Table 7, App.", dataset, 0, 0, 0, "needs AVAGA-R_u with iou_at and a measured baseline")
    table = table[table["best_baseline_iou"].notna()]
    cols = [f"iou@{t:.1f}" for t in THRESHOLDS]
    k = int(sum(all(r[c] > r["best_baseline_iou"] for c in cols) for _, r in table.iterrows()))
    spread = table["spread"].mean()
    methods = ["AVAGA-R_u", *BASELINES]
    return Claim(text, "Table 7, App.", dataset, k, len(table), k,
                 f"on the means over seeds; mean IoU spread over thresholds {spread:.3f} (paper: up to 0.10 on MVTec)",
                 against=len(table) - k, basis=_basis(runs, dataset, methods),
                 untestable=_untestable(runs, dataset, methods, "iou"))
