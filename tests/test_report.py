"""report.py on hand-written results trees: aggregation over seeds, paper values, differences, claims, files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from avaga_lib import study
from avaga_lib.config import make_config
from avaga_lib.io import write_json
from avaga_lib.reporting import report


def fake_run(base: Path, dataset: str, category: str, overrides: dict, metrics: dict, profile: str = "cpu") -> Path:
    """Write config.json + metrics.json where the results contract puts them (cpu profile: 128 px, a 4x4 latent grid
    that can test localization claims)."""
    cfg = make_config(profile, {"data.dataset": dataset, "data.category": category, "results_dir": str(base),
                                **overrides})
    cfg.save(cfg.run_dir / "config.json")
    full = {"iou": None, "mean_accuracy": None, "image_auroc": 0.7, "pixel_auroc": 0.8, "aupro": 0.5,
            "pixel_metrics_available": True, "n_test": 10, "n_anomalous": 5, "wall_time_s": 1.0}
    full.update(metrics)
    write_json(cfg.run_dir / "metrics.json", full)
    return cfg.run_dir


RU = {"train.setting": "unsupervised"}
RW = {"train.setting": "weak"}
L2 = {"method": "ae_l2"}


@pytest.fixture()
def mvtec_tree(tmp_path: Path) -> Path:
    base = tmp_path / "results"
    # bottle: R_u over 3 seeds (0.30, 0.32, 0.34 -> mean 0.32, std 0.02); R_w 2 seeds; AE-L2 1 seed
    for seed, iou in zip((0, 1, 2), (0.30, 0.32, 0.34)):
        fake_run(base, "mvtec", "bottle", {**RU, "train.seed": seed},
                 {"iou": iou, "mean_accuracy": 0.8, "iou_at": {"0.2": 0.2, "0.3": 0.25, "0.4": 0.3, "0.5": iou,
                                                               "0.6": 0.1}})
    for seed, iou in zip((0, 1), (0.40, 0.50)):
        fake_run(base, "mvtec", "bottle", {**RW, "train.seed": seed}, {"iou": iou, "mean_accuracy": 0.9})
    fake_run(base, "mvtec", "bottle", L2, {"iou": 0.05, "mean_accuracy": 0.6})
    # carpet: R_u better than R_w (claim does not hold there)
    fake_run(base, "mvtec", "carpet", RU, {"iou": 0.60, "mean_accuracy": 0.7,
                                           "iou_at": {"0.2": 0.5, "0.3": 0.5, "0.4": 0.5, "0.5": 0.6, "0.6": 0.5}})
    fake_run(base, "mvtec", "carpet", RW, {"iou": 0.55, "mean_accuracy": 0.75})
    fake_run(base, "mvtec", "carpet", {**RU, "loss.attention_loss": False}, {"iou": 0.1, "mean_accuracy": 0.5})
    fake_run(base, "mvtec", "carpet", L2, {"iou": 0.7, "mean_accuracy": 0.6})
    # a folder that is not a dataset must be ignored
    write_json(base / "runs" / "mvtec" / "bottle" / "metrics.json", {"iou": 1.0})
    return base


def test_collect_runs_reads_contract(mvtec_tree: Path) -> None:
    runs = report.collect_runs(mvtec_tree)
    assert len(runs) == 10
    assert set(runs["method"]) == {"AVAGA-R_u", "AVAGA-R_w", "AE-L2", "AVAGA-R_u-noattn"}
    assert set(runs[runs["method"] == "AVAGA-R_u"]["seed"]) == {0, 1, 2}
    assert runs["iou@0.2"].notna().sum() == 4


def test_run_identity_from_config_and_notes_from_metrics(tmp_path: Path) -> None:
    """The method is the config's registry name (never parsed from the folder); notes are a run outcome."""
    base = tmp_path / "r"
    run = fake_run(base, "embedded", "weave", {**RW, "loss.sgb": False, "train.seed": 4},
                   {"iou": 0.1, "notes": ["pretrained weights unavailable: random init"]})
    run.rename(run.parent / "renamed-by-hand")
    legacy = fake_run(base, "embedded", "weave", L2, {"iou": 0.2})
    old = json.loads((legacy / "config.json").read_text())
    del old["name"]  # a config.json from before the study registry: notes lived there
    old["notes"] = ["pretrained_source=none"]
    old["eval"]["score_calibration"] = "validation"
    (legacy / "config.json").write_text(json.dumps(old))
    runs = report.collect_runs(base).set_index("method")
    assert runs.loc["AVAGA-R_w-noSGB", "seed"] == 4
    assert runs.loc["AVAGA-R_w-noSGB", "setting"] == "AVAGA-R_w-noSGB-seed4"
    assert runs.loc["AVAGA-R_w-noSGB", "notes"] == ("pretrained weights unavailable: random init",)
    assert runs.loc["AE-L2", "notes"] == ("pretrained_source=none",)
    assert set(runs["calibration"]) == {"validation"}
    deviations = report.deviations(runs.reset_index())
    # issue 23: the missing ImageNet weights are said once, for the run that asked for them; pretrained_source is a
    # record (an AE has no pretrained encoder to miss), never a "recorded fallback"
    missing = [d for d in deviations if "ImageNet" in d]
    assert len(missing) == 1 and "(1 run: AVAGA-R_w-noSGB)" in missing[0]
    assert not any("pretrained_source" in d or "1 runs" in d for d in deviations)


