"""Reproduced vs reference (issue 12): every table cell against a reference of the same config and seeds, the
REPORT.md section and CSV, and `make reference` (the curated copy). Each test builds its own tiny reference."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from avaga_lib.config import make_config
from avaga_lib.io import write_json
from avaga_lib.reporting import report
from avaga_lib.reporting.reference import (
    ANCHOR,
    CSV_NAME,
    DIFFERS,
    MISSING,
    NO_SPREAD,
    REPRODUCED,
    SPREAD_Z,
    STRICT_EXIT,
    TOLERANCE,
    WITHIN_SPREAD,
    read_comparison,
)
from avaga_lib.reporting.results import collect_runs
from avaga_lib.reporting.tables import table_metrics

RU = {"train.setting": "unsupervised"}
L2 = {"method": "ae_l2"}
METRICS = {"iou": 0.25, "iou_pooled": 0.3, "mean_accuracy": 0.7, "image_auroc": 0.6, "pixel_auroc": 0.8,
           "aupro": 0.5, "fp_area_normal": 0.01, "pixel_metrics_available": True, "device": "cpu",
           "pixel_auroc_recon": 0.85, "aupro_recon": 0.6, "iou_literal": 0.2, "prior_center_pixel_auroc": 0.5,
           "prior_mean_pixel_auroc": 0.52, "iou_best_threshold_oracle": 0.3, "floor_intensity_pixel_auroc": 0.55,
           "floor_intensity_inv_pixel_auroc": 0.45, "floor_train_residual_pixel_auroc": 0.6,
           "floor_untrained_pixel_auroc": 0.5,
           "iou_at": {"0.2": 0.1, "0.3": 0.2, "0.4": 0.3, "0.5": 0.25, "0.6": 0.2},
           "notes": ["pretrained_source=none (no pretrained encoder)"]}


def run(base: Path, overrides: dict, metrics: dict | None = None, category: str = "weave",
        root: str = "") -> Path:
    """A run folder (config.json + metrics.json) as save_run writes it."""
    cfg = make_config("smoke", {"data.dataset": "embedded", "data.category": category, "data.root": root,
                                "results_dir": str(base), "train.epochs": 1, **overrides})
    write_json(cfg.run_dir / "config.json", cfg.to_dict())
    write_json(cfg.run_dir / "metrics.json", {**METRICS, **(metrics or {})})
    return cfg.run_dir


def tree(base: Path, **kw) -> Path:
    """AVAGA-R_u seeds 0 and 1, AE-L2 seed 0, category weave."""
    run(base, {**RU, "train.seed": 0}, kw.get("ru0"), root=kw.get("root", ""))
    run(base, {**RU, "train.seed": 1}, {"iou": 0.35}, root=kw.get("root", ""))
    run(base, L2, kw.get("l2"), root=kw.get("root", ""))
    return base


def compare(ours: Path, ref: Path) -> pd.DataFrame:
    comparison = report.reference_comparison(collect_runs(ours), ref)
    return comparison.frame.set_index(["method", "metric"])


def test_same_runs_are_reproduced_cell_by_cell(tmp_path: Path) -> None:
    # paths differ (results_dir, data.root): they say where a run is, not what it computes
    ours, ref = tree(tmp_path / "ours", root="/data/a"), tree(tmp_path / "ref", root="/data/b")
    frame = compare(ours, ref)
    assert set(frame["status"]) == {REPRODUCED}
    expected = {("AVAGA-R_u", m) for m in table_metrics("AVAGA-R_u")} | {("AE-L2", m) for m in table_metrics("AE-L2")}
    assert set(frame.index) == expected
    assert frame.loc[("AVAGA-R_u", "iou"), "ours"] == pytest.approx(0.30)  # the table's cell: mean over seeds 0, 1
    assert frame.loc[("AVAGA-R_u", "iou"), "seeds"] == "0,1"
    assert ("AVAGA-R_u", "iou@0.2") in frame.index and ("AE-L2", "iou@0.2") not in frame.index  # Table 7: R_u only


def test_a_changed_value_differs_with_both_values(tmp_path: Path) -> None:
    ours = tree(tmp_path / "ours", l2={"iou": 0.25 + 0.012, "aupro": 0.5 + TOLERANCE / 10})
    frame = compare(ours, tree(tmp_path / "ref"))
    cell = frame.loc[("AE-L2", "iou")]
    assert cell["status"] == DIFFERS
    assert (cell["ours"], cell["reference"]) == pytest.approx((0.262, 0.25))
    assert cell["diff"] == pytest.approx(0.012)
    assert frame.loc[("AE-L2", "aupro"), "status"] == REPRODUCED  # within the tolerance
    assert (frame["status"] == DIFFERS).sum() == 1


def test_unavailable_on_one_side_differs(tmp_path: Path) -> None:
    frame = compare(tree(tmp_path / "ours", l2={"pixel_auroc": None}), tree(tmp_path / "ref"))
    cell = frame.loc[("AE-L2", "pixel_auroc")]
    assert cell["status"] == DIFFERS and cell["reason"] == "unavailable here" and math.isnan(cell["ours"])


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"train.threads": 2}, "train.threads 1 here, 2 in the reference"),
     ({"train.epochs": 3}, "train.epochs 1 here, 3 in the reference"),
     ({"data.image_size": 128}, "data.image_size 64 here, 128 in the reference"),
     ({"profile": "paper", "data.image_size": 256}, "profile 'smoke' here, 'paper' in the reference")],
)
def test_a_reference_of_another_config_is_not_comparable(tmp_path: Path, change: dict, reason: str) -> None:
    ours = tree(tmp_path / "ours")
    ref = tmp_path / "ref"
    run(ref, {**RU, "train.seed": 0, **change})
    run(ref, {**RU, "train.seed": 1, **change}, {"iou": 0.35})
    run(ref, L2)
    frame = compare(ours, ref)
    ru = frame.loc["AVAGA-R_u"]
    assert set(ru["status"]) == {MISSING} and all(reason in r for r in ru["reason"]), ru["reason"].iloc[0]
    assert set(frame.loc["AE-L2"]["status"]) == {REPRODUCED}


def test_missing_seed_method_device_and_encoder(tmp_path: Path) -> None:
    ours = tree(tmp_path / "ours")
    ref = tmp_path / "ref"
    run(ref, {**RU, "train.seed": 0})  # no seed 1
    frame = compare(ours, ref)
    assert "no AVAGA-R_u run at seed 1" in frame.loc[("AVAGA-R_u", "iou"), "reason"]
    assert "no AE-L2 run for embedded/weave" in frame.loc[("AE-L2", "iou"), "reason"]
    ref2 = tree(tmp_path / "ref2", l2={"device": "cuda"}, ru0={"notes": ["pretrained_source=imagenet"]})
    frame = compare(ours, ref2)
    assert "record.pretrained_source" in frame.loc[("AVAGA-R_u", "iou"), "reason"]
    # the device is the machine, not the config (issue 22): a run on another device is compared, and says so
    cell = frame.loc[("AE-L2", "iou")]
    assert cell["status"] == REPRODUCED
    assert cell["machine"] == "another machine: device 'cpu' here, 'cuda' in the reference"


def test_no_reference_at_all(tmp_path: Path) -> None:
    frame = compare(tree(tmp_path / "ours"), tmp_path / "absent")
    assert set(frame["status"]) == {MISSING} and frame["reason"].iloc[0].startswith("no reference at")


def test_report_section_csv_and_terminal_line(tmp_path: Path) -> None:
    results = tree(tmp_path / "results", l2={"iou": 0.262})
    # the reference inside the results tree (as results/reference) is never read as runs
    ref = tree(results / "reference")
    assert len(collect_runs(results)) == 3
    written = report.write_report(results, reference_dir=ref)
    text = written.report_md.read_text()
    assert "## Reproduced vs reference" in text and text.index("## Reproduced vs reference") < text.index("## Tables")
    assert ("| embedded | weave | AE-L2 | iou | 0 | 0.262 | 0.25 | 0.012 | — | differs (same CPU machine, where a run "
            "is bit-reproducible: beyond the tolerance) |") in text
    n = len(written.comparison.frame)
    assert f"- {n} cells: same machine (cpu); cpu_capability, torch_version not recorded on either side" in text
    assert (f"**{n - 1} of {n} cells reproduced exactly, 0 within seed spread, 1 differ (max |diff| 0.012), "
            "0 not in reference.**") in text
    assert (results / "tables" / CSV_NAME) == written.comparison_csv
    line = report.reference_summary(results)
    assert line == (f"reference: {n - 1}/{n} cells reproduced exactly, 0 within seed spread, 1 differ (max |diff| "
                    f"0.012), 0 not in reference; see {results}/REPORT.md#{ANCHOR}")
    back = read_comparison(written.comparison_csv)
    assert back.count(REPRODUCED) == n - 1 and back.count(DIFFERS) == 1
    assert report.reference_summary(tmp_path / "nothing") is None
    # the reference's own report does not compare it with itself
    assert report.write_report(ref, reference_dir=ref).comparison is None


def test_refresh_reference_copies_the_curated_subset(tmp_path: Path) -> None:
    results = tree(tmp_path / "results")
    ru = results / "embedded" / "weave" / "AVAGA-R_u-seed0"
    for name in ("checkpoint.pt", "predictions.csv", "fig_qualitative.png", "losses.csv", "splits.json"):
        (ru / name).write_text("x")
    (ru / "maps").mkdir()
    ref = tmp_path / "reference"
    other = run(ref, L2, category="granite")
    shutil.move(str(other.parents[1]), str(ref / "other"))  # runs of another dataset stay
    stale = run(ref, {**RU, "train.seed": 7})  # an older run of the same dataset: replaced
    assert stale.exists()
    written = report.refresh_reference(results, ref)
    assert sorted(p.name for p in (ref / "embedded" / "weave" / "AVAGA-R_u-seed0").iterdir()) == [
        "config.json", "losses.csv", "metrics.json", "splits.json"]
    assert not stale.exists() and (ref / "other" / "granite" / "AE-L2-seed0" / "metrics.json").exists()
    assert written.report_md == ref / "REPORT.md" and "Reproduced vs reference" not in written.report_md.read_text()
    assert (ref / "tables" / "embedded_table2_iou.csv").exists() and not (ref / "tables" / CSV_NAME).exists()
    assert json.loads((ref / "embedded" / "weave" / "AE-L2-seed0" / "metrics.json").read_text())["iou"] == 0.25
    # the refreshed reference reproduces the tree it came from
    assert set(compare(results, ref)["status"]) == {REPRODUCED}
    with pytest.raises(report.ReportError, match="no finished run"):
        report.refresh_reference(tmp_path / "empty", ref)
    with pytest.raises(report.ReportError, match="is the reference itself"):
        report.refresh_reference(ref, ref)


def test_each_results_tree_has_its_own_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PROFILE=cpu writes results/cpu and compares with results/cpu/reference; a tree without one falls back."""
    from avaga_lib import paths
    from avaga_lib.orchestration import pipeline

    root = tmp_path.resolve()
    monkeypatch.setenv("AVAGA_PROJECT_ROOT", str(root))
    assert paths.reference_for("results") == root / "results" / "reference"
    assert paths.reference_for("results/cpu") == root / "results" / "cpu" / "reference"
    assert paths.reference_for(root / "elsewhere") == root / "elsewhere" / "reference"
    assert pipeline.comparison_reference("results/cpu") == root / "results" / "reference"  # none of its own yet
    (root / "results" / "cpu" / "reference").mkdir(parents=True)
    assert pipeline.comparison_reference("results/cpu") == root / "results" / "cpu" / "reference"


