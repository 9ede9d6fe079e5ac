"""The models' one interface (issue 25, avaga_lib/models/): every method answers the same calls, and a config its
method cannot run is refused before any work, naming the key."""

from __future__ import annotations

import pytest
import torch

from avaga_lib.config import make_config
from avaga_lib.models.networks import build_networks
from avaga_lib.models.registry import METHODS, method_of
from avaga_lib.training import step

RUN_OF = {"avaga": "AVAGA-R_u", "ae_l2": "AE-L2", "ae_ssim": "AE-SSIM"}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_a_step_and_maps_a_batch_through_the_interface(name: str) -> None:
    cfg = make_config("smoke", {"data.image_size": 64}, run=RUN_OF[name])
    method = method_of(cfg.method)
    model, disc, _ = build_networks(cfg)
    nets = step.make_nets(model, disc, torch.optim.Adam(model.parameters()),
                          None if disc is None else torch.optim.Adam(disc.parameters()))
    x = torch.rand(2, 3, 64, 64)
    before = [p.detach().clone() for p in model.parameters()]
    terms = step.train_step(cfg, nets, x, torch.zeros(2, dtype=torch.long))
    assert terms and all(torch.isfinite(v) for v in terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the step updated the model
    out = method.infer(cfg, model, x, None)
    assert out.raw_map.shape == (2, 64, 64) and out.score_raw.shape == (2,) and out.recon.shape == x.shape
    assert float(out.raw_map.min()) >= 0.0 and float(out.raw_map.max()) <= method.map_upper
    assert method.native_side(64) == (2 if method.has_attention else 64)  # Grad-CAM on the 2x2 latent grid


def test_a_key_the_method_cannot_use_is_refused_before_training() -> None:
    cfg = make_config("smoke", {"method": "ae_l2", "model.pretrained": "selfsup", "name": "my-ae"})
    with pytest.raises(ValueError, match="model.pretrained='selfsup'.*method=avaga"):
        build_networks(cfg)
    weak = make_config("smoke", {"train.setting": "weak", "model.test_map": "gradcam_minmax", "name": "my-weak"})
    assert any("train.setting=unsupervised" in p for p in method_of("avaga").check(weak))


def test_an_unknown_method_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="ae_l2"):
        method_of("patchcore")
