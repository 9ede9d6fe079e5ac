"""One trainer for AVAGA_u (eq. 4), AVAGA_w (eq. 6) and the AE baselines, read top to bottom:

1. set-up: device, seeds, the training images on the device, the networks, the optimisers, the resumption;
2. the step (:func:`avaga_lib.training.step.train_step`, re-exported here): the generator then the discriminator for
AVAGA,
   the AE step for the baselines;
3. the epoch loop, with the loss log and the checkpoints (:mod:`avaga_lib.training.checkpoint`).

Data path (issue 8): :class:`avaga_lib.data.AnomalyDataset` decodes every training image once into a uint8 tensor;
the whole tensor moves to the training device once, and each step indexes a batch and augments it *on the device*
(:func:`avaga_lib.data.augment_batch`, random crop + rotation, PROTOCOL_NOTES 13). No DataLoader workers.

Randomness: python / numpy / torch are seeded from ``train.seed``; batch order and augmentation draw from two
dedicated ``torch.Generator``s. Every rank's RNG states are saved in each checkpoint, so a run interrupted after
epoch k and resumed ends with the same weights as an uninterrupted run (tested on CPU, alone and with 2 ranks).

Data parallel (torchrun, :mod:`avaga_lib.training.distributed`): one ``DistributedDataParallel`` wrapper for the
generator and one for the discriminator's objective (real then fake inside one module forward, so its wrapper sees one
forward per backward, while BatchNorm keeps separate real / fake statistics as in one process); SyncBatchNorm on
CUDA; per-rank seeds for everything but the batch order.

GPU (issue 15): the loss terms stay on the device and become floats once per epoch; Adam runs its fused kernel
(:func:`avaga_lib.training.step.adam_kwargs`, CUDA only); checkpoints on CUDA are written at most every
``train.checkpoint_minutes`` (and after the last epoch); :func:`avaga_lib.runtime.configure_precision` sets TF32 as
the bench measures it.

Interruption: Ctrl-C writes the state of the last *completed* epoch and re-raises as :class:`TrainingInterrupted`
naming the checkpoint; ``train.resume`` continues from there. A non-finite loss term raises :class:`NonFiniteLossError`
naming the epoch and the term; the last good checkpoint on disk is left untouched.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from avaga_lib.config import RunConfig
from avaga_lib.data import AnomalyDataset, Splits, augment_batch, make_splits
from avaga_lib.io import save_torch, write_csv
from avaga_lib.models.networks import build_networks
from avaga_lib.run_folder import CHECKPOINT_NAME, LOSSES_NAME, load_checkpoint
from avaga_lib.runtime import (
    amp_dtype,
    configure_precision,
    configure_threads,
    resolve_device,
    seed_everything,
    seed_rngs,
)
from avaga_lib.training import distributed as ddp
from avaga_lib.training.checkpoint import (
    NonFiniteLossError,
    TrainingInterrupted,
    checkpoint_due,
    restore_rank_rng,
    resume_hash,
    rng_state,
    state_or_none,
)
from avaga_lib.training.step import (
    Nets,
    accumulate_terms,
    make_adam,
    make_nets,
    train_step,
)


@dataclass
class TrainResult:
    """What :func:`train_run` returns.

    Attributes:
        model: trained network (AVAGA or BergmannAE), in eval mode, on ``device``. disc: discriminator (AVAGA) or None
        (baselines). history: one row per epoch: ``epoch``, ``lr``, every loss term (epoch mean), ``time_s``.
        notes: fallbacks that happened in this run ("pretrained weights unavailable: random init", resumption, ...).
        wall_time_s: seconds spent in this call (not counting epochs done before a resume). device: device the run
        trained on. cfg: the run config. epochs_done: last completed epoch. resumed_from: epoch the run resumed from (0
        = fresh start). checkpoint: path of the last checkpoint written (None when checkpointing never happened).
    """

    model: nn.Module
    disc: nn.Module | None
    history: pd.DataFrame
    notes: list[str]
    wall_time_s: float
    device: str
    cfg: RunConfig
    epochs_done: int
    resumed_from: int = 0
    checkpoint: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- networks and batches


def epoch_batches(n_normal: int, n_weak: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """Index batches of one epoch: every normal image once; in the weak setting k anomalous images per batch.

    Balanced sampling (weak setting): each batch gets ``k = max(1, ceil(n_weak / n_batches))`` anomalous images
    drawn from concatenated random permutations of the weak images (with replacement across batches), so every
    anomalous image is seen at least once per epoch even when there are only one or two of them. Anomalous
    images carry indices ``n_normal .. n_normal + n_weak - 1``.

    Args:
        n_normal: number of normal training images. n_weak: number of weakly labelled anomalous images (0 in the
        unsupervised setting). batch_size: normal images per batch (near-equal split, no batch of 1 unless there is 1
        image). generator: CPU generator (its state is checkpointed).
    """
    if n_normal < 1:
        raise ValueError("no normal training image: check the dataset's train/good folder and the splits")
    perm = torch.randperm(n_normal, generator=generator)
    n_batches = max(1, math.ceil(n_normal / batch_size))
    chunks = list(torch.tensor_split(perm, n_batches))
    if n_weak == 0:
        return chunks
    k = max(1, math.ceil(n_weak / n_batches))
    need = k * n_batches
    seq = torch.cat([torch.randperm(n_weak, generator=generator) for _ in range(math.ceil(need / n_weak))])[:need]
    return [torch.cat([c, seq[i * k : (i + 1) * k] + n_normal]) for i, c in enumerate(chunks)]


# ---------------------------------------------------------------------------------------------------- set-up


@dataclass
class _Run:
    """Everything the epoch loop reads and updates (the trainer's state between set-up and the result)."""

    cfg: RunConfig
    ctx: ddp.DistContext
    device: torch.device
    amp: torch.dtype | None
    model: nn.Module
    disc: nn.Module | None
    images_u8: Tensor
    labels: Tensor
    n_normal: int
    n_weak: int
    generators: dict[str, torch.Generator]
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    scheds: list[torch.optim.lr_scheduler.LRScheduler]
    notes: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    nets: Nets | None = None
    last_saved: Path | None = None
    saved_epoch: int = 0
    saved_at: float = field(default_factory=time.monotonic)  # when the last checkpoint was written (or the start)
    pending: dict[str, Any] | None = None  # state of the last completed epoch while not yet on disk (Ctrl-C)

    @property
    def ckpt_path(self) -> Path:
        return Path(self.cfg.run_dir) / CHECKPOINT_NAME

    @property
    def channels_last(self) -> bool:
        return self.cfg.train.channels_last and self.device.type == "cuda"  # helps convs on tensor cores only


def _networks(
    cfg: RunConfig, ctx: ddp.DistContext, device: torch.device
) -> tuple[nn.Module, nn.Module | None, list[str]]:
    """The networks on ``device`` (channels-last on CUDA) and the notes of their construction and of the launch."""
    tc = cfg.train
    model, disc, notes = build_networks(cfg)
    if tc.nproc > 1 and not ctx.enabled:
        notes.append(f"train.nproc={tc.nproc} but not started by torchrun: trained in one process "
                     "(python -m avaga_lib.cli train relaunches itself under torchrun)")
    elif ctx.enabled and ctx.world_size != tc.nproc:
        notes.append(f"torchrun world size {ctx.world_size} differs from train.nproc={tc.nproc}: world size used")
    model, synced = ddp.use_sync_batchnorm(model, ctx)  # CUDA DDP: global-batch BatchNorm statistics (issue 15)
    if disc is not None:
        disc, _ = ddp.use_sync_batchnorm(disc, ctx)
    if ctx.enabled and not synced:
        notes.append(f"{ctx.backend}: BatchNorm statistics per rank (SyncBatchNorm needs CUDA)")
    mem_fmt = torch.channels_last if tc.channels_last and device.type == "cuda" else torch.preserve_format
    model.to(device, memory_format=mem_fmt)
    if disc is not None:
        disc.to(device, memory_format=mem_fmt)
    return model, disc, notes


def _training_images(cfg: RunConfig, splits: Splits, device: torch.device) -> tuple[Tensor, Tensor, int, int]:
    """The training images decoded once and moved to the device once (issue 8); weak images follow the normal ones.

    Returns:
        (uint8 images (N, 3, H, W), labels (N,), number of normal images, number of weak anomalous images).
    """
    weak = list(splits.weak) if cfg.train.setting == "weak" else []
    if cfg.train.setting == "weak" and not weak:
        raise ValueError(f"train.setting=weak but the splits hold no weak anomalous image ({cfg.data.category})")
    ds = AnomalyDataset(
        list(splits.train) + weak,
        cfg.data.image_size,
        train=True,
        resize_ratio=cfg.data.train_resize_ratio,
        rotation_deg=cfg.data.rotation_deg,
        has_masks=False,  # training never reads masks (weak images carry their image label only, PN 12)
        geometry=cfg.data.geometry,  # letterbox: the padding is part of every training square (docs/PROTOCOL.md)
    )
    pinned = device.type == "cuda"
    images_u8 = (ds.images.pin_memory() if pinned else ds.images).to(device, non_blocking=pinned)
    return images_u8, ds.labels.to(device), len(splits.train), len(weak)


def _set_up(cfg: RunConfig, splits: Splits, ctx: ddp.DistContext) -> _Run:
    """Device, seeds, networks, data on the device, generators and optimisers, in the order the seeds expect.

    Every rank builds the same networks (seeded by ``train.seed``); then ranks > 0 reseed their own streams
    (:func:`avaga_lib.training.distributed.rank_seed`; rank 0 keeps the single-process ones). The sampler generator is
    the same on every rank (the ranks shard one global batch).
    """
    tc = cfg.train
    device = ctx.device or resolve_device(tc.device)
    amp = amp_dtype(tc.amp, device)
    configure_precision(device)
    seed_everything(tc.seed, tc.deterministic)
    model, disc, notes = _networks(cfg, ctx, device)
    own_seed = ddp.rank_seed(tc.seed, ctx.rank)
    if ctx.rank > 0:
        seed_rngs(own_seed)  # noise and any other draw of this rank
    images_u8, labels, n_normal, n_weak = _training_images(cfg, splits, device)
    generators = {"sampler": torch.Generator().manual_seed(tc.seed),
                  "augment": torch.Generator(device=device).manual_seed(own_seed + 1)}
    # separate Adam for generator and discriminator (PN 5; fused kernel on CUDA, step.adam_kwargs), StepLR (A.1)
    opt_g = make_adam(model.parameters(), tc, device)
    opt_d = None if disc is None else make_adam(disc.parameters(), tc, device)
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=tc.lr_step, gamma=tc.lr_gamma) for o in (opt_g, opt_d)
              if o is not None]
    return _Run(cfg, ctx, device, amp, model, disc, images_u8, labels, n_normal, n_weak, generators, opt_g, opt_d,
                scheds, notes)