# ---------------------------------------------------------------------- machines and the seed spread (issue 22)
AVX2 = {"device": "cpu", "cpu_capability": "AVX2", "torch_version": "2.14.1"}
AVX512 = {**AVX2, "cpu_capability": "AVX512"}
REF_IOU = (0.25, 0.35, 0.30)  # AVAGA-R_u seeds 0-2 of the reference: sample std 0.05


def seeds(base: Path, machine: dict, ious: tuple[float, ...]) -> Path:
    """AVAGA-R_u at seeds 0..k-1 with these IoUs (every other metric equal across seeds) on ``machine``."""
    for seed, iou in enumerate(ious):
        run(base, {**RU, "train.seed": seed}, {**machine, "iou": iou})
    return base


def iou_cell(ours: Path, ref: Path) -> pd.Series:
    return compare(ours, ref).loc[("AVAGA-R_u", "iou")]


def test_same_machine_equal_is_reproduced_exactly(tmp_path: Path) -> None:
    cell = iou_cell(seeds(tmp_path / "ours", AVX2, REF_IOU), seeds(tmp_path / "ref", AVX2, REF_IOU))
    assert cell["status"] == REPRODUCED and cell["machine"] == "same machine (cpu, AVX2, 2.14.1)"


def test_same_machine_beyond_the_tolerance_differs_whatever_the_spread(tmp_path: Path) -> None:
    """On the same CPU machine a run is bit-reproducible: a difference there is a change, not seed noise."""
    ours = seeds(tmp_path / "ours", AVX2, (0.26, 0.35, 0.30))
    cell = iou_cell(ours, seeds(tmp_path / "ref", AVX2, REF_IOU))
    assert abs(cell["diff"]) < cell["margin"]  # inside the spread, and still
    assert cell["status"] == DIFFERS and cell["reason"].startswith("same CPU machine")


