"""What every number of REPORT.md rests on, in words: the protocol line per dataset, the deviations from the paper,
the runs measured under older rules, what the seed count does to an interval, and the scope banner and observations
a reader needs before the verdicts. Text only, from the runs frame (:func:`avaga_lib.reporting.results.collect_runs`);
:mod:`avaga_lib.reporting.report` places it in REPORT.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from scipy import stats

from avaga_lib.config import MIN_LATENT_GRID, latent_side
from avaga_lib.models.avaga.model import NOTE_NO_PRETRAINED
from avaga_lib.reporting.claims import CONFIDENCE
from avaga_lib.reporting.results import STALE_MEASUREMENT
from avaga_lib.reporting.tables import initialisation, lacks_pixel_masks
from avaga_lib.run_folder import ResultsTree
from avaga_lib.study import BASELINES

__all__ = ["deviations", "observations", "protocol_lines", "scope_banner", "seeds_caveat", "stale_measurement"]


def protocol_lines(runs: pd.DataFrame, protocol_path: Path | str | None) -> list[str]:
    """REPORT.md's protocol section: one line per dataset, then the measurement rules every number rests on."""
    lines: list[str] = []
    for dataset, grp in runs.groupby("dataset"):
        seeds = sorted(set(int(s) for s in grp["seed"]))
        lines.append(
            f"- **{dataset}**: {_count(grp['category'].nunique(), 'category', 'categories')} "
            f"({', '.join(sorted(set(grp['category'])))}), {_count(grp['method'].nunique(), 'method')}, "
            f"{_count(len(grp), 'run')}; profile {', '.join(sorted(set(grp['profile'])))}; "
            f"seeds {seeds}; epochs {_uniq(grp['epochs'])}; image size {_uniq(grp['image_size'])}; "
            f"image geometry {_uniq(grp['geometry'])}; score calibration {_uniq(grp['calibration'])}; "
            f"attention normalization {_uniq(grp['attention_norm'])}; "
            f"encoder initialisation {_initialisations(grp)}; "
            f"trained on {_devices(grp)}."
        )
    lines += [
        "- Thresholds: one label-free rule for every map and method (issue 20): a pixel is anomalous above the "
        f"{_uniq(runs.get('val_quantile', pd.Series(dtype=float)))} quantile of its own map's normal-validation "
        "pixels, an image above the 0.95 quantile of the normal-validation image scores (PN 8; the weak setting's "
        "classifier decides, PN 4). No test label touches a threshold. The paper's literal rule (AVAGA's attention "
        "map at 0.5, PN 16) is reported beside it as `iou_literal`.",
        "- Metrics: IoU averaged over anomalous test images (PN 10), each IoU with its grid cap (the best IoU the "
        "map's native grid allows); mean accuracy = balanced accuracy (PN 9); image AUROC, exact pixel AUROC and "
        "AUPRO (PN 11) beside them; per run, 95% bootstrap intervals over test images.",
        "- Every cell: mean ± sample std over seeds (std only with 2+ seeds); the paper reports single numbers.",
        *(f"- {line}" for line in stale_measurement(runs)),
    ]
    if protocol_path is not None:
        lines.append(f"- Choices for each ambiguity of the paper: see `{protocol_path}`.")
    return lines


def _devices(grp: pd.DataFrame) -> str:
    """``cpu`` / ``cuda (bf16 autocast: train.amp=auto)`` ... of a group of runs, or ``not recorded``."""
    names = _uniq(grp["device"]) if "device" in grp else "n/a"
    return "not recorded" if names == "n/a" else names.replace("cuda", "cuda (bf16 autocast where train.amp=auto)")


def _count(n: int, one: str, many: str = "") -> str:
    """``1 category`` / ``2 categories``."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _initialisations(grp: pd.DataFrame) -> str:
    """Each initialisation of a dataset's runs with the runs that had it (issue 21: no verdict hides random init)."""
    if "notes" not in grp:
        return "n/a"
    by_init: dict[str, list[str]] = {}
    for method, notes in zip(grp["method"], grp["notes"], strict=True):
        label = initialisation(pd.Series([notes])) or "not recorded"
        by_init.setdefault(label, [])
        if method not in by_init[label]:
            by_init[label].append(str(method))
    if len(by_init) == 1:
        return f"{next(iter(by_init))} for every run"
    return "; ".join(f"{label} ({', '.join(methods)})" for label, methods in sorted(by_init.items()))


