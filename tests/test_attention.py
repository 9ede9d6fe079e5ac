"""Grad-CAM of PN 1-2: closed form == autograd (values and second-order gradients), normalisations, inference."""

from __future__ import annotations

import pytest
import torch

from avaga_lib.config import ModelConfig
from avaga_lib.models.avaga.attention import gradcam, gradcam_autograd, infer, normalize_attention
from avaga_lib.models.avaga.model import build_model

CASES = [  # (latent, gradcam_layer, attention_norm, targets): one model / forward per case, several targets
    ("conv", "features", "sigmoid", ("latent", "normal", "anomalous")),
    ("conv", "z", "minmax", ("anomalous",)),
    ("flat", "features", "max", ("latent", "anomalous")),
]


@pytest.mark.parametrize(("latent", "layer", "norm", "targets"), CASES)
def test_closed_form_equals_autograd(latent: str, layer: str, norm: str, targets: tuple[str, ...]) -> None:
    """Values and the gradients of a loss on A w.r.t. encoder / head / classifier weights agree to 1e-5 (float64)."""
    torch.manual_seed(0)
    cfg = ModelConfig(latent=latent, pretrained="none", gradcam_layer=layer, attention_norm=norm)
    model, _ = build_model(cfg, 64, "weak")
    model.double().train()  # training mode: z sampled, so the reparameterisation term through logvar is exercised
    out = model(torch.rand(2, 3, 64, 64, dtype=torch.float64))
    for target in targets:
        _check_equivalence(model, out, target, cfg)


def _check_equivalence(model: torch.nn.Module, out: object, target: str, cfg: ModelConfig) -> None:
    a_cf = gradcam(model, out, target, cfg, 64)
    a_ag = gradcam_autograd(model, out, target, cfg, 64)
    assert a_cf.shape == (2, 1, 64, 64)
    torch.testing.assert_close(a_cf, a_ag, atol=1e-5, rtol=0)
    named = [(n, p) for n, p in model.named_parameters() if not n.startswith("decoder")]
    params = [p for _, p in named]
    loss_cf = (1.0 - a_cf).mean() + (a_cf**2).mean()  # a nonlinear loss on A
    loss_ag = (1.0 - a_ag).mean() + (a_ag**2).mean()
    g_cf = torch.autograd.grad(loss_cf, params, retain_graph=True, allow_unused=True)
    g_ag = torch.autograd.grad(loss_ag, params, retain_graph=True, allow_unused=True)
    nonzero = 0
    for (name, p), u, v in zip(named, g_cf, g_ag):
        u = torch.zeros_like(p) if u is None else u  # None = does not depend on it (e.g. head biases)
        v = torch.zeros_like(p) if v is None else v
        torch.testing.assert_close(u, v, atol=1e-5, rtol=0, msg=lambda m, name=name: f"{name}: {m}")
        nonzero += int(u.abs().sum() > 0)
    assert model.body.conv1.weight in params and g_cf[0] is not None and g_cf[0].abs().sum() > 0  # reaches encoder
    assert nonzero > 10


def test_attention_loss_reaches_encoder() -> None:
    model, _ = build_model(ModelConfig(pretrained="none"), 64, "unsupervised")
    out = model(torch.rand(2, 3, 64, 64))
    (1.0 - gradcam(model, out, "latent", ModelConfig(), 64)).mean().backward()
    for p in (model.body.conv1.weight, model.body.layer4[1].conv2.weight, model.mu.weight, model.logvar.weight):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.decoder.parameters())  # A does not depend on the decoder


def test_literal_relu_sigmoid_never_flags() -> None:
    """PN 2: sigmoid after the ReLU gives A >= 0.5, so 1 - A never exceeds the 0.5 threshold (why not default)."""
    torch.manual_seed(0)
    raw = torch.randn(16, 1, 8, 8) * torch.logspace(-3, 3, 16).view(16, 1, 1, 1)  # every scale, both signs
    a = normalize_attention(raw, "relu_sigmoid")
    assert float((1.0 - a).max()) <= 0.5
    cfg = ModelConfig(pretrained="none", attention_norm="relu_sigmoid")
    model, _ = build_model(cfg, 64, "unsupervised")
    inf = infer(model, torch.rand(4, 3, 64, 64), cfg, "unsupervised")
    assert float(inf.amap.max()) <= 0.5
    a_default = normalize_attention(raw, "sigmoid")  # the default can flag: 1 - A > 0.5 where the raw map < 0
    assert float((1.0 - a_default).max()) > 0.5