def test_another_cpu_inside_the_seed_spread(tmp_path: Path) -> None:
    ours = seeds(tmp_path / "ours", AVX512, (0.28, 0.37, 0.32))  # mean +0.02
    cell = iou_cell(ours, seeds(tmp_path / "ref", AVX2, REF_IOU))
    assert cell["status"] == WITHIN_SPREAD and cell["reason"] == ""
    assert cell["machine"] == "another machine: cpu_capability 'AVX512' here, 'AVX2' in the reference"
    assert (cell["seed_sd"], cell["ref_seeds"]) == (pytest.approx(0.05), 3)
    assert cell["margin"] == pytest.approx(SPREAD_Z * 0.05 * math.sqrt(2 / 3))  # 0.0816


def test_another_cpu_beyond_the_seed_spread_differs(tmp_path: Path) -> None:
    ours = seeds(tmp_path / "ours", AVX512, (0.35, 0.45, 0.40))  # mean +0.1 > 0.0816
    cell = iou_cell(ours, seeds(tmp_path / "ref", AVX2, REF_IOU))
    assert cell["status"] == DIFFERS and cell["reason"] == "beyond the seed spread of 3 reference seeds"


def test_the_spread_is_every_reference_seed_of_the_config(tmp_path: Path) -> None:
    """One seed run here is judged against the three of the reference (margin 2 s sqrt(2/1)); a reference seed of
    another config does not count."""
    ours = seeds(tmp_path / "ours", AVX512, (0.33,))
    ref = seeds(tmp_path / "ref", AVX2, REF_IOU)
    run(ref, {**RU, "train.seed": 3, "train.epochs": 2}, {**AVX2, "iou": 0.9})
    cell = iou_cell(ours, ref)
    assert (cell["reference"], cell["ref_seeds"]) == (pytest.approx(0.25), 3)
    assert cell["margin"] == pytest.approx(SPREAD_Z * 0.05 * math.sqrt(2)) and cell["status"] == WITHIN_SPREAD


