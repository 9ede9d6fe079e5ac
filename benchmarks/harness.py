"""What the training benchmarks run: one training step through the trainer's own step function, on random
in-memory data of the trainer's layout.

Speed does not depend on pixel values or on the initial weights, so the harness needs no dataset on disk and no
pretrained download. Nothing here re-implements the step: :func:`run_trainer_step` is the single call into the
trainer, so a change of the trainer's step is measured as soon as it lands. This module imports only what a
training step needs (the peak-memory probe runs it in a fresh process whose baseline memory counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from avaga_lib.config import MIN_LATENT_GRID, RunConfig, make_config
from avaga_lib.data import augment_batch
from avaga_lib.distributed import SINGLE, average_terms
from avaga_lib.runtime import amp_dtype
from avaga_lib.step import Nets, make_nets, train_step
from avaga_lib.train import build_networks


def variant_config(size: int, setting: str, amp: str, attention: bool = True) -> RunConfig:
    """The paper profile at ``size`` px in ``setting`` with ``train.amp=amp`` (``attention``: L_attn on or off)."""
    # the paper profile refuses latent grids under 4x4 (it judges localization); the quick bench's small sides only
    # time the step, so they take the smoke profile's settings (the networks and the step are the same)
    profile = "paper" if size // 32 >= MIN_LATENT_GRID else "smoke"
    return make_config(
        profile,
        {"data.image_size": size, "train.setting": setting, "train.amp": amp, "loss.attention_loss": attention},
    )


def run_trainer_step(
    cfg: RunConfig, nets: Nets, x: Tensor, labels: Tensor, amp: torch.dtype | None
) -> dict[str, float]:
    """The trainer's optimisation step on one batch (GAN step, G then D, or the AE step); returns the loss terms.

    The one place the benchmarks call into the trainer (no copy of the step anywhere); the terms become floats
    once per step, as in the trainer's loop.
    """
    return average_terms(train_step(cfg, nets, x, labels, amp), SINGLE)


def synthetic_u8(n: int, side: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Random uint8 images / masks / labels of the trainer's in-memory layout.

    A quarter of the labels are anomalous (weak setting: SGB and the classifier paths run); masks mark a square
    on those.
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)
    masks = torch.zeros(n, 1, side, side, dtype=torch.uint8)
    labels = torch.zeros(n, dtype=torch.int64)
    labels[: max(1, n // 4)] = 1
    masks[labels == 1, :, side // 4 : side // 2, side // 4 : side // 2] = 1
    return images, masks, labels


@dataclass
class TrainHarness:
    """One training step of the trainer, split into a data part and a compute part (to measure the data wait).

    The data part is the trainer's data path: index a batch of the uint8 tensor that already sits on the device,
    then ``augment_batch`` (crop + rotation) on the device. The compute part is :func:`run_trainer_step`.

    Attributes:
        cfg: run config.
        device: training device.
        model: AVAGA generator (or AE baseline).
        disc: discriminator (None for the baselines).
        opt_g: Adam of the generator.
        opt_d: Adam of the discriminator (None for the baselines).
        images_u8: uint8 (N, 3, T, T) training tensors on the device (T = round(S * resize ratio)).
        masks_u8: uint8 (N, 1, 1, 1) zeros on the device (the trainer never trains on masks).
        labels: int64 (N,) on the device.
        batch_size: images per step.
        amp: autocast dtype or None.
        channels_last: whether inputs (and the networks) use the channels_last memory format.
    """

    cfg: RunConfig
    device: torch.device
    model: nn.Module
    disc: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    images_u8: Tensor
    masks_u8: Tensor
    labels: Tensor
    batch_size: int
    amp: torch.dtype | None = None
    channels_last: bool = False
    nets: Nets | None = None  # built once on first use (make_nets), as the trainer does before its loop
    _gen: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    _aug_gen: torch.Generator | None = None
    _last: tuple[Tensor, Tensor] | None = None

    def data_step(self) -> tuple[Tensor, Tensor]:
        """Index a random batch on the device and augment it there (the trainer's data path).

        Returns:
            (x, labels): float images in [0, 1] (B, 3, S, S) and int64 labels, on the device.
        """
        if self._aug_gen is None:
            self._aug_gen = torch.Generator(device=self.device).manual_seed(1)
        idx = torch.randint(0, self.images_u8.shape[0], (self.batch_size,), generator=self._gen)
        idx = idx.to(self.device, non_blocking=self.device.type == "cuda")
        x, _ = augment_batch(
            self.images_u8[idx], self.masks_u8[idx], self.cfg.data.image_size, self.cfg.data.rotation_deg,
            generator=self._aug_gen,
        )
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self._last = (x, self.labels[idx])
        return self._last

    def compute_step(self, batch: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
        """The trainer's optimisation step on a batch; returns the loss terms.

        Args:
            batch: output of :meth:`data_step`; default the last one (so compute can be timed alone).
        """
        if batch is None:
            batch = self._last if self._last is not None else self.data_step()
        x, labels = batch
        if self.nets is None:
            self.nets = make_nets(self.model, self.disc, self.opt_g, self.opt_d)
        return run_trainer_step(self.cfg, self.nets, x, labels, self.amp)

    def step(self) -> dict[str, float]:
        """Data step then compute step: one full training step."""
        return self.compute_step(self.data_step())


def build_train_harness(
    cfg: RunConfig, device: torch.device | str, batch_size: int, n_images: int = 0, channels_last: bool | None = None
) -> TrainHarness:
    """Networks, Adam and in-memory uint8 data of ``cfg`` on ``device``, ready to step (random init, no download).

    Args:
        cfg: run config; ``data.image_size``, ``train.setting``, ``train.amp``, ``method`` are used.
        device: training device.
        batch_size: images per step.
        n_images: size of the in-memory set (default 4 batches).
        channels_last: memory format of networks and inputs; None = the trainer's rule (``train.channels_last``
            on CUDA only); True measures it on CPU too.
    """
    device = torch.device(device)
    cfg = replace(cfg, model=replace(cfg.model, pretrained="none"))  # speed does not depend on the init
    model, disc, _ = build_networks(cfg)
    if channels_last is None:
        channels_last = bool(cfg.train.channels_last) and device.type == "cuda"
    fmt = torch.channels_last if channels_last else torch.preserve_format
    model = model.to(device=device, memory_format=fmt).train()
    opt_g = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, betas=cfg.train.betas)
    opt_d = None
    if disc is not None:
        disc = disc.to(device=device, memory_format=fmt).train()
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.train.lr, betas=cfg.train.betas)
    side = round(cfg.data.image_size * cfg.data.train_resize_ratio)
    images, _, labels = synthetic_u8(n_images or 4 * batch_size, side)
    return TrainHarness(
        cfg=cfg,
        device=device,
        model=model,
        disc=disc,
        opt_g=opt_g,
        opt_d=opt_d,
        images_u8=images.to(device),
        masks_u8=torch.zeros((images.shape[0], 1, 1, 1), dtype=torch.uint8, device=device),
        labels=labels.to(device),
        batch_size=batch_size,
        amp=amp_dtype(cfg.train.amp, device),
        channels_last=channels_last,
    )