@pytest.mark.parametrize("norm", ["sigmoid", "minmax", "max", "relu_sigmoid"])
def test_normalisations_in_unit_range(norm: str) -> None:
    raw = torch.randn(5, 1, 4, 4) * 10
    a = normalize_attention(raw, norm)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    if norm == "minmax":
        assert torch.allclose(a.flatten(1).amax(1), torch.ones(5), atol=1e-6)
        assert torch.allclose(a.flatten(1).amin(1), torch.zeros(5))
    if norm == "max":
        assert torch.allclose(a.flatten(1).amax(1), torch.ones(5), atol=1e-6)


def test_infer_unsupervised_and_weak() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(pretrained="none")
    x = torch.rand(3, 3, 64, 64)
    model, _ = build_model(cfg, 64, "unsupervised")
    model.train()
    inf = infer(model, x, cfg, "unsupervised")
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # no gradient w.r.t. parameters
    assert inf.prob_anomalous is None and inf.amap.shape == (3, 1, 64, 64)
    torch.testing.assert_close(inf.amap, 1.0 - inf.attention)
    torch.testing.assert_close(inf.score_raw, (x - inf.recon).abs().flatten(1).mean(1))
    model.eval()  # at eval z = mu: the map equals Grad-CAM with y = sum(mu) computed by autograd
    with torch.enable_grad():
        out = model(x)
        ref = gradcam_autograd(model, out, "latent", cfg, 64)
    torch.testing.assert_close(inf.attention, ref.detach(), atol=1e-5, rtol=0)
    wmodel, _ = build_model(cfg, 64, "weak")
    winf = infer(wmodel, x, cfg, "weak")
    assert winf.prob_anomalous is not None and winf.prob_anomalous.shape == (3,)
    assert bool(((winf.prob_anomalous >= 0) & (winf.prob_anomalous <= 1)).all())
    assert winf.amap.shape == (3, 1, 64, 64) and not torch.equal(winf.amap, winf.attention)


def test_invalid_choices_raise() -> None:
    model, _ = build_model(ModelConfig(pretrained="none", latent="flat"), 64, "unsupervised")
    out = model(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="gradcam_layer='z'"):
        gradcam(model, out, "latent", ModelConfig(latent="flat", gradcam_layer="z"), 64)
    with pytest.raises(ValueError, match="classifier"):
        gradcam(model, out, "normal", ModelConfig(latent="flat"), 64)
    with pytest.raises(ValueError, match="attention_norm"):
        gradcam(model, out, "latent", ModelConfig(latent="flat", attention_norm="relu"), 64)


@pytest.mark.parametrize("method", ["max", "gain"])
def test_remedy_normalizations_range_shape_and_gradient(method: str) -> None:
    """Remedies (a)/(b): per-image maps in [0, 1] of the raw map's shape, scale-free, with a gradient to raw."""
    torch.manual_seed(0)
    raw = (torch.randn(3, 1, 4, 4) * 5).requires_grad_(True)
    a = normalize_attention(raw, method)
    assert a.shape == raw.shape and float(a.detach().min()) >= 0.0 and float(a.detach().max()) <= 1.0
    torch.testing.assert_close(normalize_attention(raw.detach() * 100, method), a.detach(), atol=1e-5, rtol=0)
    (g,) = torch.autograd.grad((1.0 - a).mean(), raw)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    if method == "max":  # ReLU then divide by the image's own max: each image's max is exactly 1
        torch.testing.assert_close(a.detach().flatten(1).amax(1), torch.ones(3))
    else:  # sigmoid(10 (minmax - 0.5)): one cell per image at sigmoid(-5), one at sigmoid(5)
        flat = a.detach().flatten(1)
        torch.testing.assert_close(flat.amin(1), torch.sigmoid(torch.tensor(-5.0)).expand(3))
        torch.testing.assert_close(flat.amax(1), torch.sigmoid(torch.tensor(5.0)).expand(3))


def test_gain_uses_the_config_scale_and_offset() -> None:
    raw = torch.tensor([0.0, 1.0, 2.0, 4.0]).view(1, 1, 2, 2)
    a = normalize_attention(raw, "gain", gain_scale=4.0, gain_offset=0.25)
    torch.testing.assert_close(a.flatten(), torch.sigmoid(4.0 * (torch.tensor([0.0, 0.25, 0.5, 1.0]) - 0.25)))
