"""The one interface every model answers (issue 25): build, one training step, inference of a batch.

The trainer, evaluation, the threshold study and predict call these and never branch on the method's name; a new
method is a new folder under ``avaga_lib/models/`` with a :class:`Method` subclass and one line in
:mod:`avaga_lib.models.registry`. The helpers below are the steps' shared mechanics (one Adam update; a module
that passes gradients through without collecting them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from avaga_lib.config import RunConfig


@dataclass
class BatchInference:
    """One batch as a method maps it (float32, on the batch's device).

    Attributes:
        recon: reconstruction (B, 3, H, W).
        score_raw: raw image score (B,) before any label-free calibration.
        raw_map: anomaly map (B, H, W) before calibration (AVAGA: the attention map as inferred).
        prob: (B,) the classifier's probability of the anomalous class where the method classifies, else None.
    """

    recon: Tensor
    score_raw: Tensor
    raw_map: Tensor
    prob: Tensor | None


class StepNets(Protocol):
    """What a training step updates (:class:`avaga_lib.training.step.Nets`)."""

    model: nn.Module
    opt_g: torch.optim.Optimizer
    disc_loss: nn.Module | None
    opt_d: torch.optim.Optimizer | None

    @property
    def disc(self) -> nn.Module | None:
        """The bare discriminator, or None."""


class Method(ABC):
    """A method of the study (``RunConfig.method``): what the rest of the library asks of it.

    Attributes:
        name: the ``method`` value in configs (``avaga``, ``ae_l2``, ``ae_ssim``).
        has_attention: its map is a Grad-CAM attention map: the paper's literal rule (the map itself at 0.5) and
            the attention normalizations apply, and the map lives on the latent grid.
        map_upper: the largest value its anomaly map can take (top of its pixel bins).
    """

    name: str
    has_attention: bool
    map_upper: float

    @abstractmethod
    def build(self, cfg: RunConfig) -> tuple[nn.Module, nn.Module | None, list[str]]:
        """The run's networks on the CPU: ``(model, discriminator or None, notes)``; notes name fallbacks."""

    @abstractmethod
    def train_step(self, cfg: RunConfig, nets: StepNets, x: Tensor, labels: Tensor, amp: torch.dtype | None,
                   loss_scale: float) -> dict[str, Any]:
        """One optimisation step on a batch; its loss terms as detached 0-d tensors."""

    @abstractmethod
    def infer(self, cfg: RunConfig, model: nn.Module, x: Tensor, amp: torch.dtype | None) -> BatchInference:
        """Reconstruction, raw image score and raw anomaly map of a batch (no gradient w.r.t. parameters)."""

    @abstractmethod
    def native_side(self, image_size: int) -> int:
        """The side of the grid the map is computed on before upsampling (what caps its IoU)."""

    def check(self, cfg: RunConfig) -> list[str]:
        """What in ``cfg`` this method cannot run (one sentence each, naming the key and the way out); [] = none."""
        return []

    def classifies(self, setting: str) -> bool:
        """Whether a classifier's probability decides the image (and gates the map: PN 4) in this setting."""
        return False


def update(opt: torch.optim.Optimizer, loss: Tensor) -> None:
    """One optimiser step on ``loss``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


@contextmanager
def no_weight_grads(module: nn.Module | None) -> Iterator[None]:
    """Parameters of ``module`` collect no gradient inside (gradients still flow through it to its input)."""
    params = [] if module is None else [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
