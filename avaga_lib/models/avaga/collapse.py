"""A toy of the attention's collapse (issue 13): optimise eq. 3's attention term alone on a tiny encoder.

The toy keeps exactly the structure that makes AVAGA's map saturate: features ``F = ReLU(W_e x + b_e)`` (K channels),
a 1x1 mu head ``mu = W_mu F + b_mu`` and the Grad-CAM target ``y = sum(mu)``. Then ``dy/dF_k = sum_c W_mu[c, k]`` at
every position, so the channel weights ``alpha_k = sum_c W_mu[c, k]`` are the same for every image, and the raw map
``sum_k alpha_k F_k`` is one fixed linear projection of the features. Minimising mean(1 - sigmoid(raw)) is then
solved by scaling that projection up (b_e and W_mu grow): the sigmoid saturates and A -> 1 on every pixel, whatever
the image. :func:`toy_collapse` runs that optimisation for one normalisation / constraint and records the trajectory,
so notebook 06 and the tests can show which remedies still drift towards A = 1 (docs/PROTOCOL.md, "The collapse").
"""

from __future__ import annotations

import torch
from torch import Tensor

from avaga_lib.config import LossConfig
from avaga_lib.models.avaga.attention import normalize_attention
from avaga_lib.models.avaga.losses import normal_attention_term

TOY_COLUMNS = ("step", "attn_mean", "amap_frac", "raw_mean", "raw_max")


def _raw_map(x: Tensor, w_e: Tensor, b_e: Tensor, w_mu: Tensor) -> Tensor:
    """Raw Grad-CAM of the toy: sum_k alpha_k ReLU(W_e x + b_e)_k with alpha_k = sum_c W_mu[c, k], (B, 1, h, w)."""
    feats = torch.relu(torch.einsum("kc,bchw->bkhw", w_e, x) + b_e.view(1, -1, 1, 1))
    alpha = w_mu.sum(dim=0)  # dy/dF_k for y = sum(mu): no image in it
    return torch.einsum("k,bkhw->bhw", alpha, feats).unsqueeze(1)


def toy_collapse(
    norm: str = "sigmoid",
    constraint: str = "literal",
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
    record_every: int = 10,
    anchor: float = 0.0,
) -> dict[str, list[float]]:
    """Minimise the attention term alone (eq. 3, or the size barrier) of the toy encoder with Adam.

    Args:
        norm: ``ModelConfig.attention_norm`` (``sigmoid``, ``max``, ``gain``, ...; gain with w = 10, s = 0.5).
        constraint: ``LossConfig.attention_constraint`` (``literal`` or ``size_barrier`` with p = 0.2, t = 25).
        steps: Adam steps on one fixed batch of 8 random 3 x 8 x 8 "images". lr: Adam's learning rate.
        seed: torch seed of the images and the initial weights. record_every: steps between recorded rows (the last step
        is always recorded). anchor: weight of an L2 penalty on the weights, a stand-in for the other terms of eq. 4
        that resist the
            attention term. Without it Adam follows the attention term's sign alone, so a weaker slope (the barrier
            inside its constraint) changes the speed of the drift, not its end.

    Returns:
        Columns :data:`TOY_COLUMNS`: mean of A, fraction of pixels with 1 - A > 0.5, mean and max of the raw map.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(8, 3, 8, 8, generator=gen)
    w_e = (0.3 * torch.randn(16, 3, generator=gen)).requires_grad_(True)
    b_e = torch.zeros(16).requires_grad_(True)
    w_mu = (0.1 * torch.randn(4, 16, generator=gen)).requires_grad_(True)
    opt = torch.optim.Adam([w_e, b_e, w_mu], lr=lr)
    loss_cfg = LossConfig(attention_constraint=constraint)
    rows: dict[str, list[float]] = {c: [] for c in TOY_COLUMNS}
    for step in range(steps + 1):
        raw = _raw_map(x, w_e, b_e, w_mu)
        a = normalize_attention(raw, norm)
        if step % record_every == 0 or step == steps:
            stats = (a.mean(), ((1 - a) > 0.5).float().mean(), raw.mean(), raw.max())
            for key, value in zip(TOY_COLUMNS, (step, *(float(v.detach()) for v in stats))):
                rows[key].append(float(value))
        if step < steps:
            opt.zero_grad()
            penalty = anchor * sum(p.pow(2).sum() for p in (w_e, b_e, w_mu))
            (normal_attention_term(a, loss_cfg).mean() + penalty).backward()
            opt.step()
    return rows