def _uniq(series: pd.Series) -> str:
    vals = sorted({str(v) for v in series if v is not None and not (isinstance(v, float) and math.isnan(v))})
    return ", ".join(vals) or "n/a"


def deviations(runs: pd.DataFrame) -> list[str]:
    """Every way these runs differ from the paper's protocol, including the fallbacks each run recorded (notes)."""
    out: list[str] = []
    for profile in sorted(set(runs["profile"]) - {"paper"}):
        grp = runs[runs["profile"] == profile]
        what = ("a check of the pipeline, not a reproduction of the paper's values" if profile == "smoke" else
                "the smallest study that can show a signal on a CPU, not the paper's budget: orderings, not values")
        out.append(
            f"profile {profile}: fewer epochs ({_uniq(grp['epochs'])} instead of 150) and smaller images "
            f"({_uniq(grp['image_size'])} px instead of 256) than App. A.1 — {what}"
        )
    non_paper = sorted(set(runs["dataset"]) - {"mvtec", "stc"})
    if non_paper:
        out.append(f"dataset(s) {non_paper} are not in the paper: only the orderings of its claims can be compared")
    if (runs["method"].isin(BASELINES)).any():
        out.append("AE-L2 / AE-SSIM are measured here under our protocol; the paper quotes them from other papers "
                   "whose thresholds used anomalous images")
    if runs["method"].str.startswith("AVAGA-D").any():
        out.append("AVAGA-D: no public Celeb-A weights for the DCGAN parts; random initialisation (PN 7)")
    seeds = runs.groupby(["dataset", "category", "method"])["seed"].nunique()
    if (seeds < 3).any():
        out.append(f"{int((seeds < 3).sum())} of {len(seeds)} cells have fewer than 3 seeds")
    no_weights = runs[runs["notes"].map(lambda ns: NOTE_NO_PRETRAINED in ns)]
    if len(no_weights):  # said once, for the runs whose encoder asked for ImageNet weights (AVAGA, not the AEs)
        out.append(f"recorded fallback ({_count(len(no_weights), 'run')}: "
                   f"{', '.join(sorted(set(no_weights['method'])))}): no ImageNet weights in the torch hub cache, "
                   "so the ResNet-18 encoder started from random weights (no download offline)")
    # pretrained_source=... records where an encoder's weights came from: a record, not a fallback; the missing
    # weights are the line above, and the AE baselines have no pretrained encoder to miss
    notes = sorted({n for ns in runs["notes"] for n in ns
                    if n != NOTE_NO_PRETRAINED and not n.startswith("pretrained_source=")})
    for n in notes:
        count = int(sum(n in ns for ns in runs["notes"]))
        out.append(f"recorded fallback ({_count(count, 'run')}): {n}")
    return out


def stale_measurement(runs: pd.DataFrame) -> list[str]:
    """Datasets whose runs were evaluated before issue 20's measurement (:data:`STALE_MEASUREMENT`: their
    ``metrics.json`` lacks ``threshold_rule``): :func:`avaga_lib.reporting.results.collect_runs` reads their ``iou``
    from their ``iou_val_quantile`` (today's rule), but their test sets, bins and extras are the old ones. Named so that
    no reader compares them with the new numbers unawares."""
    if "measurement" not in runs.columns:
        return []
    old = runs[runs["measurement"] == STALE_MEASUREMENT]
    out = []
    for dataset, grp in old.groupby("dataset"):
        out.append(f"**{dataset}: {len(grp)} runs measured before issue 20** (stale until rerun): their IoU is "
                   "read from their own label-free quantile IoU (`iou_val_quantile`, today's rule; the old headline "
                   "at 0.5 is `iou_old_rule`), but their test sets were smaller (embedded: generator v2, 40 test "
                   "images; 10% validation), their pixel AUROC binned on validation edges; no floors, grid caps or "
                   "intervals; a claim comparing them with runs measured after issue 20 is not judged (cannot test)")
    return out