def _resume(run: _Run) -> None:
    """Continue from the run folder's checkpoint when ``train.resume`` is on and it belongs to this config."""
    path = run.ckpt_path
    ck = load_checkpoint(path) if run.cfg.train.resume and path.exists() else None
    rhash = resume_hash(run.cfg)
    if ck is not None and ck.get("resume_hash") != rhash:
        # a changed config in the same run folder (the pipeline reruns such runs): never mix two configs
        warnings.warn(f"checkpoint {path} belongs to a different config (hash {ck.get('resume_hash')} != {rhash}); "
                      "training from scratch (it is overwritten at the first checkpoint)", UserWarning, stacklevel=3)
        ck = None
    if ck is not None:
        run.model.load_state_dict(ck["model"])
        run.opt_g.load_state_dict(ck["opt_g"])
        run.scheds[0].load_state_dict(ck["sched_g"])
        if run.disc is not None and run.opt_d is not None:
            run.disc.load_state_dict(ck["disc"])
            run.opt_d.load_state_dict(ck["opt_d"])
            run.scheds[1].load_state_dict(ck["sched_d"])
        run.history = list(ck["history"])
        run.start_epoch = run.saved_epoch = int(ck["epoch"])
        run.last_saved = path
        reseed = ddp.rank_seed(run.cfg.train.seed, run.ctx.rank) + 1000 * run.start_epoch  # only where not restorable
        rng_notes = restore_rank_rng(ck["rng"], run.generators, run.device, run.ctx.rank, reseed)
        for note in rng_notes:
            warnings.warn(note, UserWarning, stacklevel=3)
        run.notes = [*dict.fromkeys([*ck.get("notes", []), *run.notes]), f"resumed from epoch {run.start_epoch}",
                     *rng_notes]
    if not ddp.same_on_all_ranks(run.start_epoch, run.ctx):
        raise ValueError(f"ranks resume from different epochs: {path} must be on a file system every rank reads "
                         "(or start fresh with train.resume=False)")


