"""claims.py on hand-made runs frames: the t-interval verdicts, the per-run test intervals, the selection and the
grid cap."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from avaga_lib.reporting import claims, testability
from avaga_lib.reporting.paper import paper_table

RW_RU_IOU = "AVAGA-R_w localizes better than AVAGA-R_u (IoU)"
RU_BASELINE_IOU = "AVAGA-R_u localizes better than the best baseline (IoU)"
BEST_MAP = ("The best unsupervised AVAGA attention map (the recipe or a remedy) beats the centred-Gaussian prior "
            "(pixel AUROC)")


def row(method: str, seed: int, dataset: str = "embedded", category: str = "granite", image_size: int = 128,
        **metrics: Any) -> dict[str, Any]:
    """One run as :func:`avaga_lib.reporting.results.collect_runs` gives it (cpu profile: a 4x4 latent grid)."""
    return {"dataset": dataset, "category": category, "method": method, "seed": seed, "profile": "cpu",
            "image_size": image_size, "epochs": 1, "device": None, "pixel_metrics_available": True, **metrics}


def paired_runs(diffs: list[float], metric: str = "iou", base: float = 0.30, **kw: Any) -> pd.DataFrame:
    """AVAGA-R_u at ``base`` and AVAGA-R_w at ``base + d`` for each seed: paired differences ``diffs``."""
    rows = []
    for seed, d in enumerate(diffs):
        rows.append(row("AVAGA-R_u", seed, **{metric: base}, **kw))
        rows.append(row("AVAGA-R_w", seed, **{metric: base + d}, **kw))
    return pd.DataFrame(rows)


def judged(runs: pd.DataFrame, text: str = RW_RU_IOU, dataset: str = "embedded",
           questions: bool = False) -> claims.Claim:
    return {c.claim: c for c in claims.evaluate_claims(runs, questions=questions) if c.dataset == dataset}[text]


# ------------------------------------------------------------------------------------------- the verdict rules


def test_negative_in_every_seed_is_contradicted_only_when_the_interval_is_below_zero() -> None:
    # the audit's case: every seed negative, one close to 0; s = 0.034 over 3 cells: [-0.127, +0.044] contains 0
    near = judged(paired_runs([-0.056, -0.066, -0.002]))
    assert near.verdict == "undecided (interval contains 0)"
    assert near.ci is not None and near.ci[0] < 0 < near.ci[1]
    # the same seeds, the third one as far from 0 as the others: s = 0.010, [-0.081, -0.031]
    far = judged(paired_runs([-0.056, -0.066, -0.046]))
    assert far.verdict == "contradicted"
    assert far.ci is not None and far.ci[1] < 0
    assert far.mean_diff == pytest.approx(-0.056)


def test_an_interval_above_zero_holds_and_one_containing_zero_is_undecided() -> None:
    holds = judged(paired_runs([0.05, 0.06, 0.04]))  # mean +0.05, s = 0.01: [+0.025, +0.075]
    assert holds.verdict == "holds" and holds.ci is not None and holds.ci[0] > 0
    mixed = judged(paired_runs([0.10, -0.05, 0.02]))  # the mean is positive, the interval is not
    assert mixed.k == 1 and mixed.verdict == "undecided (interval contains 0)"
    sentence = holds.sentence()
    assert "**holds**" in sentence and "mean paired difference +0.050, 95% t-interval [+0.025, +0.075] (df 2)" \
        in sentence and "over 1 category x 3 seeds" in sentence
    assert "per seed +0.050 +0.060 +0.040" in sentence  # every paired difference stays in the detail
    assert "bootstrap" not in sentence  # no per-run intervals in these runs, and nothing else is called one


def test_interval_width_is_the_student_t_formula() -> None:
    """2 categories x 2 seeds: the width is 2 t_{0.975, n-1} s / sqrt(n) over the n = 4 paired cells."""
    diffs = {"granite": [0.07, -0.01], "weave": [0.12, 0.03]}
    runs = pd.concat([paired_runs(d, category=cat) for cat, d in diffs.items()], ignore_index=True)
    claim = judged(runs)
    cells = np.array([v for d in diffs.values() for v in d])
    s, n = cells.std(ddof=1), cells.size
    assert claim.ci is not None
    lo, hi = claim.ci
    assert hi - lo == pytest.approx(2 * stats.t.ppf(0.975, n - 1) * s / math.sqrt(n), abs=1e-9)
    assert (lo + hi) / 2 == pytest.approx(cells.mean(), abs=1e-9)
    assert claims.t_interval(cells) == pytest.approx((lo, hi), abs=1e-12)
    assert "(df 3) over 2 categories x 2 seeds" in claim.sentence()


def test_one_seed_gives_no_interval() -> None:
    claim = judged(paired_runs([0.20]))  # a large difference, but a single cell has no spread
    assert claim.ci is None and claims.t_interval([0.20]) is None
    assert claim.verdict == "undecided (one seed: no interval)"
    assert "paired difference +0.200 over 1 category x 1 seed: one cell gives no interval" in claim.sentence()


def test_not_measured_and_cannot_test_are_kept() -> None:
    only_ru = pd.DataFrame([row("AVAGA-R_u", 0, iou=0.3)])
    assert judged(only_ru).verdict == "not measured"
    smoke = paired_runs([0.05, 0.06, 0.04], image_size=64)  # 2x2 latent grid
    claim = judged(smoke)
    assert claim.verdict == "cannot test" and "2x2" in claim.sentence() and "Measured anyway" in claim.sentence()


def test_no_fixed_margin_is_left() -> None:
    for name in ("TIE_TOLERANCE", "bootstrap_interval", "BOOTSTRAP_RESAMPLES"):
        assert not hasattr(claims, name)


# ------------------------------------------------------------------------------ per-run test bootstrap intervals


def test_each_side_shows_the_mean_of_its_runs_test_bootstrap_intervals() -> None:
    rows = []
    for seed, (ru, rw) in enumerate(((0.47, 0.55), (0.48, 0.57), (0.475, 0.56))):
        rows.append(row("AVAGA-R_u", seed, iou=ru, iou_ci_lo=ru - 0.035, iou_ci_hi=ru + 0.035))
        rows.append(row("AVAGA-R_w", seed, iou=rw))  # a run evaluated before the intervals: no columns filled
    claim = judged(pd.DataFrame(rows))
    assert "AVAGA-R_u 0.475 (test bootstrap [0.44, 0.51] per run, mean over seeds)" in claim.detail
    assert "AVAGA-R_w 0.560 vs" in claim.detail  # nothing extra where the run has no interval


def test_runs_without_interval_columns_print_nothing_extra() -> None:
    claim = judged(paired_runs([0.05, 0.06, 0.04]))
    assert "test bootstrap" not in claim.sentence() and claim.verdict == "holds"


# ---------------------------------------------------------------------------------------- selection on the test set


def test_a_side_of_several_runs_names_the_selection_and_every_candidate() -> None:
    rows = []
    maps = {"AVAGA-R_u": 0.52, "AVAGA-R_u-maxnorm": 0.72, "AVAGA-R_u-gain": 0.61}
    for seed in (0, 1, 2):
        for method, value in maps.items():
            rows.append(row(method, seed, pixel_auroc=value + 0.01 * seed, prior_center_pixel_auroc=0.6))
    claim = judged(pd.DataFrame(rows), BEST_MAP, questions=True)
    assert ("AVAGA-R_u-maxnorm 0.730 [best of 3 by mean test pixel_auroc: selected on the test set; "
            "AVAGA-R_u-maxnorm 0.730, AVAGA-R_u-gain 0.620, AVAGA-R_u 0.530]") in claim.sentence()
    assert claim.diffs == pytest.approx((0.12, 0.13, 0.14))  # the winner's seeds, paired with the prior's


def test_the_best_baseline_is_a_named_selection_too() -> None:
    rows = []
    for seed in (0, 1):
        rows += [row("AVAGA-R_u", seed, iou=0.30), row("AE-L2", seed, iou=0.20), row("AE-SSIM", seed, iou=0.25)]
    claim = judged(pd.DataFrame(rows), RU_BASELINE_IOU)
    assert "AE-SSIM 0.250 [best of 2 by mean test iou: selected on the test set; AE-SSIM 0.250, AE-L2 0.200]" \
        in claim.sentence()
    only_l2 = pd.DataFrame([row("AVAGA-R_u", 0, iou=0.3), row("AE-L2", 0, iou=0.2)])
    assert "AE-L2 0.200 [the only one of 2 candidates measured]" in judged(only_l2, RU_BASELINE_IOU).sentence()


# ---------------------------------------------------------------------------------------------------- grid cap


def test_an_iou_claim_the_grid_caps_under_the_papers_number_cannot_be_tested() -> None:
    # MVTec bottle: the paper's AVAGA-R_w IoU is 0.39 (Table 2); a 4x4 map cannot reach more than 0.083 here
    runs = paired_runs([0.05, 0.06, 0.04], dataset="mvtec", category="bottle", iou_grid_cap=0.083)
    claim = judged(runs, dataset="mvtec")
    assert claim.verdict == "cannot test"
    assert "at this resolution the best reachable IoU is 0.083 < the paper's 0.39" in claim.sentence()
    assert "Measured anyway: mean paired difference +0.050" in claim.sentence()


def test_a_dataset_without_paper_cells_is_held_against_the_papers_mvtec_mean() -> None:
    mvtec_mean = float(paper_table("table2_mvtec_iou.csv")["AVAGA-R_w"].mean())
    claim = judged(paired_runs([0.05, 0.06, 0.04], iou_grid_cap=0.083))
    assert claim.verdict == "cannot test"
    assert f"the best reachable IoU is 0.083 < the paper's {mvtec_mean:.2f}" in claim.sentence()
    assert "MVTec AD mean IoU" in claim.sentence() and "embedded has no paper cell" in claim.sentence()


def test_a_cap_above_the_papers_number_or_no_cap_column_leaves_the_interval_to_judge() -> None:
    assert judged(paired_runs([0.05, 0.06, 0.04], iou_grid_cap=0.95)).verdict == "holds"
    assert judged(paired_runs([0.05, 0.06, 0.04])).verdict == "holds"  # runs from before iou_grid_cap
    # not an IoU claim: the cap does not apply to pixel AUROC
    rows = []
    for seed in (0, 1, 2):
        rows += [row("AVAGA-R_u", seed, pixel_auroc=0.70 + 0.01 * seed, iou_grid_cap=0.01,
                     prior_center_pixel_auroc=0.6)]
    position = "AVAGA-R_u's attention map beats the centred-Gaussian position prior (pixel AUROC)"
    assert judged(pd.DataFrame(rows), position, questions=True).verdict == "holds"


# ------------------------------------------------------------------- issue 23: classifiers that cannot be ranked

RW_RU_ACC = "AVAGA-R_w classifies better than AVAGA-R_u (mean accuracy)"
RU_BASELINE_ACC = "AVAGA-R_u classifies better than the best baseline (mean accuracy)"


def accuracy_runs(ru: list[float], rw: list[float], **extra: Any) -> pd.DataFrame:
    """AVAGA-R_u and AVAGA-R_w with the given mean accuracies per seed (``extra``: columns of both sides' rows)."""
    rows = [row("AVAGA-R_u", s, mean_accuracy=a, **extra) for s, a in enumerate(ru)]
    return pd.DataFrame(rows + [row("AVAGA-R_w", s, mean_accuracy=a, **extra) for s, a in enumerate(rw)])


def test_a_side_whose_decisions_are_one_class_cannot_be_ranked() -> None:
    """The strips of issue 23: both sides call every test image normal (0.500), one seed slightly under it."""
    runs = accuracy_runs([0.487, 0.490, 0.485], [0.5, 0.5, 0.5])
    shares = {"AVAGA-R_u": [0.02, 0.03, 0.01], "AVAGA-R_w": [0.0, 0.0, 0.0]}  # from predictions.csv
    runs[testability.CALLED] = [v for m in ("AVAGA-R_u", "AVAGA-R_w") for v in shares[m]]
    claim = judged(runs, RW_RU_ACC)
    assert claim.verdict == "cannot test"  # the paired differences alone would say "holds"
    assert claims.t_interval(claim.diffs) is not None and claims.t_interval(claim.diffs)[0] > 0
    sentence = claim.sentence()
    assert "AVAGA-R_w predicts one class (every test image called normal in all 3 runs)" in sentence
    assert "AVAGA-R_u classifies below chance" in sentence  # its interval lies under 0.5
    assert "Measured anyway" in sentence


def test_without_decisions_an_exact_chance_accuracy_in_every_run_means_one_class() -> None:
    claim = judged(accuracy_runs([0.70, 0.72, 0.71], [0.5, 0.5, 0.5]), RW_RU_ACC)
    assert claim.verdict == "cannot test"
    assert "AVAGA-R_w predicts one class (mean accuracy exactly 0.500 in every run" in claim.sentence()
    # a baseline side too: the best baseline is named as the side that predicts one class
    rows = [row("AVAGA-R_u", s, mean_accuracy=0.7 + 0.01 * s) for s in range(3)]
    rows += [row("AE-SSIM", s, mean_accuracy=0.5) for s in range(3)]
    baseline = judged(pd.DataFrame(rows), RU_BASELINE_ACC)
    assert baseline.verdict == "cannot test" and "AE-SSIM predicts one class" in baseline.sentence()


def test_a_side_at_chance_within_its_interval_cannot_be_ranked() -> None:
    claim = judged(accuracy_runs([0.46, 0.55, 0.52], [0.80, 0.86, 0.83]), RW_RU_ACC)
    assert claim.verdict == "cannot test"
    assert "AVAGA-R_u classifies at chance (mean accuracy 0.510, 95% t-interval [" in claim.sentence()
    assert "AVAGA-R_w" not in claim.untestable  # the side above chance is not blamed


def test_two_classifiers_above_chance_are_judged_by_the_interval() -> None:
    runs = accuracy_runs([0.70, 0.72, 0.71], [0.80, 0.83, 0.81])
    runs[testability.CALLED] = 0.4  # both call some images anomalous, some normal
    assert judged(runs, RW_RU_ACC).verdict == "holds"
    # the rule is for classification only: an IoU claim next to a 0.500 mean accuracy is judged as before
    iou = paired_runs([0.05, 0.06, 0.04], mean_accuracy=0.5)
    assert judged(iou).verdict == "holds"


def test_decisions_are_read_from_each_runs_predictions_csv(tmp_path: Path) -> None:
    one_class, mixed = tmp_path / "a", tmp_path / "b"
    for folder, labels in ((one_class, [0, 0, 0, 0]), (mixed, [0, 1, 1, 0])):
        folder.mkdir()
        pd.DataFrame({"label": [0, 0, 1, 1], "pred_label": labels}).to_csv(folder / "predictions.csv", index=False)
    runs = pd.DataFrame([row("AVAGA-R_u", 0, run_dir=str(one_class)), row("AVAGA-R_w", 0, run_dir=str(mixed)),
                         row("AE-L2", 0, run_dir=str(tmp_path / "none"))])
    shares = testability.with_decisions(runs)[testability.CALLED]
    assert shares.iloc[0] == 0.0 and shares.iloc[1] == 0.5 and math.isnan(shares.iloc[2])
    assert testability.with_decisions(pd.DataFrame([row("AVAGA-R_u", 0)])).columns.tolist()[-1] != testability.CALLED


# ------------------------------------------------------------------------------------ measurements not mixed


def test_runs_measured_before_issue_20_are_not_compared_with_runs_measured_after() -> None:
    # one side rerun under today's rules, its counterpart still from the old measurement: the paired differences
    # alone would say "holds", but they would measure the change of test set and bins, not the methods
    runs = paired_runs([0.05, 0.06, 0.04])
    runs["measurement"] = np.where(runs["method"] == "AVAGA-R_u", "before issue 20", "issue 20")
    claim = judged(runs)
    assert claim.verdict == "cannot test"
    assert "AVAGA-R_u before issue 20" in claim.sentence() and "Measured anyway" in claim.sentence()
    # the same runs all measured alike are judged as usual, whichever the measurement
    for measurement in ("issue 20", "before issue 20"):
        runs["measurement"] = measurement
        assert judged(runs).verdict == "holds"