def test_missing_config_names_file(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "embedded", "weave", RU, {"iou": 0.1})
    (run / "config.json").unlink()
    with pytest.raises(report.ReportError, match="config.json missing"):
        report.collect_runs(tmp_path)


def test_comparison_table_mean_std_paper_diff(mvtec_tree: Path) -> None:
    runs = report.collect_runs(mvtec_tree)
    t = report.comparison_table(runs, "mvtec", "iou", study.MAIN_METHODS)
    frame = t.frame.set_index("category")
    assert list(frame.index) == ["bottle", "carpet", "mean"]  # paper's row order, then the mean row
    assert frame.loc["bottle", "AVAGA-R_u"] == pytest.approx(0.32)
    assert frame.loc["bottle", "AVAGA-R_u_std"] == pytest.approx(0.02)
    assert frame.loc["bottle", "AVAGA-R_u_n"] == 3
    assert frame.loc["bottle", "AVAGA-R_u_paper"] == pytest.approx(0.33)  # Table 2
    assert frame.loc["bottle", "AVAGA-R_u_diff"] == pytest.approx(-0.01)
    assert math.isnan(frame.loc["carpet", "AVAGA-R_u_std"])  # one seed: no std
    # mean row: ours averaged over categories, paper averaged over the same categories
    assert frame.loc["mean", "AVAGA-R_u"] == pytest.approx((0.32 + 0.60) / 2)
    assert frame.loc["mean", "AVAGA-R_u_paper"] == pytest.approx((0.33 + 0.73) / 2)
    assert frame.loc["mean", "AVAGA-R_u_diff"] == pytest.approx((0.32 - 0.33 + 0.60 - 0.73) / 2)
    # AVAGA-D_u has paper values but no runs: paper shown, ours empty
    assert math.isnan(frame.loc["bottle", "AVAGA-D_u"]) and frame.loc["bottle", "AVAGA-D_u_paper"] == 0.28
    assert "0.32 ± 0.02" in t.markdown and "| **mean** |" in t.markdown
    assert "(n=1)" in t.markdown  # cells with fewer seeds than the most are marked


