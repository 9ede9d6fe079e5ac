"""The study registry: every run declared once, consistent with the config, the notebooks and the paper's tables."""

from __future__ import annotations

import pytest
import yaml

from avaga_lib import study
from avaga_lib.config import make_config
from avaga_lib.paths import project_root
from avaga_lib.reporting.paper import paper_table
from avaga_lib.reporting.tables import summary_order


def test_names_groups_and_tables_of_the_paper() -> None:
    assert study.names() == ("AVAGA-R_u", "AVAGA-R_w", "AVAGA-D_u", "AVAGA-D_w", "AVAGA-R_u-noattn",
                             "AVAGA-R_u-flat", "AVAGA-R_w-noadv", "AVAGA-R_w-noSGB", *study.REMEDIES, *study.ARMS,
                             "AE-L2", "AE-SSIM")
    assert study.REMEDIES == ("AVAGA-R_u-maxnorm", "AVAGA-R_u-gain", "AVAGA-R_u-size", "AVAGA-R_u-size-faithful",
                              "AVAGA-R_w-maxnorm", "AVAGA-R_w-gain", "AVAGA-R_w-size")
    assert study.ARMS == ("AVAGA-R_u-selfsup", "AVAGA-R_u-advoff", "AVAGA-R_u-size-faithful-selfsup")  # issue 21
    assert all(r.group in study.GROUPS for r in study.RUNS)
    assert study.MAIN_METHODS == ("AE-L2", "AE-SSIM", "AVAGA-D_u", "AVAGA-R_u", "AVAGA-D_w", "AVAGA-R_w")
    assert study.ABLATION_METHODS == ("AVAGA-R_u-noattn", "AVAGA-R_u-flat", "AVAGA-R_u", "AVAGA-R_w-noadv",
                                      "AVAGA-R_w-noSGB", "AVAGA-R_w")  # Sec. 5, columns 1-6
    assert study.BASELINES == ("AE-L2", "AE-SSIM")
    assert study.ABLATIONS == ("AVAGA-R_u-noattn", "AVAGA-R_u-flat", "AVAGA-R_w-noadv", "AVAGA-R_w-noSGB")
    assert study.PAPER_MAIN_COLUMN["AE-L2"] == "AE_L2"
    for table in (study.MAIN_TABLE, study.ABLATION_TABLE):
        positions = [c.position for r in study.RUNS if (c := getattr(r, table)) is not None]
        assert len(positions) == len(set(positions)), f"two runs share a column of the {table} table"


@pytest.mark.parametrize("run", study.RUNS, ids=lambda r: r.name)
def test_every_entry_builds_a_valid_config_named_after_it(run: study.StudyRun) -> None:
    cfg = make_config("smoke", run=run.name)
    assert cfg.name == run.name and cfg.run_id == f"{run.name}-seed0"
    assert cfg.train.setting == run.setting
    # the same overrides without the name are recognised as this run (unique identity)
    assert make_config("paper", dict(run.overrides)).name == run.name
    assert (project_root() / "notebooks" / run.notebook).exists()


def test_paper_columns_exist_in_the_transcribed_tables() -> None:
    for name, column in study.PAPER_MAIN_COLUMN.items():
        assert column in paper_table("table2_mvtec_iou.csv").columns, name
        assert column in paper_table("table4_stc_iou.csv").columns, name
    for name, column in study.PAPER_ABLATION_COLUMN.items():
        assert column in paper_table("table8_ablation_iou.csv").columns, name


def test_select_by_name_or_group() -> None:
    picked = study.select(["ablations", "AE-L2"])
    assert [r.name for r in picked] == [*study.ABLATIONS, "AE-L2"]
    assert study.select(None) == list(study.RUNS)
    smoke = study.select(["AVAGA-R_u", "baselines"])
    assert [r.name for r in study.select(["main"], smoke)] == ["AVAGA-R_u"]
    with pytest.raises(ValueError, match=r"\['AVAGA-D_u'\] not in the selected runs"):
        study.select(["AVAGA-D_u"], smoke)
    with pytest.raises(ValueError, match="not in the study registry"):
        study.get("AVAGA-X")


def test_identity_keys_are_the_overridden_keys() -> None:
    assert set(study.identity_keys()) == {"train.setting", "method", "model.variant", "model.latent",
                                          "loss.attention_loss", "loss.adversarial_recon", "loss.sgb",
                                          "model.attention_norm", "loss.attention_constraint",
                                          "loss.w_attn", "model.test_map", "model.pretrained", "loss.w_adv"}  # 21


def test_remedies_plan_beside_the_recipe_in_their_own_folders() -> None:
    """Each remedy is its own run folder, differs from the literal recipe on one key, and is no paper column."""
    picked = study.select(["remedies"])
    assert [r.name for r in picked] == list(study.REMEDIES)
    folders = {make_config("smoke", run=r.name).run_id for r in picked}
    assert len(folders) == len(picked) and all(f.endswith("-seed0") for f in folders)
    for r in picked:
        assert r.remedy_of in ("AVAGA-R_u", "AVAGA-R_w") and r.name in study.remedies_of(r.remedy_of)
        base = make_config("smoke", run=r.remedy_of)
        cfg = make_config("smoke", run=r.name)
        changed = {(cfg.model.attention_norm != base.model.attention_norm),
                   (cfg.loss.attention_constraint != base.loss.attention_constraint)}
        assert True in changed and cfg.train.setting == base.train.setting
        assert r.main is None and r.ablation is None
    assert not set(study.REMEDIES) & set(study.MAIN_METHODS + study.ABLATION_METHODS)


def test_smoke_params_do_not_run_the_remedies() -> None:
    """CI cost: the smoke study plan (params/smoke.yaml's runs) leaves the remedies out."""
    runs = yaml.safe_load((project_root() / "params" / "smoke.yaml").read_text())["runs"]
    assert runs is not None and not {r.name for r in study.select(runs)} & set(study.REMEDIES)
    assert not {r.name for r in study.select(runs)} & set(study.ARMS)  # issue 21: the arms neither


def test_cpu_params_run_the_arms_and_the_faithful_remedy() -> None:
    """Issue 21: the cpu study plans the new arms beside the recipe."""
    runs = yaml.safe_load((project_root() / "params" / "cpu.yaml").read_text())["runs"]
    assert {*study.ARMS, "AVAGA-R_u-size-faithful"} <= {r.name for r in study.select(runs)}


def test_summary_rows_put_each_arm_below_what_it_changes() -> None:
    """Issue 21: the summary reads recipe, remedies (each followed by its own arm), the recipe's arms, baselines."""
    rows = summary_order(["AE-L2", "AVAGA-R_u-size-faithful-selfsup", "AVAGA-R_u-selfsup", "AVAGA-R_u-size",
                          "AVAGA-R_u", "AVAGA-R_u-gain", "AVAGA-R_u-size-faithful"])
    assert rows == ["AVAGA-R_u", "AVAGA-R_u-gain", "AVAGA-R_u-size", "AVAGA-R_u-size-faithful",
                    "AVAGA-R_u-size-faithful-selfsup", "AVAGA-R_u-selfsup", "AE-L2"]