def seeds_caveat(runs: pd.DataFrame) -> str:
    """What the number of seeds does to the t-intervals, per dataset (issue 20: with 3 seeds the 95% t multiplier is
    4.30, with 5 it is 2.78), or "" without seeds. Read from the runs: the most seeds any run of a dataset has."""
    if runs.empty or "seed" not in runs.columns:
        return ""
    parts = []
    for dataset, grp in runs.groupby("dataset", sort=True):
        n = int(grp.groupby(["category", "method"])["seed"].nunique().max())
        if n >= 2:
            mult = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1))
            parts.append(f"{dataset}: {n} seeds per run at most, so one category's interval is the mean ± {mult:.2f} "
                         f"standard errors ({n - 1} degrees of freedom)")
        else:
            parts.append(f"{dataset}: 1 seed per run, so no verdict can rest on one category's seed spread")
    return ("**Seeds.** " + "; ".join(parts) + ". With so few seeds a verdict is decided only by a difference that is "
            "large against its spread over seeds; undecided is not evidence of no effect.")


def scope_banner(runs: pd.DataFrame) -> str:
    """The report's first lines when its runs cannot judge localization: datasets without pixel masks (no
    localization verdict exists for them), and every run at a latent grid under 4x4."""
    parts = []
    maskless = [d for d in sorted(set(runs.get("dataset", ()))) if lacks_pixel_masks(runs, d)]
    if maskless:
        parts.append(f"**{', '.join(maskless)}: the dataset has no pixel masks** (no ground_truth/ folder): only "
                     "image-level results (image AUROC, mean accuracy) and classification verdicts are measured; "
                     "no pixel metric or localization verdict exists for it.")
    sizes = pd.to_numeric(runs.get("image_size", pd.Series(dtype=float)), errors="coerce").dropna()
    if sizes.empty or (latent_side(sizes) >= MIN_LATENT_GRID).any():
        return " ".join(parts)
    # the localization sentence only where a dataset has masks: a mask-less one has no localization verdict at all
    judged = ("a latent grid under {g}x{g} cannot localize, so no localization claim is tested here"
              if len(maskless) < runs["dataset"].nunique() else "a latent grid under {g}x{g} could not localize "
              "even with masks").format(g=MIN_LATENT_GRID)
    parts.append(f"**A pipeline check, not a study.** Every run is at {_uniq(runs['image_size'])} px (profile "
                 f"{_uniq(runs['profile'])}): {judged}. `make reproduce PROFILE=cpu` is the smallest study that can "
                 f"show a signal ({ResultsTree.for_profile('cpu')}/reference holds its committed results).")
    return " ".join(parts)


def observations(runs: pd.DataFrame) -> list[str]:
    """Facts the reader needs to interpret the verdicts (e.g. attention maps that never cross the threshold)."""
    out: list[str] = []
    avaga = runs[runs["method"].str.startswith("AVAGA")]
    if not avaga.empty and "iou" in avaga and "fp_area_normal" in avaga:
        silent = avaga[(avaga["iou"].fillna(-1) == 0) & (avaga["fp_area_normal"].fillna(-1) == 0)]
        if len(silent):
            norms = _uniq(silent["attention_norm"])
            out.append(
                f"{len(silent)} of {len(avaga)} AVAGA runs flag no pixel at all (IoU 0 and no false-positive area; "
                f"attention normalization {norms}): the anomalous map 1 - A never exceeds the threshold. This is the "
                "behaviour PROTOCOL_NOTES 2 predicts for a sigmoid-normalized attention; notebook 06 re-normalizes the "
                "same trained maps under minmax / max after the fact (not the same as training with them: the "
                "trained remedies are their own registry runs). IoU orderings between such runs are ties."
            )
    if "image_size" in runs:
        small = runs[latent_side(pd.to_numeric(runs["image_size"], errors="coerce")) < MIN_LATENT_GRID]
        if len(small):
            sizes = ", ".join(f"{int(v)} px" for v in sorted(set(small["image_size"])))
            out.append(
                f"{len(small)} of {len(runs)} runs were trained at {sizes}: the encoders downsample 32x, so the latent "
                f"grid is under {MIN_LATENT_GRID}x{MIN_LATENT_GRID} and an attention map of so few cells cannot "
                "localize, whatever the loss. " + ("Their localization verdicts test the pipeline, not the paper's "
                "claims (use PROFILE=cpu, 128 px, or the paper profile)." if not all(
                    lacks_pixel_masks(runs, d) for d in set(small["dataset"])) else
                    "(Without pixel masks no localization verdict is made for them anyway.)")
            )
    return out
