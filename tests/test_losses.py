"""Losses of eq. 1-6: SGB selection with crafted logits / labels, ablation switches, gradients, finiteness."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avaga_lib.config import LossConfig, ModelConfig
from avaga_lib.models.avaga.losses import (
    discriminator_objective,
    generator_objective,
    kl_divergence,
    normal_attention_term,
    reconstruction_bce,
    sgb_selection,
    size_barrier,
    weak_attention_loss,
)
from avaga_lib.models.avaga.model import Discriminator, build_model

MCFG = ModelConfig(pretrained="none")
S = 32  # smallest legal side (latent 1x1): these tests need no spatial structure, only speed


def test_sgb_selection_crafted() -> None:
    """Labels (0 normal, 1 anomalous) x predictions: SGB keeps only normal images predicted normal (PN 3)."""
    labels = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[3.0, -1.0], [-2.0, 2.0], [1.0, 0.0], [0.0, 4.0]])  # predictions: n, a, n, a
    assert sgb_selection(logits, labels, sgb=True).tolist() == [True, False, False, False]
    assert sgb_selection(logits, labels, sgb=False).tolist() == [True, True, False, False]


def test_weak_attention_loss_contributions() -> None:
    """Only selected images contribute mean(1 - A^{c_n}) + mean(A^{c_a}); the gradient is zero on the others."""
    a_n = torch.rand(4, 1, 8, 8, requires_grad=True)
    a_a = torch.rand(4, 1, 8, 8, requires_grad=True)
    selected = torch.tensor([True, False, False, True])
    loss = weak_attention_loss(a_n, a_a, selected)
    # batch mean, the zeros of unselected images included
    expect = sum(float((1 - a_n[i]).mean().detach() + a_a[i].mean().detach()) for i in (0, 3)) / 4
    assert math.isclose(float(loss), expect, rel_tol=1e-6)
    loss.backward()
    per_image_n = a_n.grad.flatten(1).abs().sum(1)
    per_image_a = a_a.grad.flatten(1).abs().sum(1)
    assert (per_image_n > 0).tolist() == selected.tolist()
    assert (per_image_a > 0).tolist() == selected.tolist()


def _weak_model(bias: tuple[float, float], zero_weight: bool) -> torch.nn.Module:
    model, _ = build_model(MCFG, S, "weak")
    with torch.no_grad():
        if zero_weight:
            model.classifier.linear.weight.zero_()  # A^c = sigmoid(0) = 0.5 everywhere: L_a is 1 per selected image
        model.classifier.linear.bias.copy_(torch.tensor(bias))  # forces every prediction
    return model


@pytest.mark.parametrize(
    ("bias", "sgb", "expected"),
    [
        ((20.0, -20.0), True, 0.75),  # all predicted normal: the 3 normal images contribute
        ((-20.0, 20.0), True, 0.0),  # all predicted anomalous: SGB excludes every image
        ((-20.0, 20.0), False, 0.75),  # w/o SGB: every normal image, whatever the prediction
    ],
)
def test_generator_objective_sgb(bias: tuple[float, float], sgb: bool, expected: float) -> None:
    model = _weak_model(bias, zero_weight=True)
    labels = torch.tensor([0, 0, 1, 0])
    _, logs, _ = generator_objective(
        model, Discriminator(S), torch.rand(4, 3, S, S), labels, LossConfig(sgb=sgb), MCFG, "weak"
    )
    assert math.isclose(logs["attn_a"], expected, abs_tol=1e-6)
    assert math.isclose(logs["sgb_selected"], expected, abs_tol=1e-6)


def test_weak_attention_loss_reaches_encoder() -> None:
    model = _weak_model((20.0, -20.0), zero_weight=False)
    cfg = LossConfig(w_r=0.0, w_kl=0.0, w_adv=0.0, w_c=0.0, w_a=1.0)  # L_a alone
    total, logs, _ = generator_objective(
        model, Discriminator(S), torch.rand(2, 3, S, S), torch.tensor([0, 0]), cfg, MCFG, "weak"
    )
    assert logs["sgb_selected"] == 1.0
    total.backward()
    for p in (model.body.conv1.weight, model.body.layer3[0].conv1.weight, model.mu.weight):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0


def test_attention_term_reaches_encoder_and_switches_off() -> None:
    model, _ = build_model(MCFG, 64, "unsupervised")
    x = torch.rand(2, 3, 64, 64)
    only_attn = LossConfig(w_r=0.0, w_kl=0.0, w_adv=0.0, w_attn=1.0)
    total, logs, _ = generator_objective(model, Discriminator(64), x, None, only_attn, MCFG, "unsupervised")
    assert math.isclose(float(total), logs["attn"], rel_tol=1e-6)
    total.backward()
    assert float(model.body.conv1.weight.grad.abs().sum()) > 0
    off = LossConfig(attention_loss=False)
    total, logs, _ = generator_objective(model, Discriminator(64), x, None, off, MCFG, "unsupervised")
    assert logs["attn"] > 0  # still logged (PN 2) ...
    assert math.isclose(logs["total"], logs["recon"] + logs["kl"] + logs["adv_g"], rel_tol=1e-5)  # ... not added


def test_without_adversarial_reconstruction() -> None:
    model, _ = build_model(MCFG, S, "weak")
    cfg = LossConfig(adversarial_recon=False)
    total, logs, _ = generator_objective(
        model, None, torch.rand(2, 3, S, S), torch.tensor([0, 1]), cfg, MCFG, "weak"
    )
    assert logs["recon"] == logs["kl"] == logs["adv_g"] == 0.0
    assert math.isclose(logs["total"], cfg.w_c * logs["cls"] + cfg.w_a * logs["attn_a"], rel_tol=1e-5)
    total.backward()
    assert all(p.grad is None for p in model.decoder.parameters())  # no decoder term
    with pytest.raises(ValueError, match="discriminator"):
        generator_objective(model, None, torch.rand(2, 3, S, S), torch.tensor([0, 1]), LossConfig(), MCFG, "weak")


@pytest.mark.parametrize(("variant", "latent", "setting"), [("R", "conv", "weak"), ("D", "flat", "unsupervised")])
def test_finite_at_init(variant: str, latent: str, setting: str) -> None:
    mcfg = ModelConfig(variant=variant, latent=latent, pretrained="none")
    model, _ = build_model(mcfg, S, setting)
    x = torch.rand(2, 3, S, S)
    total, logs, out = generator_objective(model, Discriminator(S), x, torch.tensor([0, 1]), LossConfig(), mcfg,
                                           setting)
    assert all(math.isfinite(v) for v in logs.values()), logs
    assert {"recon", "kl", "adv_g", "attn_mean", "attn_std", "total"} <= set(logs)
    d_loss, d_logs = discriminator_objective(Discriminator(S), x, out.recon)
    assert all(math.isfinite(v) for v in d_logs.values())
    assert math.isclose(d_logs["total"], d_logs["d_real"] + d_logs["d_fake"], rel_tol=1e-6)


def test_terms_match_definitions() -> None:
    x = torch.rand(2, 3, 8, 8)
    logits = torch.randn(2, 3, 8, 8) * 3
    # eq. 1 reads the decoder's logits: the BCE of sigmoid(logits), without its saturation (issue 15 row 8)
    torch.testing.assert_close(reconstruction_bce(x, logits).mean(), F.binary_cross_entropy(torch.sigmoid(logits), x))
    assert float(kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max()) == 0.0
    assert float(kl_divergence(torch.ones(1, 4), torch.zeros(1, 4))) == pytest.approx(0.5)


def test_discriminator_objective_detaches_recon() -> None:
    disc = Discriminator(S)
    recon = torch.rand(2, 3, 64, 64, requires_grad=True)
    loss, _ = discriminator_objective(disc, torch.rand(2, 3, S, S), recon)
    loss.backward()
    assert recon.grad is None and disc.net.conv1.weight.grad is not None


def test_forward_backward_r_128_batch2() -> None:
    """A full AVAGA-R training step (generator then discriminator) at 128x128, batch 2, on CPU."""
    model, _ = build_model(MCFG, 128, "unsupervised")
    disc = Discriminator(128)
    x = torch.rand(2, 3, 128, 128)
    total, logs, out = generator_objective(model, disc, x, None, LossConfig(), MCFG, "unsupervised")
    total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    disc.zero_grad(set_to_none=True)
    d_loss, _ = discriminator_objective(disc, x, out.recon)
    d_loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in disc.parameters())


def test_bf16_autocast() -> None:
    """Under bf16 autocast (the trainer's GPU default) the loss arithmetic stays float32 and finite."""
    model, _ = build_model(MCFG, S, "weak")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, logs, _ = generator_objective(
            model, Discriminator(S), torch.rand(2, 3, S, S), torch.tensor([0, 1]), LossConfig(), MCFG, "weak"
        )
    assert total.dtype == torch.float32 and all(math.isfinite(v) for v in logs.values())
    total.backward()


def test_size_barrier_value_continuity_and_flatness() -> None:
    """psi_t: continuous with slope t at z = -1/t^2, linear t z outside, small and nearly flat deep inside."""
    t = 25.0
    edge = -1.0 / t**2
    z = torch.tensor([edge - 1e-7, edge, edge + 1e-7, -0.2, 0.3], dtype=torch.float64, requires_grad=True)
    v = size_barrier(z, t)
    (g,) = torch.autograd.grad(v.sum(), z)
    assert abs(float(v[0] - v[2])) < 1e-5 and abs(float(g[0] - g[2])) < 1e-2 and abs(float(g[1]) - t) < 1e-6
    assert abs(float(v[4]) - (t * 0.3 - math.log(1.0 / t**2) / t + 1.0 / t)) < 1e-9  # infeasible: the tangent line
    assert abs(float(v[3]) - (-math.log(0.2) / t)) < 1e-9 and float(v[3]) < 0.07  # satisfied by 0.2: about 0.06
    assert float(g[3]) == pytest.approx(1.0 / (t * 0.2)) and float(g[3]) < float(g[4]) / 100


def test_size_constraint_replaces_the_attention_term() -> None:
    """Remedy (c): literal = mean(1 - A); size_barrier = psi_t((1 - p) - mean A), flat once mean(A) >= 1 - p."""
    a = torch.full((2, 1, 8, 8), 0.9, requires_grad=True)
    literal = normal_attention_term(a, LossConfig())
    torch.testing.assert_close(literal, torch.full((2,), 0.1))
    cfg = LossConfig(attention_constraint="size_barrier", size_p=0.2, barrier_t=25.0)
    barrier = normal_attention_term(a, cfg)
    torch.testing.assert_close(barrier, size_barrier(torch.full((2,), 0.8 - 0.9), 25.0))
    (g_lit,) = torch.autograd.grad(literal.sum(), a)
    (g_bar,) = torch.autograd.grad(barrier.sum(), a)
    assert float(g_bar.abs().sum()) < 0.5 * float(g_lit.abs().sum())  # satisfied: a weaker push towards A = 1
    low = torch.full((1, 1, 8, 8), 0.3)
    assert float(normal_attention_term(low, cfg)) > 10 * float(normal_attention_term(low, LossConfig()))


@pytest.mark.parametrize(("setting", "norm", "constraint"),
                         [("unsupervised", "gain", "literal"), ("unsupervised", "sigmoid", "size_barrier"),
                          ("weak", "max", "size_barrier")])
def test_remedies_train_and_log_the_collapse_diagnostics(setting: str, norm: str, constraint: str) -> None:
    """Each remedy's objective is finite, reaches the encoder, and logs the raw Grad-CAM / A / 1 - A statistics."""
    torch.manual_seed(0)
    mcfg = ModelConfig(pretrained="none", attention_norm=norm)
    lcfg = LossConfig(attention_constraint=constraint)
    model, _ = build_model(mcfg, 64, setting)
    disc = Discriminator(64)
    labels = torch.tensor([0, 0, 0, 1])
    total, logs, _ = generator_objective(model, disc, torch.rand(4, 3, 64, 64), labels, lcfg, mcfg, setting)
    assert torch.isfinite(total)
    for key in ("raw_mean", "raw_std", "raw_max", "attn_mean", "attn_std", "amap_frac"):
        assert logs[key].shape == () and torch.isfinite(logs[key]), key
    assert float(logs["raw_max"]) >= float(logs["raw_mean"]) and 0.0 <= float(logs["amap_frac"]) <= 1.0
    total.backward()
    assert float(model.body.conv1.weight.grad.abs().sum()) > 0