def test_embedded_has_no_paper_columns(tmp_path: Path) -> None:
    base = tmp_path / "r"
    fake_run(base, "embedded", "weave", RU, {"iou": 0.2, "mean_accuracy": 0.5})
    fake_run(base, "embedded", "weave", RW, {"iou": 0.3, "mean_accuracy": 0.6})
    runs = report.collect_runs(base)
    t = report.comparison_table(runs, "embedded", "iou", study.MAIN_METHODS)
    assert not any(c.endswith("_paper") for c in t.frame.columns)
    assert list(t.frame.columns[:1]) == ["category"] and "AVAGA-R_u" in t.frame and "AVAGA-D_u" not in t.frame
    assert any("n/a" in n for n in t.notes)
    claims = {c.claim: c for c in report.evaluate_claims(runs)}
    c = claims["AVAGA-R_w localizes better than AVAGA-R_u (IoU)"]
    assert (c.k, c.n, c.verdict) == (1, 1, "undecided (one seed: no interval)")  # one paired cell: no spread


def test_claims_count_categories(mvtec_tree: Path) -> None:
    runs = report.collect_runs(mvtec_tree)
    claims = {c.claim: c for c in report.evaluate_claims(runs)}
    rw_ru = claims["AVAGA-R_w localizes better than AVAGA-R_u (IoU)"]
    # bottle: seeds 0/1 pair (+0.10, +0.18); carpet: one seed (-0.05); the t-interval over 3 cells straddles 0
    assert (rw_ru.k, rw_ru.n, rw_ru.verdict) == (1, 2, "undecided (interval contains 0)")
    assert rw_ru.diffs == pytest.approx((0.10, 0.18, -0.05))
    assert "3 cells (2 categories, 1-2 seeds each)" in rw_ru.sentence()
    attn = claims["The guided attention loss improves localization"]
    assert (attn.k, attn.n) == (1, 1)
    assert claims["SGB improves weak localization"].verdict == "not measured"
    thr = claims["AVAGA-R_u beats the best baseline at every threshold 0.2-0.6 (threshold insensitivity)"]
    assert (thr.k, thr.n) == (1, 2)  # bottle beats 0.05 everywhere; carpet loses to 0.7


def test_threshold_table(mvtec_tree: Path) -> None:
    runs = report.collect_runs(mvtec_tree)
    frame = report.threshold_table(runs, "mvtec").frame.set_index("category")
    assert frame.loc["bottle", "iou@0.5"] == pytest.approx(0.32)
    assert frame.loc["bottle", "iou@0.5_paper"] == pytest.approx(0.33)
    assert frame.loc["bottle", "best_baseline"] == "AE-L2"
    assert frame.loc["carpet", "spread"] == pytest.approx(0.1)


def test_write_report_files(mvtec_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    paths = report.write_report(mvtec_tree, out)
    assert (out / "tables" / "mvtec_table2_iou.csv").exists()
    assert (out / "tables" / "mvtec_table8_ablation_iou.md").exists()
    assert (out / "tables" / "mvtec_table7_thresholds.csv").exists()
    csv = pd.read_csv(out / "tables" / "mvtec_table2_iou.csv")
    assert "AVAGA-R_u_paper" in csv.columns and csv["category"].iloc[-1] == "mean"
    text = paths.report_md.read_text()
    assert "## Verdicts per claim" in text and "in 1 of 2 categories" in text
    assert "## Deviations from the paper" in text and "profile cpu" in text
    assert text.index("Table 2 (mvtec)") < text.index("Table 3 (mvtec)")


def test_write_report_without_runs_names_folder(tmp_path: Path) -> None:
    with pytest.raises(report.ReportError, match=str(tmp_path)):
        report.write_report(tmp_path)


def test_corrupt_metrics_names_file(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "embedded", "weave", RU, {"iou": 0.1})
    (run / "metrics.json").write_text("{not json")
    with pytest.raises(report.ReportError, match="metrics.json"):
        report.collect_runs(tmp_path)


def test_export_html_embeds_images(tmp_path: Path) -> None:
    import nbformat

    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "fig"})]
    nb.cells = [nbformat.v4.new_markdown_cell("# Report"), cell]
    src = tmp_path / "nb.ipynb"
    nbformat.write(nb, src)
    html = report.export_html(src, tmp_path / "r.html").read_text()
    assert "data:image/png;base64," + png[:20] in html


