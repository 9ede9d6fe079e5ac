"""The training step: what one batch does to the networks (shared by the trainer and the benchmarks).

:func:`train_step` hands the batch to the run's method (:meth:`avaga_lib.models.interface.Method.train_step`: the
baselines' AE step, or AVAGA's GAN step: generator objective, eq. 4 / 6, then discriminator objective, eq. 2).
:func:`make_nets` bundles the networks and optimisers it updates; under torchrun it wraps the generator in one
``DistributedDataParallel`` and the discriminator's objective (:class:`DiscriminatorLoss`) in another.

Loss terms stay detached 0-d tensors on the device (no host sync here or in :mod:`avaga_lib.models.avaga.losses`: a
``.item()`` between forward and backward stops the CPU from queueing the backward while the GPU runs the forward,
issue 15 row 9); :func:`accumulate_terms` sums them on the device (the trainer's epoch and the bench's timed window)
and the caller converts and checks the sums once.

Optimisers (:func:`make_adam`): on CUDA, Adam's fused kernel (:func:`adam_kwargs`); elsewhere torch's default, so
CPU results stay byte-identical to those committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from avaga_lib.config import RunConfig, TrainConfig
from avaga_lib.models.avaga import losses
from avaga_lib.models.avaga.model import AVAGAOutput
from avaga_lib.models.registry import method_of
from avaga_lib.training import distributed as ddp

# DDP finds the tensors of a module's output through pytree: registered, the generator's output dataclass is seen
# inside, so an output the loss leaves unused (the "w/o adv. recons" ablation's reconstruction) gets an undefined
# gradient and DDP's reducer (find_unused_parameters) stops waiting for the decoder's gradients.
with suppress(ValueError):  # already registered (a re-import)
    torch.export.register_dataclass(AVAGAOutput, serialized_type_name="avaga_lib.models.avaga.model.AVAGAOutput")



# The optimiser-state keys that choose Adam's update kernel; they follow the device a run trains on, not the file.
_KERNEL_KEYS = ("fused", "foreach")


def adam_kwargs(device_type: str) -> dict[str, bool]:
    """Adam's update-kernel choice for a training device type (``"cuda"``, ``"cpu"``, ``"mps"``).

    CUDA: ``fused=True``, the whole update of a parameter group in one kernel per dtype / device group instead of
    the multi-tensor (foreach) default's chain of kernels (moments, bias corrections, square root, division, each
    its own launch); a GAN step runs two optimisers, and a step at batch 24 leaves the GPU idle between launches
    (docs/PERFORMANCE.md). Elsewhere: torch's default (the per-parameter loop on CPU). torch 2.14 has a fused CPU
    Adam as well, but it rounds differently from that loop (parameters differ in the last bits after a few steps),
    which would move every committed CPU result; MPS is not the study's target and stays as it was too.
    """
    return {"fused": True} if device_type == "cuda" else {}


def _keep_update_kernel(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any] | None:
    """Load-state pre-hook: the saved state keeps this optimiser's kernel choice, not the one it was saved with.

    ``Optimizer.load_state_dict`` replaces the param groups by the saved ones, ``fused`` / ``foreach`` included, and
    places each ``step`` counter by them (fused: float32 on the parameter's device; otherwise left as loaded, on the
    CPU). A run resumed on another device type (allowed: the resume hash ignores ``train.device``) would otherwise
    step a CPU run with the CUDA fused kernel, or a CUDA run with the kernel of an older checkpoint.
    """
    saved = state_dict.get("param_groups", [])
    if len(saved) != len(opt.param_groups):
        return None  # load_state_dict itself refuses the mismatch, with its own message
    own = [{k: group.get(k) for k in _KERNEL_KEYS} for group in opt.param_groups]
    return {**state_dict, "param_groups": [{**g, **o} for g, o in zip(saved, own)]}


def make_adam(params: Iterable[nn.Parameter], train: TrainConfig, device: torch.device | str) -> torch.optim.Adam:
    """Adam of one network (generator or discriminator, PN 5) with ``train.lr`` / ``train.betas`` and the update
    kernel of ``device`` (:func:`adam_kwargs`); a state loaded later keeps that kernel (:func:`_keep_update_kernel`).
    """
    opt = torch.optim.Adam(params, lr=train.lr, betas=train.betas, **adam_kwargs(torch.device(device).type))
    opt.register_load_state_dict_pre_hook(_keep_update_kernel)
    return opt


def accumulate_terms(sums: Tensor | None, terms: Mapping[str, Any], device: torch.device) -> Tensor:
    """``sums`` plus one step's loss terms (in ``terms``' order), on ``device``: no host sync.

    float64 (float32 on MPS, which has none): a sum over an epoch's steps rounds far less than a float32 one. The
    trainer sums an epoch with it, the bench a timed window; each converts once at the end.
    """
    dtype = torch.float32 if device.type == "mps" else torch.float64
    step = torch.stack([torch.as_tensor(v, device=device).detach().to(dtype).reshape(()) for v in terms.values()])
    return step if sums is None else sums + step


class DiscriminatorLoss(nn.Module):
    """The discriminator's objective (eq. 2: real then fake) as one module forward.

    Why a module: under DDP the wrapper must see one forward per backward. Concatenating real and fake images
    into one discriminator forward would do that too, but the discriminator has BatchNorm (Table 9), whose batch
    statistics would then mix real and fake images and change the single-process numbers; here the two passes stay
    separate, inside one wrapped forward.
    """

    def __init__(self, disc: nn.Module) -> None:
        super().__init__()
        self.disc = disc

    def forward(self, x: Tensor, recon: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """``losses.discriminator_objective`` on real ``x`` and (detached) reconstructions ``recon``."""
        return losses.discriminator_objective(self.disc, x, recon)


@dataclass
class Nets:
    """What one step updates: the networks (DDP-wrapped under torchrun) and their Adam optimisers (PN 5).

    Attributes:
        model: the generator (AVAGA) or the autoencoder (baselines), or its DDP wrapper. opt_g: its optimiser.
        disc_loss: :class:`DiscriminatorLoss` of the discriminator, or its DDP wrapper; None for the baselines.
        opt_d: the discriminator's optimiser (None for the baselines).
    """

    model: nn.Module
    opt_g: torch.optim.Optimizer
    disc_loss: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None

    @property
    def disc(self) -> nn.Module | None:
        """The bare discriminator (what the generator's adversarial term calls, outside any DDP wrapper)."""
        return None if self.disc_loss is None else ddp.unwrap(self.disc_loss).disc


def make_nets(
    model: nn.Module,
    disc: nn.Module | None,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer | None,
    ctx: ddp.DistContext = ddp.SINGLE,
) -> Nets:
    """Bundle networks and optimisers for :func:`train_step`; under torchrun wrap each side in DDP."""
    # find_unused: the ablations leave generator parameters without gradient (w/o adv. recons: the decoder)
    model = ddp.wrap(model, ctx, find_unused_parameters=True)
    disc_loss = None if disc is None else ddp.wrap(DiscriminatorLoss(disc), ctx)
    return Nets(model, opt_g, disc_loss, opt_d)




def train_step(
    cfg: RunConfig, nets: Nets, x: Tensor, labels: Tensor, amp: torch.dtype | None = None, loss_scale: float = 1.0
) -> dict[str, Any]:
    """One optimisation step on a batch; returns its loss terms as detached 0-d tensors (not converted, not checked).

    Baselines: the reconstruction loss, one Adam step. AVAGA: the generator objective (eq. 4 or 6, with Grad-CAM)
    and its Adam step, then the discriminator objective (eq. 2) and its step when ``loss.adversarial_recon``.

    Args:
        cfg: run config (``method``, ``loss``, ``model``, ``train.setting``). nets: from :func:`make_nets`.
        x: augmented images (B, 3, S, S) in [0, 1], on the training device. labels: (B,) 0 normal / 1 anomalous (used in
        the weak setting). amp: autocast dtype (:func:`avaga_lib.runtime.amp_dtype`), None = float32.
        loss_scale: multiplies each loss before its backward; under DDP ``share * world_size`` (see
            :mod:`avaga_lib.training.distributed`), 1.0 alone.
    """
    return method_of(cfg.method).train_step(cfg, nets, x, labels, amp, loss_scale)


__all__ = ["DiscriminatorLoss", "Nets", "accumulate_terms", "adam_kwargs", "make_adam", "make_nets",
           "train_step"]
