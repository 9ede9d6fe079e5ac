"""The paper's transcribed tables, looked up per run (moved from evaluate.py / report.py, same behaviour)."""

from __future__ import annotations

import math

import pytest

from avaga_lib.config import make_config
from avaga_lib.reporting import paper


def test_paper_table_and_value() -> None:
    t2 = paper.paper_table("table2_mvtec_iou.csv")
    assert t2.index.name == "category" and "bottle" in t2.index
    assert paper.paper_value("table2_mvtec_iou", "bottle", "AVAGA-R_u") == pytest.approx(0.33)
    assert paper.paper_value("table2_mvtec_iou.csv", "bottle", "AVAGA-R_u") == pytest.approx(0.33)
    assert paper.paper_value("table4_stc_iou", "01", "AVAGA-R_u") == pytest.approx(0.25)  # scene ids stay strings
    assert math.isnan(paper.paper_value("table2_mvtec_iou", "weave", "AVAGA-R_u"))
    assert math.isnan(paper.paper_value("table2_mvtec_iou", "bottle", "nope"))
    with pytest.raises(FileNotFoundError, match="paper_tables"):
        paper.paper_table("table99.csv")


def test_paper_column_comes_from_the_registry() -> None:
    assert paper.paper_column(make_config("smoke", {"method": "ae_l2"})) == "AE_L2"
    assert paper.paper_column(make_config("smoke", {"train.setting": "weak"})) == "AVAGA-R_w"
    assert paper.paper_column(make_config("smoke", {"model.latent": "flat"})) == "AVAGA-R_u-flat"  # not in 2-5


def test_paper_comparison_and_metrics_row() -> None:
    cfg = make_config("smoke", {"data.dataset": "mvtec", "data.category": "bottle"})
    comp = paper.paper_comparison(cfg, {"iou": 0.3, "mean_accuracy": None})
    assert comp.loc["iou", "paper"] == pytest.approx(0.33) and comp.loc["iou", "ours"] == pytest.approx(0.3)
    assert math.isnan(comp.loc["mean_accuracy", "ours"]) and math.isnan(comp.loc["aupro", "paper"])
    assert comp.columns.name == "mvtec/bottle AVAGA-R_u"
    row = paper.metrics_row(cfg, {"iou": 0.3, "image_auroc_classifier": None})
    assert row.index[0] == "mvtec/bottle/AVAGA-R_u-seed0" and "image_auroc_classifier" not in row
    assert row["iou (paper)"].iloc[0] == pytest.approx(0.33)
    assert paper.paper_comparison(make_config("smoke"), {})["paper"].isna().all()  # embedded: n/a
    assert math.isnan(paper.metrics_row(make_config("smoke"), {})["mean_accuracy (paper)"].iloc[0])