def test_a_single_reference_seed_measures_no_spread(tmp_path: Path) -> None:
    ours = seeds(tmp_path / "ours", AVX512, (0.2501,))
    comparison = report.reference_comparison(collect_runs(ours), seeds(tmp_path / "ref", AVX2, (0.25,)))
    cell = comparison.frame.set_index(["method", "metric"]).loc[("AVAGA-R_u", "iou")]
    assert cell["status"] == DIFFERS and cell["reason"] == f"{NO_SPREAD}: 1 reference seed"
    assert cell["ref_seeds"] == 1 and math.isnan(cell["seed_sd"]) and math.isnan(cell["margin"])
    assert comparison.no_spread() == 1
    assert f"1 differ (max |diff| 0.0001; 1 with {NO_SPREAD})" in comparison.summary_line()


def test_a_machine_recorded_on_one_side_only_is_another_machine(tmp_path: Path) -> None:
    """The committed references predate the record (issue 22): a new run against them is on another machine as
    far as anyone can tell, so the seed spread, not the 1e-6 tolerance, judges it."""
    old = {"device": "cpu"}
    ours = seeds(tmp_path / "ours", AVX2, (0.28, 0.37, 0.32))
    cell = iou_cell(ours, seeds(tmp_path / "ref", old, REF_IOU))
    assert cell["status"] == WITHIN_SPREAD
    assert cell["machine"] == ("another machine: cpu_capability 'AVX2' here, not recorded in the reference; "
                               "torch_version '2.14.1' here, not recorded in the reference")