def test_export_html_leaves_out_the_plumbing(tmp_path: Path) -> None:
    """Issue 23: report.html shows no notebook plumbing: tagged cells go whole, tagged outputs are dropped."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    intro = nbformat.v4.new_markdown_cell("# 07 · Report\n\nWrites into `out_dir` from `results_dir`.")
    intro.metadata["tags"] = ["remove-cell"]
    params = nbformat.v4.new_code_cell("results_dir = 'x'")
    params.metadata["tags"] = ["parameters"]
    plumbing = nbformat.v4.new_code_cell("print(...)")
    plumbing.metadata["tags"] = ["remove-output"]
    plumbing.outputs = [nbformat.v4.new_output("stream", name="stdout", text="wrote /tmp/pytest-7/REPORT.md\n")]
    answer = nbformat.v4.new_code_cell("display(...)")
    answer.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "# The study's answer"})]
    nb.cells = [intro, params, plumbing, answer]
    src = tmp_path / "nb.ipynb"
    nbformat.write(nb, src)
    html = report.export_html(src, tmp_path / "r.html").read_text()
    assert "answer" in html
    assert "results_dir" not in html and "/tmp/pytest-7" not in html and "07 · Report" not in html


def test_report_sections_and_the_answer_table(mvtec_tree: Path) -> None:
    runs = report.collect_runs(mvtec_tree)
    tables = report.build_tables(runs)
    assert report.answer_key(tables) == "mvtec_summary"  # report.html opens with the summary, then Table 2
    md = report.render_report_md(runs, tables, report.evaluate_claims(runs))
    verdicts = report.report_section(md, "Verdicts per claim")
    assert verdicts.startswith("## Verdicts per claim") and "## Tables" not in verdicts
    assert "AVAGA-R_w localizes better than AVAGA-R_u (IoU)" in verdicts
    assert report.report_section(md, "No such section") == ""


def test_geometry_is_in_the_protocol_line_and_runs_csv(mvtec_tree: Path, tmp_path: Path) -> None:
    fake_run(mvtec_tree, "mtd", "tile", {**RU, "data.geometry": "letterbox"}, {"iou": 0.1, "mean_accuracy": 0.7})
    paths = report.write_report(mvtec_tree, tmp_path / "out", compare=False)
    runs_csv = pd.read_csv(paths.runs_csv)
    assert dict(runs_csv.groupby("dataset")["geometry"].unique().map(list)) == {"mtd": ["letterbox"],
                                                                                  "mvtec": ["squash"]}
    md = paths.report_md.read_text()
    assert "- **mtd**: 1 category (tile), 1 method, 1 run;" in md and "image geometry letterbox;" in md
    assert "image geometry squash;" in md
    hand_made = report.collect_runs(mvtec_tree).drop(columns="run_dir")  # no config to read: said, not guessed
    assert set(report.with_geometry(hand_made)["geometry"]) == {"n/a"}


def test_the_qualitative_grid_keeps_predictions_apart_from_red_inputs(tmp_path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    from avaga_lib.evaluation import plots

    red = np.zeros((2, 3, 16, 16), np.uint8)
    red[:, 0] = 200  # a red-tinted input: drawn grey under the masks, so red never reads as a prediction
    pred = np.zeros((2, 16, 16), bool)
    pred[1, 4:8, 4:8] = True  # the first example flags nothing
    ex = {"image": red, "gt": np.ones((2, 16, 16), np.uint8), "map": np.zeros((2, 16, 16), np.uint8), "pred": pred,
          "defect": ["a", "b"]}
    fig = plots.plot_qualitative_grid(ex, path=tmp_path / "q.png", close=True)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["no pixel\nabove threshold"]  # the empty prediction only, not the one with pixels
    pred_axis = fig.axes[2 * 2 + 1]  # row "predicted", second example: its mask is outlined in cyan
    assert pred_axis.get_ylabel() == "" and fig.axes[4].get_ylabel() == f"predicted ({plots.PRED_COLOUR})"
    grey = pred_axis.images[0].get_array()
    assert grey.ndim == 2  # the input under the mask is grey: no red left in it
    assert (tmp_path / "q.png").stat().st_size > 1000


def test_table_html_and_figures(mvtec_tree: Path, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from avaga_lib.evaluation import plots

    runs = report.collect_runs(mvtec_tree)
    tables = report.build_tables(runs)
    key = report.headline_key(tables)
    assert key == "mvtec_table2_iou"
    html = report.table_html(tables[key], table_id="headline-table")
    assert 'id="headline-table"' in html and "<td>mean</td>" in html and "0.32 ± 0.02" in html
    fig = plots.plot_ours_vs_paper(tables[key].frame, study.MAIN_METHODS, "IoU", path=tmp_path / "bars.png",
                                   close=True)
    assert fig is not None and (tmp_path / "bars.png").stat().st_size > 1000
    # qualitative figures: one per category, the preferred method first
    png = Path(runs[(runs["category"] == "carpet") & (runs["method"] == "AVAGA-R_u")]["run_dir"].iloc[0])
    (png / "fig_qualitative.png").write_bytes((tmp_path / "bars.png").read_bytes())
    picked = report.qualitative_figures(runs)
    assert [t for _, t in picked] == ["mvtec/carpet · AVAGA-R_u-seed0"]
    plots.plot_image_files_grid([p for p, _ in picked], ["x"], path=tmp_path / "grid.png", close=True)
    assert (tmp_path / "grid.png").exists()


def test_threshold_curve_plot(tmp_path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    from avaga_lib.evaluation import plots

    rows = [{"norm": n, "threshold": t, "iou": t / 2, "acc_validation": 0.5, "acc_transductive": 0.6,
             "fp_area": 1 - t} for n in ("sigmoid", "minmax") for t in np.arange(0.1, 1.0, 0.1)]
    plots.plot_threshold_curves(pd.DataFrame(rows), path=tmp_path / "c.png", close=True)
    ex = {"image": np.zeros((2, 3, 8, 8), np.uint8), "gt": np.ones((2, 8, 8), np.uint8), "defect": ["a", "b"],
          "maps": {"sigmoid": np.full((2, 8, 8), 0.7)}}
    plots.plot_threshold_masks(ex, "sigmoid", 0.5, path=tmp_path / "m.png", close=True)
    assert (tmp_path / "c.png").exists() and (tmp_path / "m.png").exists()


def test_stc_tables_4_and_5(tmp_path: Path) -> None:
    base = tmp_path / "r"
    fake_run(base, "stc", "01", RU, {"iou": 0.20, "mean_accuracy": 0.80})
    fake_run(base, "stc", "13", RU, {"iou": 0.30, "mean_accuracy": 0.70})  # scene 13: not in the paper's tables
    tables = report.build_tables(report.collect_runs(base))
    assert "stc_table4_iou" in tables and "stc_table5_mean_accuracy" in tables
    frame = tables["stc_table4_iou"].frame.set_index("category")
    assert frame.loc["01", "AVAGA-R_u_paper"] == pytest.approx(0.25)  # Table 4, scene 01
    assert frame.loc["01", "AVAGA-R_u_diff"] == pytest.approx(-0.05)
    assert math.isnan(frame.loc["13", "AVAGA-R_u_paper"])
    assert frame.loc["mean", "AVAGA-R_u_paper"] == pytest.approx(0.25)  # only scenes the paper has


def test_ties_and_silent_maps_observation(tmp_path: Path) -> None:
    base = tmp_path / "r"
    fake_run(base, "embedded", "weave", RU, {"iou": 0.0, "mean_accuracy": 0.5, "fp_area_normal": 0.0})
    fake_run(base, "embedded", "weave", RW, {"iou": 0.0, "mean_accuracy": 0.6, "fp_area_normal": 0.0})
    runs = report.collect_runs(base)
    claims = {c.claim: c for c in report.evaluate_claims(runs)}
    c = claims["AVAGA-R_w localizes better than AVAGA-R_u (IoU)"]
    assert (c.k, c.diffs, c.verdict) == (0, (0.0,), "undecided (one seed: no interval)")
    acc = claims["AVAGA-R_w classifies better than AVAGA-R_u (mean accuracy)"]
    # issue 23: a mean accuracy of exactly 0.500 is what a one-class classifier scores: no ranking against it
    assert acc.verdict == "cannot test" and acc.ci is None
    assert "AVAGA-R_u predicts one class (mean accuracy exactly 0.500" in acc.sentence()
    assert any("2 of 2 AVAGA runs flag no pixel" in o for o in report.observations(runs))


def test_one_seed_decides_nothing_whatever_the_difference(tmp_path: Path) -> None:
    """No fixed margin: a single (category, seed) cell has no spread, so neither sign of its difference decides."""
    base = tmp_path / "results"
    fake_run(base, "mtd", "tile", RU, {"iou": 0.002, "mean_accuracy": 0.497})
    fake_run(base, "mtd", "tile", L2, {"iou": 0.000, "mean_accuracy": 0.506})
    claims = {c.claim: c for c in report.evaluate_claims(report.collect_runs(base))}
    iou = claims["AVAGA-R_u localizes better than the best baseline (IoU)"]
    acc = claims["AVAGA-R_u classifies better than the best baseline (mean accuracy)"]
    assert (iou.k, iou.verdict) == (1, "undecided (one seed: no interval)")
    assert (acc.k, acc.verdict) == (0, "undecided (one seed: no interval)")
    assert "over 1 category x 1 seed: one cell gives no interval" in acc.sentence()


# ------------------------------------------------------------------ issue 13: verdicts beyond the seed spread


def _seeded(base: Path, overrides: dict, values: dict[int, float], metric: str = "iou", **extra: float) -> None:
    for seed, value in values.items():
        fake_run(base, "embedded", "granite", {**overrides, "train.seed": seed}, {metric: value, **extra})


def test_verdict_reads_the_t_interval_of_the_paired_differences(tmp_path: Path) -> None:
    """Means that order as claimed are not enough: a seed that disagrees widens the interval over 0."""
    agree, mixed = tmp_path / "agree", tmp_path / "mixed"
    _seeded(agree, RU, {0: 0.10, 1: 0.20, 2: 0.30})
    _seeded(agree, RW, {0: 0.15, 1: 0.26, 2: 0.33})  # +0.05 +0.06 +0.03: t-interval [+0.009, +0.085]
    _seeded(mixed, RU, {0: 0.10, 1: 0.20, 2: 0.30})
    _seeded(mixed, RW, {0: 0.30, 1: 0.19, 2: 0.29})  # mean better (0.26 vs 0.20) but seeds 1 and 2 worse
    text = "AVAGA-R_w localizes better than AVAGA-R_u (IoU)"
    holds = {c.claim: c for c in report.evaluate_claims(report.collect_runs(agree))}[text]
    spread = {c.claim: c for c in report.evaluate_claims(report.collect_runs(mixed))}[text]
    assert (holds.verdict, holds.k) == ("holds", 1)
    assert holds.ci is not None and holds.ci[0] > 0 and "1 category x 3 seeds" in holds.sentence()
    assert "95% t-interval" in holds.sentence() and "bootstrap" not in holds.sentence()
    assert spread.k == 1 and spread.verdict == "undecided (interval contains 0)"
    assert spread.ci is not None and spread.ci[0] < 0 < spread.ci[1]
    assert "seeds [0, 1, 2]" in spread.sentence() and "128 px" in spread.sentence() and "profile cpu" in spread.basis


def test_localization_claims_cannot_be_tested_on_a_2x2_latent_grid(tmp_path: Path) -> None:
    base = tmp_path / "r"
    for overrides, iou, acc in ((RU, 0.1, 0.55), (RW, 0.3, 0.7)):
        fake_run(base, "embedded", "weave", overrides, {"iou": iou, "mean_accuracy": acc}, profile="smoke")
    runs = report.collect_runs(base)
    claims = {c.claim: c for c in report.evaluate_claims(runs)}
    iou = claims["AVAGA-R_w localizes better than AVAGA-R_u (IoU)"]
    assert iou.verdict == "cannot test" and "2x2" in iou.sentence()
    assert claims["AVAGA-R_w classifies better than AVAGA-R_u (mean accuracy)"].verdict == "undecided (one seed: no " \
        "interval)"  # image-level: testable at any grid, but one seed
    md = report.render_report_md(runs, report.build_tables(runs), claims.values())
    assert md.splitlines()[2].startswith("> **A pipeline check, not a study.**")


def test_summary_table_puts_the_recipe_first_and_scores_the_prior(tmp_path: Path) -> None:
    base = tmp_path / "r"
    prior = {"prior_center_pixel_auroc": 0.6, "prior_center_aupro": 0.2}
    _seeded(base, RU, {0: 0.50, 1: 0.54}, "pixel_auroc", **prior)
    _seeded(base, {**RU, "model.attention_norm": "max"}, {0: 0.70, 1: 0.74}, "pixel_auroc", **prior)
    _seeded(base, {**RU, **L2}, {0: 0.90, 1: 0.92}, "pixel_auroc", **prior)
    runs = report.collect_runs(base)
    table = report.build_tables(runs)["embedded_summary"]
    frame = table.frame.set_index("method")
    assert list(frame.index) == ["AVAGA-R_u", "AVAGA-R_u-maxnorm", "AE-L2", "prior: centred Gaussian"]
    assert frame.loc["AVAGA-R_u", "role"] == "paper recipe"
    assert frame.loc["AVAGA-R_u-maxnorm", "role"].startswith("remedy")
    assert frame.loc["AVAGA-R_u", "pixel_auroc"] == pytest.approx(0.52)
    assert frame.loc["AVAGA-R_u", "pixel_auroc_std"] == pytest.approx(0.02 * math.sqrt(2))
    assert frame.loc["prior: centred Gaussian", "pixel_auroc"] == pytest.approx(0.6)
    assert "| **AVAGA-R_u** | paper recipe | 0.520 ± 0.028 |" in table.markdown
    questions = {c.claim: c for c in report.evaluate_claims(runs, questions=True)}
    position = questions["AVAGA-R_u's attention map beats the centred-Gaussian position prior (pixel AUROC)"]
    # 0.50 / 0.54 vs 0.6: -0.10 / -0.06, but two cells give a t-interval (df 1) wide enough to straddle 0
    assert position.verdict == "undecided (interval contains 0)" and position.diffs == pytest.approx((-0.10, -0.06))
    remedy = questions["AVAGA-R_u-maxnorm localizes better than the literal AVAGA-R_u (pixel AUROC)"]
    assert remedy.verdict == "holds"  # +0.20 in both seeds
    best = questions["The best unsupervised AVAGA attention map (the recipe or a remedy) beats the centred-Gaussian "
                     "prior (pixel AUROC)"]
    assert best.verdict == "undecided (interval contains 0)"  # 0.70 / 0.74 vs 0.6
    assert ("AVAGA-R_u-maxnorm 0.720 [best of 2 by mean test pixel_auroc: selected on the test set; "
            "AVAGA-R_u-maxnorm 0.720, AVAGA-R_u 0.520]") in best.sentence()
    weak = "AVAGA-R_w-gain localizes better than the literal AVAGA-R_w (pixel AUROC)"
    assert questions[weak].verdict == "not measured"  # the weak remedies are compared with R_w, not R_u


def test_the_training_device_is_recorded_in_the_protocol_and_each_verdict(tmp_path: Path) -> None:
    """Runs made on a GPU (the MTD cpu-profile runs of results/cpu) say so: bf16 autocast changes the numbers."""
    base = tmp_path / "r"
    for seed, (ru, rw) in enumerate(((0.1, 0.2), (0.2, 0.3))):
        fake_run(base, "mtd", "magnetic_tile", {**RU, "train.seed": seed}, {"iou": ru, "device": "cuda:0"})
        fake_run(base, "mtd", "magnetic_tile", {**RW, "train.seed": seed}, {"iou": rw, "device": "cuda:0"})
    runs = report.collect_runs(base)
    assert set(runs["device"]) == {"cuda"}
    claim = {c.claim: c for c in report.evaluate_claims(runs)}["AVAGA-R_w localizes better than AVAGA-R_u (IoU)"]
    assert claim.verdict == "holds" and claim.basis.endswith("trained on cuda")
    md = report.render_report_md(runs, report.build_tables(runs), [claim])
    assert "trained on cuda (bf16 autocast where train.amp=auto)." in md


def test_remedies_sit_beside_the_recipe_in_table2(tmp_path: Path) -> None:
    base = tmp_path / "r"
    fake_run(base, "mvtec", "bottle", RU, {"iou": 0.2, "mean_accuracy": 0.6})
    fake_run(base, "mvtec", "bottle", {**RU, "loss.attention_constraint": "size_barrier"}, {"iou": 0.3,
                                                                                           "mean_accuracy": 0.6})
    t = report.build_tables(report.collect_runs(base))["mvtec_table2_iou"]
    assert "AVAGA-R_u-size (remedy) ours" in t.markdown
    assert t.markdown.index("AVAGA-R_u ours") < t.markdown.index("AVAGA-R_u-size (remedy) ours")
    assert math.isnan(t.frame.set_index("category").loc["bottle", "AVAGA-R_u-size_paper"])  # no paper column


def test_runs_measured_before_issue_20_are_named_stale(tmp_path: Path) -> None:
    from avaga_lib.reporting.report import stale_measurement
    from avaga_lib.reporting.results import CURRENT_MEASUREMENT, STALE_MEASUREMENT

    runs = pd.DataFrame({"dataset": ["mtd", "mtd", "embedded"], "measurement": [STALE_MEASUREMENT] * 2 +
                         [CURRENT_MEASUREMENT]})
    lines = stale_measurement(runs)
    assert len(lines) == 1 and lines[0].startswith("**mtd: 2 runs measured before issue 20**")
    assert stale_measurement(runs[runs["dataset"] == "embedded"]) == []


def test_a_run_measured_before_issue_20_reads_its_quantile_iou_as_the_headline(tmp_path: Path) -> None:
    """Before issue 20, `iou` was the 0.5 rule and `iou_val_quantile` today's label-free rule: a stale run's row
    reads the same rule under today's name and keeps the old value beside it."""
    from avaga_lib.reporting.results import STALE_MEASUREMENT, collect_runs

    cfg = make_config("smoke", {"data.dataset": "embedded", "data.category": "weave", "results_dir": str(tmp_path)})
    write_json(cfg.run_dir / "config.json", cfg.to_dict())
    write_json(cfg.run_dir / "metrics.json", {"iou": 0.0, "iou_val_quantile": 0.149, "pixel_auroc": 0.93})
    row = collect_runs(tmp_path).iloc[0]
    assert row["measurement"] == STALE_MEASUREMENT and row["iou"] == 0.149 and row["iou_old_rule"] == 0.0


def test_the_report_says_what_few_seeds_do_to_the_intervals() -> None:
    """Issue 20: the verdicts rest on t-intervals over seeds; the report names the multiplier its seed count gives
    (3 seeds: 4.30 standard errors, 2 degrees of freedom) and that one seed gives none."""
    runs = pd.DataFrame({"dataset": ["embedded"] * 3 + ["mtd"], "category": ["granite"] * 3 + ["magnetic_tile"],
                         "method": ["AE-L2"] * 4, "seed": [0, 1, 2, 0]})
    text = report.seeds_caveat(runs)
    assert "embedded: 3 seeds per run at most" in text and "4.30 standard errors (2 degrees of freedom)" in text
    assert "mtd: 1 seed per run" in text
    assert report.seeds_caveat(runs.iloc[:0]) == ""
