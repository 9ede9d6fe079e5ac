"""Loss terms of eq. 1-6, selective gradient backpropagation (SGB) and the ablation switches.

Conventions (PROTOCOL_NOTES 3, 5):

* Every term is a mean per element and per image (PN 5): L_R is the per-pixel BCE (eq. 1), KL the per-latent-value
  KL to N(0, 1), the adversarial terms the per-patch BCE of the patch discriminator (PN 6), L_attn the mean of
  1 - A over pixels (eq. 3).
* Adversarial (eq. 2): the discriminator minimises BCE(D(x), 1) + BCE(D(x_hat), 0); the generator minimises the
  non-saturating -log D(x_hat). Both use BCE with logits on the patch logits (numerically safe under bf16 autocast);
  the value equals the BCE of the patch probabilities averaged over patches.
* Weak setting (eq. 5-6, PN 3): classifier cross-entropy on the 2 logits (= BCE of the softmax, PN 4); for a
  normal image that the classifier calls normal, L_a = mean(1 - A^{c_n}) + mean(A^{c_a}); 0 for every other image;
  L_a is the mean over the batch (zeros included). ``sgb=False``: every normal image, whatever the prediction.
  The reconstruction / KL / adversarial terms use the normal images of the batch only ("we train our latent space
  using normal images", Sec. 2.2.1); the anomalous ones train the classifier and are excluded from L_a.
* All loss arithmetic (and the Grad-CAM) runs in float32 with autocast and TF32 disabled
  (:func:`avaga_lib.runtime.full_precision`). Eq. 1's BCE reads the decoder's logits (BCE with logits, float32):
  a bf16 sigmoid saturates at exactly 1.0 from logit 6.3 on, where BCE on probabilities gives 100 (1 - x) with a
  zero gradient (issue 15 row 8).

Remedy (c) of issue 13 (``LossConfig.attention_constraint="size_barrier"``): eq. 3 pushes mean(A) to 1 without
end; the size constraint asks only mean(A) >= 1 - p of each normal image, through the extended log-barrier
psi_t of Kervadec et al. (as Silva-Rodriguez, Naranjo, Dolz 2021 do for CAVGA's term). It replaces mean(1 - A) in
eq. 3 and the normal-class half of L_a; the A^{c_a} half of L_a stays as written.

Collapse diagnostics (issue 13, logged per epoch in ``losses.csv``, on the training batch): ``raw_mean`` / ``raw_std``
/ ``raw_max`` of the raw Grad-CAM sum_k alpha_k F_k before normalisation (latent resolution; the epoch value of
``raw_max`` is the mean of the batch maxima), ``attn_mean`` / ``attn_std`` of A and ``amap_frac``, the fraction of
pixels of 1 - A above 0.5 (weak: of the normal-class map A^{c_n}, on the batch's images).

``generator_objective`` returns (total, dict of detached 0-d tensors, model output); the dict holds every term
(0 for terms switched off in this configuration, so losses.csv has the same columns within a setting),
``attn_mean`` / ``attn_std`` (the spread of A, PN 2) and ``total``. Nothing here reads a value back to the host
(no ``.item()`` / ``.tolist()`` / ``float()``: a host sync between forward and backward stalls a GPU, issue 15
row 9); the trainer converts the epoch's sums once.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avaga_lib.config import LossConfig, ModelConfig
from avaga_lib.models.avaga.attention import gradcam_maps
from avaga_lib.models.avaga.model import AVAGAOutput
from avaga_lib.runtime import full_precision

# The per-epoch columns of losses.csv that show the attention's collapse (notebooks 03 and 06; docs/PROTOCOL.md).
COLLAPSE_TERMS: tuple[str, ...] = ("raw_mean", "raw_std", "raw_max", "attn_mean", "attn_std", "amap_frac",
                                   "recon", "kl", "adv_g", "d_real_prob", "d_fake_prob")


def _per_image(t: Tensor) -> Tensor:
    return t.flatten(1).mean(1)


def _masked_mean(per_image: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over the images selected by ``mask`` (all when None); 0 (still in the graph) when none is selected."""
    if mask is None:
        return per_image.mean()
    w = mask.to(per_image.dtype)
    return (per_image * w).sum() / w.sum().clamp_min(1.0)


