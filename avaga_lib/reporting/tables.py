"""Paper-shaped tables: our mean ± std over seeds beside the paper's value and the difference, per category.

Laid out like the paper's Tables 2-8: rows are categories (then a mean row), columns the study's runs in the order
and with the paper columns that the study registry (:mod:`avaga_lib.study`) declares. The paper's numbers exist for
MVTec AD and the modified STC; the embedded, Magnetic Tile and user-folder datasets get our numbers only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from avaga_lib import study
from avaga_lib.evaluation import metrics as M
from avaga_lib.reporting.paper import PAPER_FILES, frame_value, paper_table
from avaga_lib.reporting.results import FLOOR_ROWS, PRIOR_CENTER, REFERENCE_ROWS, aggregate, with_prior_rows

THRESHOLDS: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6)  # Table 7
# Threshold-free metrics the paper lacks (PN 11), reported per method.
EXTRA_METRICS: tuple[str, ...] = (
    "image_auroc", "pixel_auroc", "aupro", "fp_area_normal", "iou_pooled",
    # issue 13: the reconstruction-error map beside the attention map, the label-free quantile threshold, and the
    # position priors a method must beat (their maps know nothing of the image)
    "pixel_auroc_recon", "aupro_recon", "prior_center_pixel_auroc", "prior_mean_pixel_auroc",
    "iou_best_threshold_oracle",
    # issue 20: the paper's literal rule beside the label-free one; issue 26: the floors
    "iou_literal", "floor_intensity_pixel_auroc", "floor_intensity_inv_pixel_auroc", "floor_train_residual_pixel_auroc",
    "floor_untrained_pixel_auroc",
)  # fmt: skip
# What each extra table is, in its title (the oracle is flagged: it reads the test masks, and nothing uses it)
_EXTRA_TITLES: dict[str, str] = {
    "pixel_auroc_recon": "pixel AUROC of the reconstruction-error map |x - x_hat|",
    "aupro_recon": "AUPRO of the reconstruction-error map |x - x_hat|",
    "iou_literal": "IoU of the paper's literal rule: AVAGA's attention map itself at 0.5 (no baseline has one)",
    "floor_intensity_pixel_auroc": "pixel AUROC of raw intensity (floor: no learning; its direction is not chosen)",
    "floor_intensity_inv_pixel_auroc": "pixel AUROC of inverse intensity (floor: no learning)",
    "floor_train_residual_pixel_auroc": "pixel AUROC of |x - mean normal training image| (floor: no learning)",
    "floor_untrained_pixel_auroc": "pixel AUROC of the same network untrained (floor: its initial weights, same seed)",
    "prior_center_pixel_auroc": "pixel AUROC of a centred Gaussian (position prior: no image content)",
    "prior_mean_pixel_auroc": "pixel AUROC of the mean normal validation map (position prior)",
    "iou_best_threshold_oracle": "ORACLE IoU at the best threshold chosen on the test masks (flagged: test labels)",
}
# issue 20: the best IoU a map's native grid allows (test masks pooled to it), shown beside every IoU cell
CAP = M.GRID_CAP
CAPPED: tuple[str, ...] = ("iou", "iou_literal")
CAP_NOTE = ("(cap x) = iou_grid_cap: the best IoU the map's native grid allows (the test masks pooled to the latent "
            "grid and upsampled as the attention is, best threshold; reads the test masks, an upper bound only); "
            "per-pixel maps (the baselines) have cap 1, not shown")
# Metrics that need pixel masks; an image-level-only dataset (no ground_truth/) says so instead of an empty table.
PIXEL_METRICS: tuple[str, ...] = ("iou", "iou_pooled", "pixel_auroc", "aupro")
# What each mask-less reason names: a pixel-AUROC question must not be told that IoU is unmeasurable (issue 23)
_PIXEL_LABELS: dict[str, str] = {
    "iou": "localization (IoU)", "iou_pooled": "localization (pooled IoU)", "iou_literal": "localization (IoU)",
    "pixel_auroc": "pixel AUROC", "aupro": "AUPRO", "pixel_auroc_recon": "pixel AUROC",
    "aupro_recon": "AUPRO",
}  # fmt: skip


def needs_pixel_masks(metric: str) -> bool:
    """True for a metric only ground-truth masks can measure (IoU of any rule, pixel AUROC, AUPRO, grid cap)."""
    return metric.startswith(("iou", "aupro", "floor_", "prior_")) or "pixel_auroc" in metric


def no_pixel_masks(metric: str = "iou") -> str:
    """The reason a mask-less dataset cannot measure ``metric``, naming that metric."""
    label = _PIXEL_LABELS.get(metric, "IoU at each threshold" if metric.startswith("iou@") else metric)
    return f"the dataset has no pixel masks (no ground_truth/ folder): {label} is not measurable"


NO_PIXEL_MASKS = no_pixel_masks("iou")


def _no_pixel_masks_md(metric: str) -> str:
    """Where a table of ``metric`` would be, for a caller that asks for one on a mask-less dataset."""
    return f"_The {no_pixel_masks(metric).removeprefix('the ')}._\n"


def lacks_pixel_masks(runs: pd.DataFrame, dataset: str) -> bool:
    """True when every run of ``dataset`` was evaluated without pixel masks (``pixel_metrics_available`` false)."""
    if runs.empty or "pixel_metrics_available" not in runs.columns:
        return False
    flags = runs.loc[runs["dataset"] == dataset, "pixel_metrics_available"]
    return len(flags) > 0 and not flags.fillna(True).astype(bool).any()


def _paper_lookup(dataset: str, metric: str, kind: str) -> tuple[pd.DataFrame | None, dict[str, str]]:
    """The paper table and column map for a (dataset, metric, table kind), or (None, {}) where the paper has none."""
    if kind == "main":
        name = PAPER_FILES.get((dataset, metric))
        return (paper_table(name), study.PAPER_MAIN_COLUMN) if name else (None, {})
    if kind == "ablation" and dataset == "mvtec" and metric == "iou":
        return paper_table("table8_ablation_iou.csv"), study.PAPER_ABLATION_COLUMN
    return None, {}


@dataclass
class Table:
    """One paper-shaped table: ``frame`` (wide, machine-readable, the CSV) and ``markdown`` (for humans)."""

    name: str
    title: str
    frame: pd.DataFrame
    markdown: str
    notes: list[str] = field(default_factory=list)


def comparison_table(
    runs: pd.DataFrame,
    dataset: str,
    metric: str,
    methods: Sequence[str],
    kind: str = "main",
    name: str = "",
    title: str = "",
) -> Table:
    """Rows = categories (then a mean row), columns per method: ours mean/std/n, paper value, difference.

    Methods with neither a measured run nor a paper value are dropped. The mean row averages per-category means
    over the categories we measured; its paper value averages the paper over the *same* categories so the
    difference compares like with like.
    """
    agg = aggregate(runs[runs["dataset"] == dataset] if not runs.empty else runs, metric)
    caps = aggregate(runs[runs["dataset"] == dataset], CAP) if metric in CAPPED and not runs.empty else None
    paper, paper_cols = _paper_lookup(dataset, metric, kind)
    measured_methods = set(agg["method"])
    methods = [
        m for m in methods if m in measured_methods or (paper is not None and paper_cols.get(m) in paper.columns)
    ]
    categories = list(dict.fromkeys(list(runs[runs["dataset"] == dataset]["category"]) if not runs.empty else []))
    if paper is not None:
        categories = [c for c in paper.index if c in categories] + [c for c in categories if c not in paper.index]
    rows: list[dict[str, Any]] = []
    for cat in categories:
        row: dict[str, Any] = {"category": cat}
        for m in methods:
            hit = agg[(agg["category"] == cat) & (agg["method"] == m)]
            mean = float(hit["mean"].iloc[0]) if len(hit) else math.nan
            row[m] = mean
            row[f"{m}_std"] = float(hit["std"].iloc[0]) if len(hit) else math.nan
            row[f"{m}_n"] = int(hit["n_seeds"].iloc[0]) if len(hit) else 0
            if caps is not None:  # issue 20: the best IoU the map's grid allows, beside every IoU cell
                cap = caps[(caps["category"] == cat) & (caps["method"] == m)]
                row[f"{m}_cap"] = float(cap["mean"].iloc[0]) if len(cap) else math.nan
            if paper is not None:
                pv = frame_value(paper, cat, paper_cols.get(m))
                row[f"{m}_paper"] = pv
                row[f"{m}_diff"] = mean - pv if not (math.isnan(mean) or math.isnan(pv)) else math.nan
        rows.append(row)
    frame = pd.DataFrame(rows)
    if rows:
        frame = pd.concat([frame, pd.DataFrame([_mean_row(frame, methods, paper is not None)])], ignore_index=True)
    seeds = sorted({int(s) for s in runs[runs["dataset"] == dataset]["seed"]}) if not runs.empty else []
    profiles = sorted(set(runs[runs["dataset"] == dataset]["profile"])) if not runs.empty else []
    notes = [f"dataset {dataset}; metric {metric}; profile {', '.join(profiles) or 'n/a'}; seeds {seeds}"]
    notes.append("ours = mean ± sample std over seeds (std only with 2+ seeds); (n=k) marks cells with fewer seeds")
    if caps is not None:
        notes.append(CAP_NOTE)
    if paper is None:
        notes.append("paper values n/a: the paper reports no numbers for this dataset/table; orderings still apply")
    else:
        notes.append("mean row: paper averaged over the same categories we measured")
    md = _markdown(frame, methods, paper is not None, max((len(seeds), 1)))
    if needs_pixel_masks(metric) and lacks_pixel_masks(runs, dataset):
        md = _no_pixel_masks_md(metric)  # not a table header without columns
        notes = notes[:1]  # the cap and paper footnotes would annotate a table that is not there
    return Table(name=name or f"{dataset}_{metric}", title=title, frame=frame, markdown=md, notes=notes)


def _mean_row(frame: pd.DataFrame, methods: Sequence[str], with_paper: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"category": "mean"}
    for m in methods:
        measured = frame[frame[m].notna()]
        row[m] = float(measured[m].mean()) if len(measured) else math.nan
        # std of the mean row: spread of the per-category means is not a seed std; report seed-std average instead
        row[f"{m}_std"] = float(measured[f"{m}_std"].mean()) if measured[f"{m}_std"].notna().any() else math.nan
        row[f"{m}_n"] = int(measured[f"{m}_n"].min()) if len(measured) else 0
        if f"{m}_cap" in frame:
            row[f"{m}_cap"] = float(measured[f"{m}_cap"].mean()) if len(measured) else math.nan
        if with_paper:
            paired = measured[measured[f"{m}_paper"].notna()]
            row[f"{m}_paper"] = float(paired[f"{m}_paper"].mean()) if len(paired) else float(
                frame[f"{m}_paper"].mean()
            )
            row[f"{m}_diff"] = float(paired[f"{m}_diff"].mean()) if len(paired) else math.nan
    return row


def _fmt(value: float, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _markdown(frame: pd.DataFrame, methods: Sequence[str], with_paper: bool, max_seeds: int) -> str:
    header = ["category"]
    for m in methods:
        shown = f"{m} (remedy)" if m in study.REMEDIES else m
        header += [f"{shown} ours", f"{m} paper", "Δ"] if with_paper else [shown]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for _, r in frame.iterrows():
        cells = [f"**{r['category']}**" if r["category"] == "mean" else str(r["category"])]
        for m in methods:
            ours = _fmt(r[m])
            if not math.isnan(r[f"{m}_std"]):
                ours += f" ± {_fmt(r[f'{m}_std'])}"
            if 0 < r[f"{m}_n"] < max_seeds and r["category"] != "mean":
                ours += f" (n={r[f'{m}_n']})"
            if f"{m}_cap" in r and not math.isnan(r[f"{m}_cap"]) and r[f"{m}_cap"] < 1.0:
                ours += f" (cap {_fmt(r[f'{m}_cap'])})"
            cells.append(ours)
            if with_paper:
                diff = r[f"{m}_diff"]
                cells += [_fmt(r[f"{m}_paper"]), "—" if math.isnan(diff) else f"{diff:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def threshold_table(runs: pd.DataFrame, dataset: str, method: str = "AVAGA-R_u") -> Table:
    """Table 7: IoU of ``method`` at thresholds 0.2-0.6 per category, beside the best measured baseline.

    "SoTA best" in the paper is the best quoted baseline per category; ours is the best *measured* baseline
    (AE-L2 / AE-SSIM at threshold 0.5), and the paper's SoTA value is shown beside it for MVTec.
    """
    sub = runs[runs["dataset"] == dataset] if not runs.empty else runs
    paper = paper_table("table7_threshold_iou.csv") if dataset == "mvtec" else None
    cols = [f"iou@{t:.1f}" for t in THRESHOLDS]
    rows: list[dict[str, Any]] = []
    for cat in dict.fromkeys(sub["category"]) if not sub.empty else []:
        own = sub[(sub["category"] == cat) & (sub["method"] == method)]
        if own.empty:
            continue
        row: dict[str, Any] = {"category": cat}
        base = sub[(sub["category"] == cat) & (sub["method"].isin(study.BASELINES))]
        base_means = base.groupby("method")["iou"].mean() if not base.empty and "iou" in base else pd.Series()
        row["best_baseline"] = str(base_means.idxmax()) if base_means.notna().any() else ""
        row["best_baseline_iou"] = float(base_means.max()) if base_means.notna().any() else math.nan
        if paper is not None:
            row["SoTA_best_paper"] = frame_value(paper, cat, "SoTA_best")
        for c in cols:
            vals = own[c].astype(float) if c in own else pd.Series(dtype=float)
            row[c] = float(vals.mean()) if vals.notna().any() else math.nan
            row[f"{c}_std"] = float(vals.std(ddof=1)) if vals.notna().sum() > 1 else math.nan
            if paper is not None:
                pv = frame_value(paper, cat, f"thr_{c.split('@')[1]}")
                row[f"{c}_paper"] = pv
                row[f"{c}_diff"] = row[c] - pv if not (math.isnan(row[c]) or math.isnan(pv)) else math.nan
        row["spread"] = float(max(row[c] for c in cols) - min(row[c] for c in cols)) if all(
            not math.isnan(row[c]) for c in cols
        ) else math.nan
        row["n_seeds"] = int(own["seed"].nunique())
        rows.append(row)
    frame = pd.DataFrame(rows)
    header = ["category", "best measured baseline", *(["paper SoTA"] if paper is not None else [])]
    header += [f"t={t}" + (" ours / paper" if paper is not None else "") for t in THRESHOLDS] + ["spread"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for _, r in frame.iterrows():
        cells = [str(r["category"]), f"{r['best_baseline'] or '—'} {_fmt(r['best_baseline_iou'])}"]
        if paper is not None:
            cells.append(_fmt(r["SoTA_best_paper"]))
        for c in cols:
            cell = _fmt(r[c]) + (f" ± {_fmt(r[f'{c}_std'])}" if not math.isnan(r[f"{c}_std"]) else "")
            if paper is not None:
                cell += f" / {_fmt(r[f'{c}_paper'])}"
            cells.append(cell)
        cells.append(_fmt(r["spread"]))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"{method} IoU at each threshold of the anomalous attention map (Table 7); spread = max - min"]
    if lacks_pixel_masks(runs, dataset):
        md, notes = _no_pixel_masks_md("iou@0.5"), []
    else:
        md = "\n".join(lines) + "\n"
    return Table(f"{dataset}_table7_thresholds", f"Table 7 ({dataset}): IoU vs threshold", frame, md, notes)


THRESHOLD_METHOD = "AVAGA-R_u"  # the run Table 7 studies
# Columns of Tables 2-5: the paper's runs in its order, then the trained remedies (issue 13), labelled, never in
# the recipe's place (the recipe stays the headline).
MAIN_COLUMNS: tuple[str, ...] = (*study.MAIN_METHODS, *study.REMEDIES)


def table_metrics(method: str) -> tuple[str, ...]:
    """The metrics :func:`build_tables` puts in a table cell of ``method``: IoU in Tables 2/4 (main runs) and 6/8
    (ablations), mean accuracy in Tables 3/5 (main runs), the extra metrics for every run, and the IoU at each
    threshold of Table 7 for :data:`THRESHOLD_METHOD`."""
    out: list[str] = []
    if method in MAIN_COLUMNS or method in study.ABLATION_METHODS:
        out.append("iou")
    if method in MAIN_COLUMNS:
        out.append("mean_accuracy")
    out += EXTRA_METRICS
    if method == THRESHOLD_METHOD:
        out += [f"iou@{t:.1f}" for t in THRESHOLDS]
    return tuple(out)


def build_tables(runs: pd.DataFrame) -> dict[str, Table]:
    """Every paper-shaped table the runs allow, per dataset (keys are file stems)."""
    tables: dict[str, Table] = {}
    if runs.empty:
        return tables
    for dataset in sorted(set(runs["dataset"])):
        tables[f"{dataset}_summary"] = summary_table(runs, dataset)
        # issue 23: without masks a pixel table would be a category column alone; the summary says it is left out
        masks = not lacks_pixel_masks(runs, dataset)
        is_stc = dataset == "stc"
        t_iou, t_acc = ("Table 4", "Table 5") if is_stc else ("Table 2", "Table 3")
        for metric, tname, label in (("iou", t_iou, "IoU"), ("mean_accuracy", t_acc, "mean accuracy")):
            if needs_pixel_masks(metric) and not masks:
                continue
            key = f"{dataset}_{tname.lower().replace(' ', '')}_{metric}"
            tables[key] = comparison_table(
                runs, dataset, metric, MAIN_COLUMNS, "main", key,
                f"{tname} ({dataset}): {label} per category" + (
                    " (remedies of issue 13 beside the paper's recipe)"
                    if runs.loc[runs["dataset"] == dataset, "method"].isin(study.REMEDIES).any() else ""),
            )
        key = f"{dataset}_table8_ablation_iou"
        sub = runs[runs["dataset"] == dataset]
        if sub["method"].isin(study.ABLATIONS).any() and masks:
            tables[key] = comparison_table(
                runs, dataset, "iou", study.ABLATION_METHODS, "ablation", key,
                f"Tables 6/8 ({dataset}): ablation IoU (cols 1-6 of Sec. 5)",
            )
        if masks and any(c.startswith("iou@") for c in sub.columns) and (sub["method"] == THRESHOLD_METHOD).any():
            tables[f"{dataset}_table7_thresholds"] = threshold_table(runs, dataset, THRESHOLD_METHOD)
        for metric in EXTRA_METRICS:
            if metric in sub.columns and sub[metric].notna().any() and (masks or not needs_pixel_masks(metric)):
                key = f"{dataset}_extra_{metric}"
                methods = list(dict.fromkeys([*study.MAIN_METHODS, *study.ABLATION_METHODS,
                                              *sorted(set(sub["method"]))]))
                tables[key] = comparison_table(
                    runs, dataset, metric, methods, "extra", key,
                    f"Threshold-free / extra ({dataset}): {_EXTRA_TITLES.get(metric, metric)} (PN 10-11; not in the "
                    "paper)",
                )
    return tables


# The study's one-glance table (issue 13): every run of a dataset on the metrics that say whether a map localizes.
SUMMARY_METRICS: tuple[tuple[str, str], ...] = (
    ("pixel_auroc", "pixel AUROC (anomaly map)"),  # AVAGA: 1 - A (or A^{c_a}); baselines: the residual map
    ("floor_untrained_pixel_auroc", "pixel AUROC, same net untrained"),  # issue 26: the run's own floor
    ("pixel_auroc_recon", "pixel AUROC (recon map)"),  # |x - x_hat| of every run, on equal terms
    ("aupro", "AUPRO"),
    ("iou", "IoU (label-free q-quantile)"),  # issue 20: every map at its normal-validation quantile
    ("iou_literal", "IoU, paper's rule (A at 0.5)"),  # AVAGA's attention map itself at 0.5 (PN 16)
    ("image_auroc", "image AUROC"),
    ("mean_accuracy", "mean accuracy"),
)


def summary_order(methods: Sequence[str]) -> list[str]:
    """The summary's rows: each paper run followed by its remedies (each with its arms) and its arms, then the
    ablations, baselines, the prior and the floors."""
    present = set(methods)
    order: list[str] = []
    for run in study.RUNS:
        if run.group == "main":
            order.append(run.name)
            for remedy in study.remedies_of(run.name):
                order += [remedy, *study.arms_of(remedy)]  # a remedy's own arm (issue 21) right below it
            order += study.arms_of(run.name)
    order += [*study.ABLATIONS, *study.BASELINES, *REFERENCE_ROWS]
    order += sorted(present - set(order))  # runs outside the registry (none today) last
    return [m for m in order if m in present]


def _role(method: str) -> str:
    if method == PRIOR_CENTER:
        return "position prior"
    if method in FLOOR_ROWS:
        return "floor (no learning)"
    if method in study.REMEDIES:
        return "remedy (issue 13)"
    if method in study.ARMS:
        return "arm (issue 21)"
    return {"main": "paper recipe", "ablations": "ablation", "baselines": "baseline"}.get(
        study.get(method).group if method in study.names() else "", "other")


def init_label(source: str) -> str:
    """A run's encoder initialisation in words, from its recorded ``pretrained_source`` (issue 21)."""
    if source == "imagenet":
        return "ImageNet init"
    if source.startswith("none"):  # "none", or "none (no pretrained encoder)" of the AE baselines
        return "random init"
    return "self-supervised init (proxy)" if "resnet18-inpaint" in source else f"init from {Path(source).name}"


