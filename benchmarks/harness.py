"""What the training benchmarks run: one training step through the trainer's own step function, on random
in-memory data of the trainer's layout.

Speed does not depend on pixel values or on the initial weights, so the harness needs no dataset on disk and no
pretrained download. Nothing here re-implements the step: :func:`run_trainer_step` is the single call into the
trainer, so a change of the trainer's step is measured as soon as it lands. This module imports only what a
training step needs (the peak-memory probe runs it in a fresh process whose baseline memory counts).

Host syncs: like the trainer, a harness step reads nothing back to the host. The loss terms are summed on the device
(:func:`avaga_lib.training.step.accumulate_terms`, the trainer's own accumulation) and become floats once, when
:meth:`TrainHarness.mean_terms` is called after a timed window; the window's end synchronises the device (the
Timer, or ``runtime.synchronize``). A float conversion per step would make the CPU wait for every step's kernels
before it queues the next step's: a sync the trainer does not have, which understated GPU throughput.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from avaga_lib.config import MIN_LATENT_GRID, RunConfig, make_config
from avaga_lib.data import augment_batch
from avaga_lib.models.networks import build_networks
from avaga_lib.runtime import amp_dtype
from avaga_lib.training.distributed import SINGLE, average_terms
from avaga_lib.training.step import Nets, accumulate_terms, make_adam, make_nets, train_step


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
) -> dict[str, Tensor]:
    """The trainer's optimisation step on one batch (GAN step, G then D, or the AE step); returns the loss terms.

    The one place the benchmarks call into the trainer (no copy of the step anywhere). The terms are the step's
    detached 0-d tensors on the device, not converted (the trainer converts once per epoch, not per step).
    """
    return train_step(cfg, nets, x, labels, amp)


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
    _names: list[str] = field(default_factory=list)
    _sums: Tensor | None = None  # loss terms summed on the device since the last mean_terms (no per-step sync)
    _steps: int = 0
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

    def compute_step(self, batch: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """The trainer's optimisation step on a batch, its loss terms added to the window's sums on the device.

        Args:
            batch: output of :meth:`data_step`; default the last one (so compute can be timed alone).

        Returns:
            The step's loss terms as detached 0-d tensors on the device (reading one is a host sync).
        """
        if batch is None:
            batch = self._last if self._last is not None else self.data_step()
        x, labels = batch
        if self.nets is None:
            self.nets = make_nets(self.model, self.disc, self.opt_g, self.opt_d)
        terms = run_trainer_step(self.cfg, self.nets, x, labels, self.amp)
        self._names = list(terms)
        self._sums = accumulate_terms(self._sums, terms, self.device)
        self._steps += 1
        return terms

    def step(self) -> dict[str, Tensor]:
        """Data step then compute step: one full training step."""
        return self.compute_step(self.data_step())

    def mean_terms(self) -> dict[str, float]:
        """The loss terms averaged over the steps since the last call, as floats: the window's one host transfer.

        Call it after a timed window (never inside one); it starts a new window. A NaN / inf in any step of the
        window makes that term's mean non-finite, as in the trainer's epoch means.

        Raises:
            RuntimeError: no step since the last call.
        """
        if self._sums is None:
            raise RuntimeError("TrainHarness.mean_terms: no training step since the last call")
        means = average_terms(dict(zip(self._names, self._sums / self._steps)), SINGLE)
        self._sums, self._steps = None, 0
        return means


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
    opt_g = make_adam(model.parameters(), cfg.train, device)  # the trainer's optimisers (fused Adam on CUDA)
    opt_d = None
    if disc is not None:
        disc = disc.to(device=device, memory_format=fmt).train()
        opt_d = make_adam(disc.parameters(), cfg.train, device)
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
