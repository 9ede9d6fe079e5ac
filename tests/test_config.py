"""Config tree: profiles, overrides, round trip, validation, run folder names."""

from __future__ import annotations

import pytest

from avaga_lib.config import RunConfig, apply_overrides, config_hash, make_config


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


def test_setting_names_distinguish_every_run_of_the_study() -> None:
    names = {
        make_config("smoke", o).setting_name
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
    assert make_config("smoke").setting_name == "AVAGA-R_u-seed0"


def test_hash_ignores_recorded_fallback_notes_but_not_choices() -> None:
    cfg = make_config("smoke")
    assert config_hash(cfg) == config_hash(cfg.with_note("pretrained weights unavailable"))
    assert config_hash(cfg) != config_hash(apply_overrides(cfg, {"train.epochs": 4}))