# ------------------------------------------------------------------------------------------------------ the loop


def _train_epoch(run: _Run, epoch: int, progress: bool) -> dict[str, Any]:
    """One pass over the training images; returns the epoch's row of the loss history."""
    cfg, ctx = run.cfg, run.ctx
    run.model.train()
    if run.disc is not None:
        run.disc.train()
    t_epoch = time.perf_counter()
    batches = epoch_batches(run.n_normal, run.n_weak, cfg.train.batch_size, run.generators["sampler"])
    masks_u8 = torch.zeros((len(run.labels), 1, 1, 1), dtype=torch.uint8, device=run.device)  # never trained on
    names: list[str] = []
    sums: Tensor | None = None  # the terms summed over the epoch's steps, on the device (no host sync per step)
    bar = tqdm(batches, desc=f"{cfg.run_id} epoch {epoch}/{cfg.train.epochs}", disable=not progress, leave=False)
    for idx in bar:
        idx, share = ddp.shard_batch(idx, ctx)  # this rank's images of the global batch (issue 8)
        idx = idx.to(run.device, non_blocking=run.device.type == "cuda")
        x, _ = augment_batch(run.images_u8[idx], masks_u8[idx], cfg.data.image_size, cfg.data.rotation_deg,
                             generator=run.generators["augment"])  # (B,1,1,1) masks: grid_sample takes any size
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        assert run.nets is not None
        terms = train_step(cfg, run.nets, x, run.labels[idx], run.amp, loss_scale=share * ctx.world_size)
        names = list(terms)
        sums = accumulate_terms(sums, terms, run.device)
    assert sums is not None  # epoch_batches returns at least one batch
    means = ddp.average_terms(dict(zip(names, sums / len(batches))), ctx)  # the epoch's one host transfer
    bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()})
    bar.close()
    for name, value in means.items():  # a NaN anywhere in the epoch makes its mean NaN
        if not math.isfinite(value):
            raise NonFiniteLossError(epoch, name, value, run.last_saved)
    row = {"epoch": epoch, "lr": run.opt_g.param_groups[0]["lr"], **means}
    row["time_s"] = time.perf_counter() - t_epoch
    return row


