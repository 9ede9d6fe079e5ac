"""Differentiable Grad-CAM on the latent space (PROTOCOL_NOTES 1-2) and the inference maps of the evaluator.

Grad-CAM needs a scalar target y and a feature map F: ``alpha_k = mean_ij dy/dF_k[i,j]`` and ``A = norm(sum_k alpha_k
F_k)``, bilinearly upsampled to the input size.

* Target (PN 1): ``"latent"`` = sum(z) (z = mu at eval, so sum(mu) at test); ``"normal"`` / ``"anomalous"`` = the
  classifier logit of c_n / c_a (weak setting, PN 3-4).
* Feature map (PN 1, ``ModelConfig.gradcam_layer``): ``"features"`` (default) = the encoder map after Table 9's
  ReLU, i.e. the input of the 1x1 mu / logvar heads; ``"z"`` = the latent itself (conv latent only).
* Normalisation (PN 2, ``ModelConfig.attention_norm``): ``sigmoid`` (default) = sigmoid(sum alpha F) in place of
  the ReLU; ``minmax`` / ``max`` per image after the ReLU; ``relu_sigmoid`` = the literal reading, A >= 0.5;
  ``gain`` = the GAIN-style soft mask sigmoid(w (minmax(ReLU(raw)) - s)) (Li et al. 2018; a remedy of issue 13,
  docs/PROTOCOL.md "Remedies"). ``max`` and ``gain`` are trained variants of the study, never post-hoc rescalings.

The gradient dy/dF is computed in closed form: between F and y there are only linear maps (the mu / logvar heads,
the classifier's Linear) and the reparameterisation ``z = mu + eps * exp(logvar / 2)``, so

    dy/dmu = dy/dz = G,   dy/dlogvar = G * (z - mu) / 2,   dy/dF = W_mu^T G + W_logvar^T (G * (z - mu) / 2)

(G = 1 for the latent target, the classifier row for a class target). This is exactly what ``torch.autograd.grad(y, F,
create_graph=True)`` returns, as an ordinary differentiable expression of (F, mu, logvar, the head and classifier
weights), so the attention loss back-propagates through it (second order) without a second backward pass; the mean over
(i, j) is taken before the matrix product (cheap). ``gradcam_autograd`` is the reference implementation; tests check
both agree in values and in the gradients of a loss on A.

Precision (issue 15): Grad-CAM always runs in float32 outside autocast and TF32
(:func:`avaga_lib.runtime.full_precision`), in training and at evaluation, so a bf16 forward pass changes only the
features it reads, never the arithmetic of the map. The bilinear upsampling is a product with two constant
interpolation matrices (:func:`bilinear_upsample`), equal to ``F.interpolate(mode="bilinear", align_corners=False)`` up
to float rounding, whose backward is deterministic on every device (CUDA's ``upsample_bilinear2d`` backward is not, and
raised in deterministic mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avaga_lib.config import ModelConfig
from avaga_lib.models.avaga.model import AVAGA, AVAGAOutput
from avaga_lib.runtime import full_precision

TARGETS = ("latent", "normal", "anomalous")
CLASS_INDEX = {"normal": 0, "anomalous": 1}  # classifier logits: index 0 normal c_n, 1 anomalous c_a (PN 4)
NORMS = ("sigmoid", "minmax", "max", "relu_sigmoid", "gain")
LAYERS = ("features", "z")
_EPS = 1e-8  # guards the per-image division of minmax / max on a constant map


def unwrap(model: nn.Module) -> AVAGA:
    """The bare ``AVAGA`` behind DDP (``.module``) or ``torch.compile`` (``._orig_mod``) wrappers."""
    m: nn.Module = model
    for _ in range(4):  # at most DDP(compile(model)) or compile(DDP(model)) in practice
        if isinstance(m, AVAGA):
            return m
        inner = getattr(m, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(m, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            break
        m = inner
    if not isinstance(m, AVAGA):
        raise TypeError(f"expected an AVAGA model (possibly wrapped), got {type(model).__name__}")
    return m


def _check(model: AVAGA, target: str, cfg: ModelConfig) -> None:
    if target not in TARGETS:
        raise ValueError(f"Grad-CAM target '{target}' unknown; choose one of {TARGETS}")
    if target != "latent" and model.classifier is None:
        raise ValueError(f"Grad-CAM target '{target}' needs the classifier head (build the model for setting=weak)")
    if cfg.gradcam_layer not in LAYERS:
        raise ValueError(f"model.gradcam_layer '{cfg.gradcam_layer}' unknown; choose one of {LAYERS}")
    if cfg.gradcam_layer == "z" and model.latent != "conv":
        raise ValueError("model.gradcam_layer='z' needs the conv latent (a flat z has no spatial map); use 'features'")
    if cfg.attention_norm not in NORMS:
        raise ValueError(f"model.attention_norm '{cfg.attention_norm}' unknown; choose one of {NORMS}")


def _grad_wrt_z(model: AVAGA, out: AVAGAOutput, target: str) -> Tensor:
    """G = dy/dz, broadcastable to ``out.z`` (ones for the latent target, the classifier row for a class)."""
    if target == "latent":
        return torch.ones_like(out.z)
    assert model.classifier is not None
    row = model.classifier.linear.weight[CLASS_INDEX[target]]  # (numel of one z,)
    return row.view(1, *out.z.shape[1:])


def _channel_weights(model: AVAGA, out: AVAGAOutput, target: str, layer: str) -> Tensor:
    """Grad-CAM channel weights alpha (B or 1, K) in closed form (see the module docstring)."""
    g_z = _grad_wrt_z(model, out, target)
    if layer == "z":
        return g_z.mean(dim=(2, 3))  # dy/dz = G; F = z itself
    stochastic = out.z is not out.mu  # at eval z = mu: the logvar path vanishes
    g_lv = g_z * (0.5 * (out.z - out.mu)) if stochastic else None  # z - mu = eps * std, differentiable in logvar
    if model.latent == "conv":
        w_mu = model.mu.weight.flatten(1)  # (C, K) from the 1x1 conv
        alpha = g_z.mean(dim=(2, 3)) @ w_mu
        if g_lv is not None:
            alpha = alpha + g_lv.mean(dim=(2, 3)) @ model.logvar.weight.flatten(1)
        return alpha
    # flat latent: mu = W_mu flatten(F) + b, so dy/dflatten(F) = G W_mu (+ logvar term); then mean over (i, j)
    k, s = out.features.shape[1], out.features.shape[-1]
    d_flat = g_z @ model.mu.weight
    if g_lv is not None:
        d_flat = d_flat + g_lv @ model.logvar.weight
    return d_flat.view(d_flat.shape[0], k, s, s).mean(dim=(2, 3))


def normalize_attention(raw: Tensor, method: str, gain_scale: float = 10.0, gain_offset: float = 0.5) -> Tensor:
    """Map the raw Grad-CAM sum_k alpha_k F_k (B, 1, h, w) into [0, 1] (PN 2), each image on its own.

    Args:
        raw: un-normalised map. method: ``sigmoid`` (sigmoid in place of the ReLU, default), ``minmax`` / ``max`` (per
        image, after a ReLU),
            ``relu_sigmoid`` (the literal "sigmoid after Grad-CAM's ReLU": always >= 0.5), ``gain`` (the soft mask
            ``sigmoid(gain_scale * (minmax(ReLU(raw)) - gain_offset))``: scale-free, so scaling the features cannot
            saturate it, and min-max pins one cell per image at sigmoid(-gain_scale * gain_offset)).
        gain_scale: w of the ``gain`` mask (``ModelConfig.gain_scale``). gain_offset: s of the ``gain`` mask
        (``ModelConfig.gain_offset``).
    """
    if method == "sigmoid":
        return torch.sigmoid(raw)
    if method == "relu_sigmoid":
        return torch.sigmoid(F.relu(raw))
    r = F.relu(raw)
    flat = r.flatten(1)
    mx = flat.amax(dim=1).view(-1, 1, 1, 1)
    if method == "max":
        return r / (mx + _EPS)
    if method not in ("minmax", "gain"):
        raise ValueError(f"attention normalisation '{method}' unknown; choose one of {NORMS}")
    mn = flat.amin(dim=1).view(-1, 1, 1, 1)
    unit = (r - mn) / (mx - mn + _EPS)
    return unit if method == "minmax" else torch.sigmoid(gain_scale * (unit - gain_offset))


def _interpolation_matrix(n_in: int, n_out: int, device: torch.device) -> Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation with ``align_corners=False`` (PyTorch's convention)."""
    src = ((torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
    lo = src.floor().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = (src - lo).unsqueeze(1)
    cols = torch.arange(n_in, device=device, dtype=torch.float64)
    w = (1.0 - frac) * (cols == lo.unsqueeze(1)) + frac * (cols == hi.unsqueeze(1))  # element-wise: deterministic
    return w.float()


def bilinear_upsample(a: Tensor, size: int) -> Tensor:
    """Bilinear resize of (B, C, h, w) maps to (B, C, size, size) as ``W_h @ a @ W_w^T`` (align_corners=False).

    Same values as ``F.interpolate(a, (size, size), mode="bilinear", align_corners=False)`` up to float rounding;
    its backward (two matrix products) is deterministic on every device, unlike CUDA's upsample backward.
    """
    h, w = a.shape[-2:]
    w_h = _interpolation_matrix(h, size, a.device).to(a.dtype)
    w_w = w_h if w == h else _interpolation_matrix(w, size, a.device).to(a.dtype)
    return w_h @ a @ w_w.T


def _finish(alpha: Tensor, fmap: Tensor, cfg: ModelConfig, out_size: int) -> tuple[Tensor, Tensor]:
    """(A upsampled to ``out_size``, the raw map sum_k alpha_k F_k at latent resolution)."""
    raw = torch.einsum("bk,bkij->bij", alpha.expand(fmap.shape[0], -1), fmap).unsqueeze(1)
    a = normalize_attention(raw, cfg.attention_norm, cfg.gain_scale, cfg.gain_offset)
    # normalise at latent resolution, then upsample: bilinear weights are convex, so A stays in [0, 1]
    return bilinear_upsample(a, out_size), raw


def _as_dtype(out: AVAGAOutput, dtype: torch.dtype) -> AVAGAOutput:
    """The tensors Grad-CAM reads in the weights' dtype (float32: a bf16 autocast forward returns bf16 ones)."""
    if out.features.dtype == dtype and out.mu.dtype == dtype and out.z.dtype == dtype:
        return out
    z = out.z.to(dtype)
    mu = z if out.z is out.mu else out.mu.to(dtype)  # keep the identity that marks eval mode (z = mu)
    return AVAGAOutput(out.features.to(dtype), mu, out.logvar, z, out.recon, out.logits, out.recon_logits)


def gradcam_maps(
    model: nn.Module, out: AVAGAOutput, target: str, cfg: ModelConfig, out_size: int
) -> tuple[Tensor, Tensor]:
    """Differentiable Grad-CAM attention map of a batch and its raw map (closed-form gradient; second order for free).

    Args:
        model: the ``AVAGA`` that produced ``out`` (DDP / compile wrappers accepted). out: its forward output for the
        batch (training: z sampled; eval: z = mu). target: ``"latent"`` (y = sum z), ``"normal"`` or ``"anomalous"`` (y
        = that classifier logit). cfg: model config (``gradcam_layer``, ``attention_norm``). out_size: side of the
        returned map (the input side).

    Returns:
        (A, raw): A (B, 1, out_size, out_size) in [0, 1], in the weights' dtype (float32), computed outside autocast
        whatever the caller's autocast, differentiable w.r.t. every encoder / head / classifier weight; raw, the map
        sum_k alpha_k F_k before normalisation at latent resolution (B, 1, h, w), what the collapse diagnostics read.
    """
    m = unwrap(model)
    _check(m, target, cfg)
    with full_precision(out.features.device):
        out = _as_dtype(out, m.mu.weight.dtype)  # float32 weights (float64 in the equivalence tests)
        alpha = _channel_weights(m, out, target, cfg.gradcam_layer)
        fmap = out.z if cfg.gradcam_layer == "z" else out.features
        return _finish(alpha, fmap, cfg, out_size)


def gradcam(model: nn.Module, out: AVAGAOutput, target: str, cfg: ModelConfig, out_size: int) -> Tensor:
    """The attention map A of :func:`gradcam_maps` alone (same contract)."""
    return gradcam_maps(model, out, target, cfg, out_size)[0]


def gradcam_autograd(model: nn.Module, out: AVAGAOutput, target: str, cfg: ModelConfig, out_size: int) -> Tensor:
    """Reference Grad-CAM with ``torch.autograd.grad(create_graph=True)`` (tests; same contract as ``gradcam``)."""
    m = unwrap(model)
    _check(m, target, cfg)
    fmap = out.z if cfg.gradcam_layer == "z" else out.features
    if target == "latent":
        y = out.z.sum()
    else:
        assert out.logits is not None
        y = out.logits[:, CLASS_INDEX[target]].sum()  # images are independent between F and y: sum = per image
    (grad,) = torch.autograd.grad(y, fmap, create_graph=True)
    return _finish(grad.mean(dim=(2, 3)), fmap, cfg, out_size)[0]


def minmax_gradcam(raw: Tensor, size: int) -> Tensor:
    """The test map of Silva-Rodriguez et al. (BMVC 2021): Grad-CAM's ReLU(raw), upsampled to ``size``, then min-max
    normalised per image, so each image's map spans [0, 1] with high = anomalous (``model.test_map=gradcam_minmax``).

    Normalised after the upsampling (not at latent resolution) so the span is exactly [0, 1] on the pixels scored;
    a constant map (every cell equal) is 0 everywhere.
    """
    up = bilinear_upsample(F.relu(raw.float()), size)
    flat = up.flatten(1)
    mn = flat.amin(dim=1).view(-1, 1, 1, 1)
    mx = flat.amax(dim=1).view(-1, 1, 1, 1)
    return (up - mn) / (mx - mn + _EPS)


@dataclass
class Inference:
    """What the evaluator needs per batch.

    Attributes:
        recon: reconstruction (B, 3, H, W). score_raw: mean |x - recon| per image (B,) (PN 8 calibrates it, label-free).
        amap: anomalous attention map (B, 1, H, W) in [0, 1]: 1 - A (unsupervised; ``model.test_map=gradcam_minmax``:
            :func:`minmax_gradcam`), A^{c_a} (weak, ungated:
            the evaluator empties it for images the classifier calls normal, PN 4).
        prob_anomalous: softmax probability of c_a (B,) in the weak setting, else None. attention: A (B, 1, H, W): the
        latent Grad-CAM (unsupervised) or the normal-class map A^{c_n} (weak).
    """

    recon: Tensor
    score_raw: Tensor
    amap: Tensor
    prob_anomalous: Tensor | None
    attention: Tensor


def infer(model: nn.Module, x: Tensor, cfg: ModelConfig, setting: str) -> Inference:
    """Evaluation pass of a batch: model in eval mode (z = mu, so y = sum(mu)), no gradient w.r.t. parameters.

    The closed-form Grad-CAM needs no backward pass, so everything runs under ``torch.no_grad``. The model's
    train / eval mode is restored afterwards. Under the caller's autocast only the network's forward runs in
    bf16: the reconstruction (sigmoid of float32 logits), the score, Grad-CAM and the softmax are float32.

    Args:
        model: an ``AVAGA`` (wrappers accepted). x: images (B, 3, H, W) in [0, 1]. cfg: model config (Grad-CAM choices).
        setting: "unsupervised" or "weak".
    """
    if setting not in ("unsupervised", "weak"):
        raise ValueError(f"setting '{setting}' unknown; choose unsupervised or weak")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
            size = x.shape[-1]
            score = (x.float() - out.recon.float()).abs().flatten(1).mean(1)
            if setting == "unsupervised":
                a, raw = gradcam_maps(model, out, "latent", cfg, size)
                amap = minmax_gradcam(raw, size) if cfg.test_map == "gradcam_minmax" else 1.0 - a
                return Inference(recon=out.recon, score_raw=score, amap=amap, prob_anomalous=None, attention=a)
            if out.logits is None:
                raise ValueError("setting=weak needs a model with the classifier head (build_model(..., 'weak'))")
            a_n = gradcam(model, out, "normal", cfg, size)
            a_a = gradcam(model, out, "anomalous", cfg, size)
            prob = torch.softmax(out.logits.float(), dim=1)[:, CLASS_INDEX["anomalous"]]
            return Inference(recon=out.recon, score_raw=score, amap=a_a, prob_anomalous=prob, attention=a_n)
    finally:
        model.train(was_training)
