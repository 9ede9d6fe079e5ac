"""Config tree: profiles, overrides, round trip, validation, run names from the study registry, legacy files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from avaga_lib import config as C
from avaga_lib.config import RunConfig, apply_overrides, config_from_parameters, config_hash, make_config
from avaga_lib.plan import plan_runs


def test_paper_profile_matches_appendix_a1() -> None:
    cfg = make_config("paper")
    assert (cfg.data.image_size, cfg.train.epochs, cfg.train.batch_size) == (256, 150, 24)
    assert (cfg.train.lr, cfg.train.lr_step, cfg.train.lr_gamma) == (1e-4, 30, 0.1)
    assert (cfg.loss.w_r, cfg.loss.w_kl, cfg.loss.w_adv, cfg.loss.w_attn) == (1.0, 1.0, 1.0, 1e-2)
    assert (cfg.loss.w_c, cfg.loss.w_a) == (1e-3, 1e-2)


def test_overrides_round_trip_through_json(tmp_path) -> None:
    cfg = make_config("smoke", {"train.setting": "weak", "data.category": "granite", "eval.thresholds_study": [0.1]})
    path = cfg.save(tmp_path / "config.json")
    back = RunConfig.load(path)
    assert back == cfg
    assert back.eval.thresholds_study == (0.1,)


def test_unknown_key_is_named() -> None:
    with pytest.raises(ValueError, match="train.epoch"):
        make_config("smoke", {"train.epoch": 3})
    with pytest.raises(ValueError, match="profile 'fast'"):
        make_config("fast")


def test_invalid_combinations_are_rejected() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        make_config("smoke", {"data.image_size": 100})
    with pytest.raises(ValueError, match="only for train.setting=weak"):
        make_config("smoke", {"loss.adversarial_recon": False})


def test_run_ids_distinguish_every_run_of_the_study() -> None:
    names = {
        make_config("smoke", o).run_id
        for o in (
            {},
            {"train.setting": "weak"},
            {"loss.attention_loss": False},
            {"model.latent": "flat"},
            {"train.setting": "weak", "loss.sgb": False},
            {"train.setting": "weak", "loss.adversarial_recon": False},
            {"model.variant": "D"},
            {"method": "ae_l2"},
            {"method": "ae_ssim"},
            {"train.seed": 1},
        )
    }
    assert len(names) == 10
    assert make_config("smoke").run_id == "AVAGA-R_u-seed0"


def test_hash_follows_choices() -> None:
    cfg = make_config("smoke")
    assert config_hash(cfg) == config_hash(make_config("smoke"))
    assert config_hash(cfg) != config_hash(apply_overrides(cfg, {"train.epochs": 4}))


def test_deleted_settings_are_gone() -> None:
    d = make_config("smoke").to_dict()
    assert "notes" not in d and "compile" not in d["train"] and "reduction" not in d["loss"]
    assert "score_calibration" not in d["eval"] and not hasattr(RunConfig, "with_note")


def test_legacy_config_json_loads_without_its_deleted_keys(tmp_path: Path) -> None:
    """A config.json saved before the registry: no name, notes + three deleted settings; it still loads."""
    cfg = make_config("smoke", {"train.setting": "weak", "loss.sgb": False, "train.seed": 2})
    old = cfg.to_dict()
    del old["name"]
    old["notes"] = ["pretrained weights unavailable: random init"]
    old["loss"]["reduction"] = "mean"
    old["train"]["compile"] = False
    old["eval"]["score_calibration"] = "validation"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    back = RunConfig.load(path)
    assert back == cfg and back.name == "AVAGA-R_w-noSGB" and back.run_id == "AVAGA-R_w-noSGB-seed2"
    assert config_hash(back) == config_hash(cfg)  # a finished legacy run is still recognised as finished
    # exactly those keys: anything else unknown is still an error
    old["train"]["compiled"] = True
    with pytest.raises(ValueError, match="TrainConfig.compiled"):
        RunConfig.from_dict(old)


def test_name_from_run_argument_explicit_name_or_registry_match() -> None:
    flat = make_config("smoke", run="AVAGA-R_u-flat")
    assert flat.model.latent == "flat" and flat.run_id == "AVAGA-R_u-flat-seed0"
    assert make_config("smoke", {"model.latent": "flat"}) == flat  # matched: same config, same name
    own = make_config("smoke", {"model.latent": "flat", "loss.attention_loss": False, "name": "my-run"})
    assert own.run_id == "my-run-seed0"
    with pytest.raises(ValueError, match="matches no run of the study registry"):
        make_config("smoke", {"model.latent": "flat", "loss.attention_loss": False})
    with pytest.raises(ValueError, match="config named 'AVAGA-R_u' has .*model.latent"):
        make_config("smoke", {"model.latent": "flat"}, run="AVAGA-R_u")
    with pytest.raises(ValueError, match="config named 'AE-L2'"):
        make_config("smoke", {"name": "AE-L2"})  # a registry name must be that run
    with pytest.raises(ValueError, match="not in the study registry"):
        make_config("smoke", run="AVAGA-R_u-nothing")
    with pytest.raises(ValueError, match="folder name"):
        make_config("smoke", {"name": "a/b"})


def test_defaults_are_the_default_run() -> None:
    assert make_config("smoke").name == RunConfig().name == C.DEFAULT_RUN


@pytest.mark.parametrize(
    ("key", "value", "constant"),
    [
        ("method", "vae", C.METHODS),
        ("data.dataset", "imagenet", C.DATASETS),
        ("model.variant", "X", C.VARIANTS),
        ("model.latent", "dense", C.LATENTS),
        ("model.gradcam_layer", "layer4", C.GRADCAM_LAYERS),
        ("model.attention_norm", "softmax", C.ATTENTION_NORMALIZATIONS),
        ("train.setting", "semi", C.SETTINGS),
        ("train.amp", "fp16", C.AMP_MODES),
    ],
)
def test_string_options_are_checked_in_validate(key: str, value: str, constant: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=f"{key} '{value}' unknown"):
        make_config("smoke", {key: value, "name": "x"})
    cfg = apply_overrides(make_config("smoke"), {key: value})
    with pytest.raises(ValueError, match=str(constant[0])):
        C.validate(cfg)


def test_config_from_parameters_is_the_notebook_mapping() -> None:
    params = {"run": "AVAGA-R_w-noadv", "dataset": "embedded", "category": "granite", "epochs": 1, "seed": 3,
              "profile": "smoke", "variant": None, "results_dir": "results"}
    cfg = config_from_parameters("weak", params, "smoke")
    assert cfg.run_id == "AVAGA-R_w-noadv-seed3" and not cfg.loss.adversarial_recon
    assert (cfg.data.category, cfg.train.epochs, cfg.results_dir) == ("granite", 1, "results")
    # by hand, without run: switches as before, named after the run they make
    assert config_from_parameters("unsupervised", {"method": "ae_ssim"}, "paper").run_id == "AE-SSIM-seed0"
    with pytest.raises(ValueError, match="unknown notebook parameter 'lr'"):
        config_from_parameters("unsupervised", {"lr": 1.0}, "smoke")
    with pytest.raises(ValueError, match="is a weak run: its notebook is 04_train_weakly_supervised.ipynb"):
        config_from_parameters("unsupervised", {"run": "AVAGA-R_w"}, "smoke")


def test_cpu_profile_can_localize_and_small_grids_are_refused() -> None:
    cfg = make_config("cpu")
    assert (cfg.data.image_size, cfg.train.lr, cfg.train.threads) == (128, 1e-4, 1)
    assert cfg.train.epochs == C.CPU_EPOCHS and cfg.data.image_size // 32 >= C.MIN_LATENT_GRID
    for profile in C.LOCALIZING_PROFILES:  # a 2x2 latent grid cannot localize: refused where localization is judged
        with pytest.raises(ValueError, match="2x2 latent grid.*smoke profile"):
            make_config(profile, {"data.image_size": 64})
    assert make_config("smoke").data.image_size == 64  # the pipeline check keeps 64 px
    with pytest.raises(ValueError, match="val_quantile"):
        make_config("cpu", {"eval.val_quantile": 1.0})


def test_cpu_params_file_plans_the_signal_study() -> None:
    specs = plan_runs(Path(__file__).parents[1] / "params" / "cpu.yaml")
    assert {s.config.profile for s in specs} == {"cpu"}
    assert {s.config.data.image_size for s in specs} == {128} and {s.config.train.threads for s in specs} == {1}
    assert {s.config.train.seed for s in specs} == {0, 1, 2}
    assert {s.name for s in specs} == {"AVAGA-R_u", "AVAGA-R_u-maxnorm", "AVAGA-R_u-gain", "AVAGA-R_u-size", "AE-L2",
                                       "AE-SSIM", "AVAGA-R_w", "AVAGA-D_u", "AVAGA-R_u-size-faithful",
                                       "AVAGA-R_u-selfsup", "AVAGA-R_u-advoff",
                                       "AVAGA-R_u-size-faithful-selfsup"}  # the recipe, its remedies, both
    # baselines, the paper's other runs that the 2-hour budget allows (R_w vs R_u, R vs D: Table 2), issue 21's arms
    assert specs[0].name == "AVAGA-R_u"  # the paper's recipe is planned first


def test_readme_profile_table_states_what_the_profiles_train() -> None:
    # the README's "Profiles" table is where a reader looks up a profile's image side and epochs; the default study
    # (params/smoke.yaml) trains the smoke profile's own epochs: the count is set once, in config.SMOKE_EPOCHS
    root = Path(__file__).resolve().parents[1]
    rows = {line.split("`")[1]: line for line in (root / "README.md").read_text().splitlines()
            if line.startswith("| `")}
    for name, values in C.PROFILES.items():
        size, epochs = values["data.image_size"], values["train.epochs"]
        assert f"{size} px" in rows[name] and re.search(rf"\b{epochs} epochs?\b", rows[name]), (name, size, epochs)
    smoke_study = plan_runs(root / "params" / "smoke.yaml", categories="weave", runs="AE-L2")[0].config
    assert smoke_study.train.epochs == C.PROFILES["smoke"]["train.epochs"] == C.SMOKE_EPOCHS