def _snapshot(run: _Run, epoch: int, rng: list[dict[str, Any]]) -> dict[str, Any]:
    sched_d = run.scheds[1] if len(run.scheds) > 1 else None
    return {
        "epoch": epoch,
        "resume_hash": resume_hash(run.cfg),
        "config": run.cfg.to_dict(),
        "model": state_or_none(run.model),
        "disc": state_or_none(run.disc),
        "opt_g": state_or_none(run.opt_g),
        "opt_d": state_or_none(run.opt_d),
        "sched_g": state_or_none(run.scheds[0]),
        "sched_d": state_or_none(sched_d),
        "scaler": None,  # bf16 autocast needs no GradScaler
        "rng": rng,  # one entry per rank
        "history": run.history,
        "notes": run.notes,
    }


def _end_of_epoch(run: _Run, epoch: int) -> None:
    """Log the losses and checkpoint (rank 0 alone writes, issue 8; every rank holds the same weights).

    One collective per epoch gathers every rank's RNG states and rank 0's checkpoint decision.
    """
    tc, main = run.cfg.train, run.ctx.is_main
    if main and (epoch % tc.log_every == 0 or epoch == tc.epochs):
        write_csv(Path(run.cfg.run_dir) / LOSSES_NAME, pd.DataFrame(run.history))
    due = checkpoint_due(epoch, tc, run.device, time.monotonic() - run.saved_at)
    gathered = ddp.gather_objects((rng_state(run.generators, run.device), due), run.ctx)
    rng, due = [g[0] for g in gathered], gathered[0][1]  # rank 0 decides (wall clocks differ)
    if due:
        if main:
            save_torch(run.ckpt_path, _snapshot(run, epoch, rng))
        run.last_saved, run.saved_epoch, run.pending, run.saved_at = run.ckpt_path, epoch, None, time.monotonic()
    elif main:
        run.pending = copy.deepcopy(_snapshot(run, epoch, rng))  # so Ctrl-C can still save this epoch exactly