def initialisation(notes: pd.Series) -> str:
    """The initialisations of a set of runs from their ``notes`` (``pretrained_source=...``); "" when unrecorded."""
    labels = {init_label(str(n).split("=", 1)[1]) for ns in notes if isinstance(ns, (tuple, list))
              for n in ns if str(n).startswith("pretrained_source=")}
    return " / ".join(sorted(labels))


def _seed_means(sub: pd.DataFrame, metric: str) -> pd.Series:
    """Per seed: the mean over categories of ``metric`` (seeds missing a category are dropped)."""
    if metric not in sub.columns:
        return pd.Series(dtype=float)
    valid = sub[sub[metric].notna()]
    n_cats = sub["category"].nunique()
    per_seed = valid.groupby("seed")[metric].agg(["mean", "count"])
    return per_seed.loc[per_seed["count"] == n_cats, "mean"].astype(float)


def summary_table(runs: pd.DataFrame, dataset: str) -> Table:
    """Rows = runs (the paper's recipe first, each remedy under it, baselines, the centred-Gaussian prior);
    columns = :data:`SUMMARY_METRICS` as mean ± sample std over seeds of the per-seed mean over categories.

    A dataset without pixel masks keeps every run on the image-level columns (image AUROC, mean accuracy) and says
    which columns and tables it leaves out (issue 23: its image-level numbers must stay in REPORT.md)."""
    sub = with_prior_rows(runs[runs["dataset"] == dataset])
    masks = not lacks_pixel_masks(runs, dataset)
    shown = [(m, label) for m, label in SUMMARY_METRICS if masks or not needs_pixel_masks(m)]
    qs = sorted(set(sub["val_quantile"].dropna())) if "val_quantile" in sub else []
    q = "/".join(f"{v:g}" for v in qs) or "n/a"
    rows: list[dict[str, Any]] = []
    for m in summary_order(list(dict.fromkeys(sub["method"]))):
        own = sub[sub["method"] == m]
        row: dict[str, Any] = {"method": m, "role": _role(m), "n_categories": int(own["category"].nunique()),
                               "init": initialisation(own["notes"]) if "notes" in own else ""}
        for metric, _ in shown:
            vals = _seed_means(own, metric)
            row[metric] = float(vals.mean()) if len(vals) else math.nan
            row[f"{metric}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            row[f"{metric}_n"] = len(vals)
            for end in ("lo", "hi"):  # the per-run test-image bootstrap interval, averaged over seeds
                ci = _seed_means(own, f"{metric}_ci_{end}") if metric in M.CI_METRICS else pd.Series(dtype=float)
                row[f"{metric}_ci_{end}"] = float(ci.mean()) if len(ci) else math.nan
        cap = _seed_means(own, CAP)
        row[CAP] = float(cap.mean()) if len(cap) else math.nan
        rows.append(row)
    frame = pd.DataFrame(rows)
    lines = _summary_markdown(frame, shown)
    seeds = sorted({int(s) for s in sub["seed"]}) if not sub.empty else []
    notes = [
        f"dataset {dataset}; profile {', '.join(sorted(set(sub['profile'].dropna()))) or 'n/a'}; image size "
        f"{', '.join(str(int(v)) for v in sorted(set(sub['image_size'].dropna())))} px; seeds {seeds}; "
        f"categories {sorted(set(sub['category']))}",
        "cell = mean ± sample std over seeds of the per-seed mean over categories (std only with 2+ seeds); "
        f"[lo, hi] = the {M.CI_LEVEL:.0%} percentile bootstrap interval over test images of each run "
        f"({M.BOOTSTRAP_RESAMPLES} stratified resamples), averaged over seeds",
        f"IoU (label-free q-quantile): every map thresholded at the {q} quantile of its own normal-validation pixels; "
        "IoU, paper's rule: AVAGA's attention map at 0.5 (no baseline has one); " + CAP_NOTE,
        "the prior's map is a centred Gaussian that never sees the image, the floors' maps learn nothing (raw "
        "intensity, its inverse, the residual to the mean training image; the same network untrained as a "
        "column): a run localizes only where it beats every one of them",
    ]
    if not masks:  # the IoU, cap, prior and floor notes would annotate columns that are not there
        notes = [notes[0], notes[1], _NO_MASK_SUMMARY]
    what = "the localization and detection metrics" if masks else "the image-level metrics (no pixel masks)"
    return Table(f"{dataset}_summary", f"Summary ({dataset}): every run on {what}", frame,
                 "\n".join(lines) + "\n", notes)


def _summary_markdown(frame: pd.DataFrame, shown: Sequence[tuple[str, str]]) -> list[str]:
    """The summary's markdown rows: mean ± std over seeds, the mean per-run test interval, the grid cap of IoUs."""
    header = ["run", "role", *(label for _, label in shown)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for _, r in frame.iterrows():
        role = f"{r['role']}, {r['init']}" if r["init"] else str(r["role"])  # issue 21: every row says its init
        cells = [f"**{r['method']}**" if r["role"] == "paper recipe" else str(r["method"]), role]
        for metric, _ in shown:
            cell = _fmt(r[metric], 3)
            cell += f" ± {_fmt(r[f'{metric}_std'], 3)}" if not math.isnan(r[f"{metric}_std"]) else ""
            if not math.isnan(r[f"{metric}_ci_lo"]):
                cell += f" [{_fmt(r[f'{metric}_ci_lo'])}, {_fmt(r[f'{metric}_ci_hi'])}]"
            if metric in CAPPED and not math.isnan(r[CAP]) and r[CAP] < 1.0 and not math.isnan(r[metric]):
                cell += f" (cap {_fmt(r[CAP])})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


_NO_MASK_SUMMARY = (
    "the dataset has no pixel masks (no ground_truth/ folder): pixel AUROC, AUPRO and IoU are not measurable, so "
    "their columns, the prior and floor rows and Tables 2/4 (IoU), 6/8 (ablation IoU) and 7 (IoU vs threshold) "
    "are left out; image AUROC and mean accuracy are measured for every run, the ablations included"
)