def test_a_gpu_is_judged_by_the_seed_spread_even_on_the_same_machine(tmp_path: Path) -> None:
    gpu = {**AVX2, "device": "cuda"}
    cell = iou_cell(seeds(tmp_path / "ours", gpu, (0.28, 0.37, 0.32)), seeds(tmp_path / "ref", gpu, REF_IOU))
    assert cell["status"] == WITHIN_SPREAD and cell["machine"] == "same machine (cuda, AVX2, 2.14.1)"


def test_strict_fails_on_any_cell_not_reproduced_exactly(tmp_path: Path) -> None:
    ref = seeds(tmp_path / "ref", AVX2, REF_IOU)
    within = report.reference_comparison(collect_runs(seeds(tmp_path / "a", AVX512, (0.28, 0.37, 0.32))), ref)
    assert within.count(WITHIN_SPREAD) == 1 and within.count(DIFFERS) == 0
    assert (within.exit_code(), within.exit_code(strict=True)) == (0, STRICT_EXIT)
    assert within.summary_line().endswith(f"#{ANCHOR}")  # without --strict nothing is said about failing
    assert within.summary_line(strict=True).endswith(f"; STRICT: 1 cells not reproduced exactly, exit {STRICT_EXIT}")
    exact = report.reference_comparison(collect_runs(seeds(tmp_path / "b", AVX512, REF_IOU)), ref)
    assert exact.count(REPRODUCED) == len(exact.frame) and exact.exit_code(strict=True) == 0  # equal: any machine
    missing = report.reference_comparison(collect_runs(seeds(tmp_path / "c", AVX2, REF_IOU)), tmp_path / "absent")
    assert missing.exit_code(strict=True) == 0  # nothing compared, nothing to fail on
    # the CLI's path: the CSV the report wrote
    results = seeds(tmp_path / "results", AVX512, (0.28, 0.37, 0.32))
    report.write_report(results, reference_dir=ref)
    assert report.reference_exit_code(results) == 0 and report.reference_exit_code(results, strict=True) == 1
    assert "STRICT: 1 cells" in report.reference_summary(results, strict=True)
    assert report.reference_exit_code(tmp_path / "nothing", strict=True) == 0


def test_a_comparison_csv_of_before_issue_22_still_reads(tmp_path: Path) -> None:
    csv = tmp_path / CSV_NAME
    pd.DataFrame([{"dataset": "embedded", "category": "weave", "method": "AE-L2", "metric": "iou", "seeds": "0",
                   "ours": 0.25, "reference": 0.25, "diff": 0.0, "status": "reproduced", "reason": "",
                   "tolerance": TOLERANCE}]).to_csv(csv, index=False)
    back = read_comparison(csv)
    assert back.count(REPRODUCED) == 1 and back.exit_code(strict=True) == 0
    assert back.summary_line().startswith("reference: 1/1 cells reproduced exactly, 0 within seed spread, 0 differ,")