def _interrupted(run: _Run) -> TrainingInterrupted:
    """Ctrl-C: save the last completed epoch (mid-epoch weights are not resumable exactly) and name it."""
    if run.pending is not None:
        save_torch(run.ckpt_path, run.pending)
        run.last_saved, run.saved_epoch = run.ckpt_path, int(run.pending["epoch"])
    if run.history and run.ctx.is_main:
        write_csv(Path(run.cfg.run_dir) / LOSSES_NAME, pd.DataFrame(run.history))
    return TrainingInterrupted(run.saved_epoch, run.last_saved)


def train_run(cfg: RunConfig, splits: Splits | None = None, progress: bool = True) -> TrainResult:
    """Train one run (AVAGA in either setting, or an AE baseline) and checkpoint it in ``cfg.run_dir``.

    Args:
        cfg: run config (``train.setting`` chooses eq. 4 or eq. 6; ``method`` chooses AVAGA or a baseline).
        splits: :class:`avaga_lib.data.Splits`; None = :func:`avaga_lib.data.make_splits` (writes splits.json).
        progress: tqdm bars per epoch with the loss terms in the postfix.

    Raises:
        NonFiniteLossError: a loss term became NaN/inf (epoch and term named; last good checkpoint kept).
        TrainingInterrupted: Ctrl-C (the last completed epoch was saved first). ValueError: an unreadable checkpoint in
        the run folder while ``train.resume`` is on. (A checkpoint of a
            *different* config is not resumed: a warning says so and training starts from scratch.)
    """
    t0 = time.perf_counter()
    threads = configure_threads(cfg.train.threads)  # CPU sums depend on it: the config's count, whatever the env
    # torchrun (WORLD_SIZE > 1): join the process group; alone this is ddp.SINGLE and changes nothing (issue 8)
    ctx = ddp.init_distributed(resolve_device(cfg.train.device))
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    if splits is None:
        splits = make_splits(cfg.data, cfg.train.setting, save_dir=Path(cfg.run_dir) if ctx.is_main else None)
    run = _set_up(cfg, splits, ctx)
    _resume(run)
    run.nets = make_nets(run.model, run.disc, run.opt_g, run.opt_d, ctx)  # DDP: rank 0's weights on every rank
    epoch = run.start_epoch
    try:
        for epoch in range(run.start_epoch + 1, cfg.train.epochs + 1):
            run.history.append(_train_epoch(run, epoch, progress))
            for sched in run.scheds:
                sched.step()
            _end_of_epoch(run, epoch)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        raise _interrupted(run) from None
    for module in (run.model, run.disc):
        if module is not None:
            ddp.sync_buffers(module, ctx)  # the BatchNorm statistics of rank 0's last step on every rank
            module.eval()
    ddp.cleanup(ctx)
    return TrainResult(
        model=run.model, disc=run.disc, history=pd.DataFrame(run.history), notes=run.notes,
        wall_time_s=time.perf_counter() - t0, device=str(run.device), cfg=cfg,
        epochs_done=max(epoch, run.start_epoch), resumed_from=run.start_epoch, checkpoint=run.last_saved,
        extra={"n_train_normal": run.n_normal, "n_train_weak": run.n_weak, "rank": ctx.rank,
               "world_size": ctx.world_size, "is_main": ctx.is_main, "threads": threads},
    )  # fmt: skip


__all__ = ["TrainResult", "epoch_batches", "train_run"]