def reconstruction_bce(x: Tensor, recon_logits: Tensor) -> Tensor:
    """Eq. 1 per image: BCE between input and reconstruction, mean over pixels and channels, (B,).

    Args:
        x: input in [0, 1]. recon_logits: the decoder's logits (``AVAGAOutput.recon_logits``): BCE with logits in
        float32, equal to
            the BCE of ``sigmoid(recon_logits)`` without its saturation.
    """
    return _per_image(F.binary_cross_entropy_with_logits(recon_logits.float(), x.float(), reduction="none"))


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) per image, mean over latent values (PN 5), (B,)."""
    mu, logvar = mu.float(), logvar.float()
    return _per_image(0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar))


def generator_adversarial(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator term -log D(x_hat) per image from the patch logits, mean over patches (PN 5-6), (B,)."""
    logits = fake_logits.float()
    return _per_image(F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none"))


def attention_loss(a: Tensor) -> Tensor:
    """Eq. 3 per image: mean over pixels of 1 - A, (B,)."""
    return _per_image(1.0 - a)


def size_barrier(z: Tensor, t: float) -> Tensor:
    """Extended log-barrier psi_t(z) of the constraint z <= 0 (Kervadec et al.), element-wise.

    ``-(1/t) log(-z)`` for ``z <= -1/t^2``, else the tangent line ``t z - (1/t) log(1/t^2) + 1/t`` (defined for
    every z, so an infeasible start still gets a finite loss and gradient t). Continuous with a continuous slope at
    ``z = -1/t^2``; inside the constraint its slope is 1/(t |z|), small once the constraint holds with a margin.
    """
    edge = -1.0 / t**2
    inside = -torch.log((-z).clamp_min(1.0 / t**2)) / t  # clamp: the log is only evaluated where it is used
    outside = t * z - torch.log(torch.tensor(1.0 / t**2, dtype=z.dtype, device=z.device)) / t + 1.0 / t
    return torch.where(z < edge, inside, outside)  # equal values at the edge; the line keeps its slope t there


def normal_attention_term(a: Tensor, loss_cfg: LossConfig) -> Tensor:
    """The attention term of a normal image per image, (B,): eq. 3's mean(1 - A) or the size constraint's barrier.

    ``literal``: mean over pixels of 1 - A. ``size_barrier``: psi_t((1 - p) - mean(A)), i.e. the constraint
    mean(A) >= 1 - p (``loss.size_p``, ``loss.barrier_t``).
    """
    if loss_cfg.attention_constraint == "literal":
        return attention_loss(a)
    if loss_cfg.attention_constraint == "size_barrier":
        return size_barrier((1.0 - loss_cfg.size_p) - _per_image(a), loss_cfg.barrier_t)
    raise ValueError(f"loss.attention_constraint '{loss_cfg.attention_constraint}' unknown; "
                     "choose literal or size_barrier")


def collapse_diagnostics(a: Tensor, raw: Tensor) -> dict[str, Tensor]:
    """Detached statistics of a batch's map (no host sync): raw Grad-CAM mean/std/max, A mean/std, frac(1 - A > 0.5)."""
    a, raw = a.detach(), raw.detach()
    return {
        "raw_mean": raw.mean(),
        "raw_std": raw.std(),
        "raw_max": raw.amax(),
        "attn_mean": a.mean(),
        "attn_std": a.std(),
        "amap_frac": ((1.0 - a) > 0.5).float().mean(),
    }


def sgb_selection(logits: Tensor, labels: Tensor, sgb: bool) -> Tensor:
    """Images that receive L_a (PN 3): normal label and (with SGB) predicted normal. Boolean (B,)."""
    normal = labels == 0
    if not sgb:
        return normal
    pred = logits.detach().argmax(dim=1)
    return normal & (pred == 0)


def weak_attention_loss(
    a_normal: Tensor, a_anomalous: Tensor, selected: Tensor, loss_cfg: LossConfig | None = None
) -> Tensor:
    """L_a (PN 3): mean over the batch of [mean(1 - A^{c_n}) + mean(A^{c_a})] on selected images, 0 elsewhere.

    With ``loss_cfg.attention_constraint="size_barrier"`` the first half is the size barrier
    (:func:`normal_attention_term`); None = the literal term.
    """
    normal_term = attention_loss(a_normal) if loss_cfg is None else normal_attention_term(a_normal, loss_cfg)
    per_image = normal_term + _per_image(a_anomalous)
    return (per_image * selected.to(per_image.dtype)).mean()


def generator_objective(
    model: nn.Module,
    disc: nn.Module | None,
    x: Tensor,
    labels: Tensor | None,
    loss_cfg: LossConfig,
    model_cfg: ModelConfig,
    setting: str,
) -> tuple[Tensor, dict[str, Tensor], AVAGAOutput]:
    """Forward pass, Grad-CAM and every generator-side term of eq. 4 (unsupervised) or eq. 6 (weak).

    The discriminator's parameters receive gradients from the adversarial term (it is not frozen, which DDP
    dislikes); the caller zeroes the discriminator's gradients before its own step (as the trainer does).

    Args:
        model: ``AVAGA`` (wrappers accepted), in training mode. disc: the ``Discriminator``; may be None only when no
        adversarial term is used (weak, adversarial_recon off). x: images (B, 3, S, S) in [0, 1]. labels: (B,) int64, 0
        normal / 1 anomalous; required in the weak setting, ignored (all normal) otherwise. loss_cfg: weights and
        ablation switches. model_cfg: Grad-CAM choices. setting: "unsupervised" or "weak".

    Returns:
        (total loss tensor, dict of detached float32 0-d tensors for logging incl. "total", model output).
    """
    if setting not in ("unsupervised", "weak"):
        raise ValueError(f"setting '{setting}' unknown; choose unsupervised or weak")
    use_adv_recon = loss_cfg.adversarial_recon or setting == "unsupervised"
    if use_adv_recon and loss_cfg.w_adv != 0 and disc is None:
        raise ValueError("generator_objective needs the discriminator for the adversarial term (w_adv != 0)")
    out = model(x)
    size = x.shape[-1]
    need_adv = use_adv_recon and disc is not None and loss_cfg.w_adv != 0
    fake_logits = disc(out.recon, logits=True) if need_adv else None  # under the caller's autocast, if any
    logs: dict[str, Tensor] = {}
    with full_precision(x.device):
        if setting == "unsupervised":
            total, logs = _unsupervised_terms(model, fake_logits, x, out, loss_cfg, model_cfg, size)
        else:
            if labels is None:
                raise ValueError("setting=weak needs the image labels (0 normal / 1 anomalous)")
            if out.logits is None:
                raise ValueError("setting=weak needs a model with the classifier head (build_model(..., 'weak'))")
            total, logs = _weak_terms(model, fake_logits, x, labels.to(x.device), out, loss_cfg, model_cfg, size)
    logs["total"] = total
    return total, _detached(logs), out


def _detached(logs: dict[str, Tensor]) -> dict[str, Tensor]:
    """The logged terms as detached float32 0-d tensors, still on the device (no host sync)."""
    return {k: v.detach().float().reshape(()) for k, v in logs.items()}


def _adv_recon_terms(
    fake_logits: Tensor | None, x: Tensor, out: AVAGAOutput, loss_cfg: LossConfig, normal: Tensor | None
) -> tuple[Tensor, dict[str, Tensor]]:
    if out.recon_logits is None:
        raise ValueError("generator_objective needs the decoder's logits (AVAGAOutput.recon_logits) for eq. 1")
    l_r = _masked_mean(reconstruction_bce(x, out.recon_logits), normal)
    l_kl = _masked_mean(kl_divergence(out.mu, out.logvar), normal)
    if fake_logits is not None:
        l_adv = _masked_mean(generator_adversarial(fake_logits), normal)
    else:
        l_adv = torch.zeros((), device=x.device)
    total = loss_cfg.w_r * l_r + loss_cfg.w_kl * l_kl + loss_cfg.w_adv * l_adv
    return total, {"recon": l_r, "kl": l_kl, "adv_g": l_adv}


def _unsupervised_terms(
    model: nn.Module,
    fake_logits: Tensor | None,
    x: Tensor,
    out: AVAGAOutput,
    loss_cfg: LossConfig,
    model_cfg: ModelConfig,
    size: int,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 4: w_r L_R + w_kl KL + w_adv L_adv + w_attn L_attn."""
    total, logs = _adv_recon_terms(fake_logits, x, out, loss_cfg, None)
    # without the attention loss, A is logged only (the "w/o attention" ablation still shows how A behaves, PN 2)
    with contextlib.nullcontext() if loss_cfg.attention_loss else torch.no_grad():
        a, raw = gradcam_maps(model, out, "latent", model_cfg, size)
        l_attn = normal_attention_term(a, loss_cfg).mean()
    if loss_cfg.attention_loss:
        total = total + loss_cfg.w_attn * l_attn
    logs["attn"] = l_attn
    logs |= collapse_diagnostics(a, raw)
    return total, logs


def _weak_terms(
    model: nn.Module,
    fake_logits: Tensor | None,
    x: Tensor,
    labels: Tensor,
    out: AVAGAOutput,
    loss_cfg: LossConfig,
    model_cfg: ModelConfig,
    size: int,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 6 with SGB: w_r L_R + w_kl KL + w_adv L_adv (normal images) + w_c L_bce + w_a L_a."""
    assert out.logits is not None
    normal = labels == 0
    zero = torch.zeros((), device=x.device)
    if loss_cfg.adversarial_recon:
        total, logs = _adv_recon_terms(fake_logits, x, out, loss_cfg, normal)
    else:  # "w/o adv. recons" ablation: classifier + L_a only
        total, logs = zero, {"recon": zero, "kl": zero, "adv_g": zero}
    logits = out.logits.float()
    l_c = F.cross_entropy(logits, labels.long())  # 2-class softmax cross-entropy = BCE of the softmax (PN 4)
    total = total + loss_cfg.w_c * l_c
    selected = sgb_selection(logits, labels, loss_cfg.sgb)
    grad_ctx = contextlib.nullcontext() if loss_cfg.attention_loss else torch.no_grad()
    with grad_ctx:
        a_n, raw_n = gradcam_maps(model, out, "normal", model_cfg, size)
        a_a, _ = gradcam_maps(model, out, "anomalous", model_cfg, size)
        l_a = weak_attention_loss(a_n, a_a, selected, loss_cfg)
    if loss_cfg.attention_loss:
        total = total + loss_cfg.w_a * l_a
    logs |= {
        "cls": l_c,
        "cls_acc": (logits.detach().argmax(1) == labels).float().mean(),
        "attn_a": l_a,
        "sgb_selected": selected.float().mean(),  # fraction of the batch that receives L_a
        "attn_anom_mean": a_a.detach().mean(),
    }
    logs |= collapse_diagnostics(a_n, raw_n)  # of the normal-class map A^{c_n} (PN 2)
    return total, logs


def discriminator_objective(disc: nn.Module, x: Tensor, recon: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Discriminator side of eq. 2: BCE(D(x), real) + BCE(D(x_hat), fake), each a mean over patches and images.

    ``recon`` is detached here (the caller may pass it detached already): no gradient reaches the generator.

    Returns:
        (loss, {"d_real", "d_fake", "d_real_prob", "d_fake_prob", "total"} as detached 0-d tensors, no host sync).
    """
    real_logits = disc(x, logits=True)
    fake_logits = disc(recon.detach(), logits=True)
    with full_precision(x.device):
        real_logits, fake_logits = real_logits.float(), fake_logits.float()
        l_real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        l_fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        total = l_real + l_fake
        logs = {
            "d_real": l_real,
            "d_fake": l_fake,
            "d_real_prob": torch.sigmoid(real_logits.detach()).mean(),
            "d_fake_prob": torch.sigmoid(fake_logits.detach()).mean(),
            "total": total,
        }
    return total, _detached(logs)
