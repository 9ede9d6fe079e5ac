"""One trainer for AVAGA_u (eq. 4), AVAGA_w (eq. 6) and the AE baselines: seeds, device, AMP, checkpoints, resume.

Data path (issue 8): :class:`avaga_lib.data.AnomalyDataset` decodes every training image once into a uint8 tensor;
the whole tensor moves to the training device once, and each step indexes a batch and augments it *on the device*
(:func:`avaga_lib.data.augment_batch`, random crop + rotation, PROTOCOL_NOTES 13). No DataLoader workers, no
per-step decoding.

Randomness: python / numpy / torch are seeded from ``train.seed``; batch order and augmentation draw from two
dedicated ``torch.Generator``s. Every RNG state (python, numpy, torch, cuda, both generators) is saved in each
checkpoint, so a run interrupted after epoch k and resumed ends with the same weights as an uninterrupted run
(tested on CPU).

Interruption: Ctrl-C writes the state of the last *completed* epoch (mid-epoch weights are not resumable exactly)
and re-raises as :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) naming the checkpoint; ``train.resume``
continues from there. A non-finite loss term raises :class:`NonFiniteLossError` naming the epoch and the term;
the last good checkpoint on disk is left untouched.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from avaga_lib.config import RunConfig, config_hash
from avaga_lib.io import save_torch, write_csv
from avaga_lib.runtime import amp_dtype, autocast, iterate_batches, resolve_device, seed_everything

CHECKPOINT_NAME = "checkpoint.pt"
LOSSES_NAME = "losses.csv"

# Fields that may change between an interrupted run and its resumption without invalidating the checkpoint.
_RESUME_FREE = {
    "train.epochs",
    "train.resume",
    "train.checkpoint_every",
    "train.device",
    "train.log_every",
    "results_dir",
}


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; training stopped, the last good checkpoint is kept."""

    def __init__(self, epoch: int, term: str, value: float, checkpoint: Path | None) -> None:
        kept = f"last good checkpoint kept at {checkpoint}" if checkpoint else "no checkpoint written yet"
        super().__init__(
            f"non-finite loss term '{term}' = {value} at epoch {epoch}; training stopped ({kept}). "
            "Lower train.lr, switch train.amp=off, or check the data."
        )
        self.epoch = epoch
        self.term = term
        self.value = value
        self.checkpoint = checkpoint


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the last completed epoch was saved; resume with ``train.resume=True``."""

    def __init__(self, epoch: int, checkpoint: Path | None) -> None:
        where = f"state of epoch {epoch} saved to {checkpoint}" if checkpoint else "nothing to save (no epoch done)"
        super().__init__(f"training interrupted; {where}; rerun with train.resume=True to continue")
        self.epoch = epoch
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    """What :func:`train_run` returns.

    Attributes:
        model: trained network (AVAGA or BergmannAE), in eval mode, on ``device``.
        disc: discriminator (AVAGA) or None (baselines).
        history: one row per epoch: ``epoch``, ``lr``, every loss term (epoch mean), ``time_s``.
        notes: fallbacks and choices that happened (pretrained weights missing, compile ignored, ...).
        wall_time_s: seconds spent in this call (not counting epochs done before a resume).
        device: device the run trained on.
        cfg: the run config with ``notes`` recorded.
        epochs_done: last completed epoch.
        resumed_from: epoch the run resumed from (0 = fresh start).
        checkpoint: path of the last checkpoint written (None when checkpointing never happened).
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


# --------------------------------------------------------------------------------------------- hardware and seeds


def resume_hash(cfg: RunConfig) -> str:
    """Config hash ignoring the fields that may change on resumption (epochs, device, checkpoint cadence)."""
    from avaga_lib.config import apply_overrides

    neutral = {k: _get(RunConfig(), k) for k in sorted(_RESUME_FREE)}
    return config_hash(apply_overrides(cfg, neutral))


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# --------------------------------------------------------------------------------------------------- networks


def build_networks(cfg: RunConfig) -> tuple[nn.Module, nn.Module | None, list[str]]:
    """Instantiate the networks of a run (on the CPU).

    Returns:
        ``(model, discriminator or None, notes)``; notes name fallbacks (e.g. no pretrained weights).
    """
    if cfg.method == "avaga":
        from avaga_lib.model import Discriminator, build_model

        model, notes = build_model(cfg.model, cfg.data.image_size, cfg.train.setting)
        disc = Discriminator(cfg.data.image_size)
        return model, disc, list(notes)
    from avaga_lib.baselines import BergmannAE

    return BergmannAE(cfg.data.image_size), None, []


def baseline_kind(method: str) -> str:
    """``ae_l2`` -> ``l2``, ``ae_ssim`` -> ``ssim`` (the ``kind`` of :mod:`avaga_lib.baselines`)."""
    if not method.startswith("ae_"):
        raise ValueError(f"method '{method}' is not a baseline (ae_l2 | ae_ssim)")
    return method[3:]


# ------------------------------------------------------------------------------------------------------ batches


def epoch_batches(
    n_normal: int, n_weak: int, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Index batches of one epoch: every normal image once; in the weak setting k anomalous images per batch.

    Balanced sampling (weak setting): each batch gets ``k = max(1, ceil(n_weak / n_batches))`` anomalous images
    drawn from concatenated random permutations of the weak images (with replacement across batches), so every
    anomalous image is seen at least once per epoch even when there are only one or two of them. Anomalous
    images carry indices ``n_normal .. n_normal + n_weak - 1``.

    Args:
        n_normal: number of normal training images.
        n_weak: number of weakly labelled anomalous images (0 in the unsupervised setting).
        batch_size: normal images per batch (near-equal split, no batch of 1 unless there is 1 image).
        generator: CPU generator (its state is checkpointed).
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


# ------------------------------------------------------------------------------------------------ checkpoints


def _rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    state.update({name: g.get_state() for name, g in generators.items()})
    return state


def _set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in generators.items():
        g.set_state(state[name])


def _state(module: Any) -> Any:
    return None if module is None else module.state_dict()


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # our own file: holds RNG tuples
    except Exception as exc:  # a truncated file cannot happen with atomic writes, but a foreign one can
        raise ValueError(f"cannot read checkpoint {path} ({exc}); delete it or set train.resume=False") from exc


# ---------------------------------------------------------------------------------------------------- trainer


def train_run(cfg: RunConfig, splits: Any | None = None, progress: bool = True) -> TrainResult:
    """Train one run (AVAGA in either setting, or an AE baseline) and checkpoint it in ``cfg.run_dir``.

    Args:
        cfg: run config (``train.setting`` chooses eq. 4 or eq. 6; ``method`` chooses AVAGA or a baseline).
        splits: :class:`avaga_lib.data.Splits`; None = :func:`avaga_lib.data.make_splits` (writes splits.json).
        progress: tqdm bars per epoch with the loss terms in the postfix.

    Returns:
        :class:`TrainResult`.

    Raises:
        NonFiniteLossError: a loss term became NaN/inf (epoch and term named; last good checkpoint kept).
        TrainingInterrupted: Ctrl-C (the last completed epoch was saved first).
        ValueError: an unreadable checkpoint in the run folder while ``train.resume`` is on. (A checkpoint of a
            *different* config is not resumed: a warning says so and training starts from scratch.)
    """
    from tqdm.auto import tqdm

    from avaga_lib import distributed as ddp
    from avaga_lib.data import AnomalyDataset, augment_batch, make_splits

    t0 = time.perf_counter()
    tc = cfg.train
    # torchrun (WORLD_SIZE > 1): join the process group; alone this is ddp.SINGLE and changes nothing (issue 8)
    ctx = ddp.init_distributed(resolve_device(tc.device))
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if splits is None:
        splits = make_splits(cfg.data, tc.setting, save_dir=run_dir if ctx.is_main else None)

    device = ctx.device or resolve_device(tc.device)
    dtype = amp_dtype(tc.amp, device)
    seed_everything(tc.seed, tc.deterministic)
    notes: list[str] = []

    model, disc, build_notes = build_networks(cfg)
    notes += build_notes
    if tc.nproc > 1 and not ctx.enabled:
        notes.append(f"train.nproc={tc.nproc} but not started by torchrun: trained in one process "
                     "(python -m avaga_lib.distributed --nproc N -- train ...)")
    elif ctx.enabled and ctx.world_size != tc.nproc:
        notes.append(f"torchrun world size {ctx.world_size} differs from train.nproc={tc.nproc}: world size used")
    if tc.compile:
        notes.append("train.compile=True ignored: Grad-CAM's second-order graph is not compiled by this trainer")
    channels_last = tc.channels_last and device.type == "cuda"  # helps convs on tensor cores; not on CPU
    mem_fmt = torch.channels_last if channels_last else torch.preserve_format
    model.to(device, memory_format=mem_fmt)
    if disc is not None:
        disc.to(device, memory_format=mem_fmt)

    # Data: decoded once, moved to the device once (issue 8); weak images follow the normal ones.
    weak = list(splits.weak) if tc.setting == "weak" else []
    if tc.setting == "weak" and not weak:
        raise ValueError(f"train.setting=weak but the splits hold no weak anomalous image ({cfg.data.category})")
    records = list(splits.train) + weak
    ds = AnomalyDataset(
        records,
        cfg.data.image_size,
        train=True,
        resize_ratio=cfg.data.train_resize_ratio,
        rotation_deg=cfg.data.rotation_deg,
        has_masks=False,  # training never reads masks (weak images carry their image label only, PN 12)
    )
    non_blocking = device.type == "cuda"
    images_u8 = ds.images.pin_memory() if non_blocking else ds.images
    images_u8 = images_u8.to(device, non_blocking=non_blocking)
    masks_u8 = torch.zeros((len(ds), 1, 1, 1), dtype=torch.uint8, device=device)  # unused (never trained on)
    labels = ds.labels.to(device)
    n_normal, n_weak = len(splits.train), len(weak)

    sampler_gen = torch.Generator().manual_seed(tc.seed)
    augment_gen = torch.Generator(device=device).manual_seed(tc.seed + 1)
    generators = {"sampler": sampler_gen, "augment": augment_gen}

    # Optimisers: separate Adam for generator and discriminator (PN 5), StepLR (A.1).
    opt_g = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=tc.betas)
    sched_g = torch.optim.lr_scheduler.StepLR(opt_g, step_size=tc.lr_step, gamma=tc.lr_gamma)
    opt_d = sched_d = None
    if disc is not None:
        opt_d = torch.optim.Adam(disc.parameters(), lr=tc.lr, betas=tc.betas)
        sched_d = torch.optim.lr_scheduler.StepLR(opt_d, step_size=tc.lr_step, gamma=tc.lr_gamma)

    history: list[dict[str, Any]] = []
    start_epoch = 0
    rhash = resume_hash(cfg)
    ck = _load_checkpoint(ckpt_path) if tc.resume and ckpt_path.exists() else None
    if ck is not None and ck.get("resume_hash") != rhash:
        # a changed config in the same run folder (the pipeline reruns such runs): never mix two configs
        warnings.warn(
            f"checkpoint {ckpt_path} belongs to a different config (hash {ck.get('resume_hash')} != {rhash}); "
            "training from scratch (it is overwritten at the first checkpoint)",
            UserWarning,
            stacklevel=2,
        )
        ck = None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt_g.load_state_dict(ck["opt_g"])
        sched_g.load_state_dict(ck["sched_g"])
        if disc is not None:
            disc.load_state_dict(ck["disc"])
            opt_d.load_state_dict(ck["opt_d"])  # type: ignore[union-attr]
            sched_d.load_state_dict(ck["sched_d"])  # type: ignore[union-attr]
        _set_rng_state(ck["rng"], generators)
        history = list(ck["history"])
        start_epoch = int(ck["epoch"])
        notes = list(dict.fromkeys([*ck.get("notes", []), *notes]))
        notes.append(f"resumed from epoch {start_epoch}")

    def snapshot(epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "resume_hash": rhash,
            "config": cfg.to_dict(),
            "model": _state(model),
            "disc": _state(disc),
            "opt_g": _state(opt_g),
            "opt_d": _state(opt_d),
            "sched_g": _state(sched_g),
            "sched_d": _state(sched_d),
            "scaler": None,  # bf16 autocast needs no GradScaler
            "rng": _rng_state(generators),
            "history": history,
            "notes": notes,
        }

    if ctx.enabled:
        if not ddp.same_on_all_ranks(start_epoch, ctx):
            raise ValueError(f"ranks resume from different epochs: {ckpt_path} must be on a file system every rank "
                             "reads (or start fresh with train.resume=False)")
        ddp.broadcast_module(model, ctx)  # identical start on every rank (seeded alike; this makes it certain)
        if disc is not None:
            ddp.broadcast_module(disc, ctx)
    last_saved: Path | None = ckpt_path if start_epoch > 0 else None
    saved_epoch = start_epoch
    pending: dict[str, Any] | None = None  # in-memory state of the last completed epoch when not yet on disk
    epoch = start_epoch
    try:
        for epoch in range(start_epoch + 1, tc.epochs + 1):
            model.train()
            if disc is not None:
                disc.train()
            t_epoch = time.perf_counter()
            batches = epoch_batches(n_normal, n_weak, tc.batch_size, sampler_gen)
            sums: dict[str, float] = {}
            bar = tqdm(batches, desc=f"{cfg.setting_name} epoch {epoch}/{tc.epochs}", disable=not progress, leave=False)
            for idx in bar:
                idx, share = ddp.shard_batch(idx, ctx)  # this rank's images of the global batch (issue 8)
                idx_dev = idx.to(device, non_blocking=non_blocking)
                x, _ = augment_batch(
                    images_u8[idx_dev],
                    masks_u8[idx_dev],  # (B,1,1,1) zeros: grid_sample accepts any input size, masks unused
                    cfg.data.image_size,
                    cfg.data.rotation_deg,
                    generator=augment_gen,
                )
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                terms = _train_step(cfg, model, disc, opt_g, opt_d, x, labels[idx_dev], device, dtype, ctx, share)
                for name, value in terms.items():
                    if not math.isfinite(value):
                        raise NonFiniteLossError(epoch, name, value, last_saved)
                    sums[name] = sums.get(name, 0.0) + value
                bar.set_postfix({k: f"{v / (bar.n + 1):.4g}" for k, v in sums.items()}, refresh=False)
            bar.close()
            row = {"epoch": epoch, "lr": opt_g.param_groups[0]["lr"]}
            row.update(ddp.mean_over_ranks({k: v / len(batches) for k, v in sums.items()}, ctx))
            row["time_s"] = time.perf_counter() - t_epoch
            history.append(row)
            sched_g.step()
            if sched_d is not None:
                sched_d.step()
            if ctx.is_main and (epoch % tc.log_every == 0 or epoch == tc.epochs):
                write_csv(run_dir / LOSSES_NAME, pd.DataFrame(history))
            if epoch % tc.checkpoint_every == 0 or epoch == tc.epochs:
                if ctx.is_main:  # rank 0 alone writes (issue 8); every rank holds the same weights
                    save_torch(ckpt_path, snapshot(epoch))
                last_saved, saved_epoch, pending = ckpt_path, epoch, None
            elif ctx.is_main:
                pending = copy.deepcopy(snapshot(epoch))  # so Ctrl-C can still save this epoch exactly
    except KeyboardInterrupt as exc:
        if isinstance(exc, TrainingInterrupted):
            raise
        if pending is not None:
            save_torch(ckpt_path, pending)
            last_saved, saved_epoch = ckpt_path, int(pending["epoch"])
        write_csv(run_dir / LOSSES_NAME, pd.DataFrame(history)) if history and ctx.is_main else None
        raise TrainingInterrupted(saved_epoch, last_saved) from None

    ddp.cleanup(ctx)
    model.eval()
    if disc is not None:
        disc.eval()
    run_cfg = cfg
    for note in notes:
        run_cfg = run_cfg.with_note(note)
    return TrainResult(
        model=model,
        disc=disc,
        history=pd.DataFrame(history),
        notes=notes,
        wall_time_s=time.perf_counter() - t0,
        device=str(device),
        cfg=run_cfg,
        epochs_done=max(epoch, start_epoch),
        resumed_from=start_epoch,
        checkpoint=last_saved,
        extra={"n_train_normal": n_normal, "n_train_weak": n_weak, "rank": ctx.rank, "world_size": ctx.world_size,
               "is_main": ctx.is_main},
    )


def _train_step(
    cfg: RunConfig,
    model: nn.Module,
    disc: nn.Module | None,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer | None,
    x: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype | None,
    ctx: Any = None,
    share: float = 1.0,
) -> dict[str, float]:
    """One optimisation step; returns the loss terms as floats (checked for finiteness by the caller).

    ``ctx`` / ``share``: the DDP context and this rank's share of the global batch (:mod:`avaga_lib.distributed`);
    gradients are all-reduced after each backward. None / 1.0 alone.
    """
    from avaga_lib import distributed as ddp

    ctx = ctx or ddp.SINGLE
    if cfg.method != "avaga":
        from avaga_lib.baselines import reconstruction_loss

        with autocast(device, dtype):
            recon = model(x)
            loss = reconstruction_loss(baseline_kind(cfg.method), x, recon.float())
        value = float(loss.detach())
        if not ddp.all_finite({"loss": value}, ctx):  # collective: every rank stops together
            return {"loss": value if not math.isfinite(value) else math.nan}
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        ddp.allreduce_gradients(model.parameters(), ctx, share)
        opt_g.step()
        ddp.sync_buffers(model, ctx)
        return {"loss": value}

    from avaga_lib.losses import discriminator_objective, generator_objective

    with autocast(device, dtype):
        g_loss, terms, out = generator_objective(
            model, disc, x, labels, cfg.loss, cfg.model, cfg.train.setting
        )
    terms = {f"g_{k}" if k in ("total", "loss") else k: float(v) for k, v in terms.items()}
    terms.setdefault("g_total", float(g_loss.detach()))
    if not ddp.all_finite(terms, ctx):  # collective: every rank stops together
        if all(math.isfinite(v) for v in terms.values()):
            terms["nonfinite_on_another_rank"] = math.nan
        return terms  # caller raises before any step is taken with a non-finite loss
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    ddp.allreduce_gradients(model.parameters(), ctx, share)
    opt_g.step()
    ddp.sync_buffers(model, ctx)
    if disc is not None and opt_d is not None and cfg.loss.adversarial_recon:
        with autocast(device, dtype):
            d_loss, d_terms = discriminator_objective(disc, x, out.recon.detach())
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        ddp.allreduce_gradients(disc.parameters(), ctx, share)
        opt_d.step()
        ddp.sync_buffers(disc, ctx)
        terms.update({k if k.startswith("d_") else f"d_{k}": float(v) for k, v in d_terms.items()})
    return terms


__all__ = [
    "CHECKPOINT_NAME",
    "LOSSES_NAME",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "TrainResult",
    "amp_dtype",
    "autocast",
    "baseline_kind",
    "build_networks",
    "epoch_batches",
    "iterate_batches",
    "load_trained",
    "resolve_device",
    "resume_hash",
    "seed_everything",
    "train_run",
]


def load_trained(run_dir: Path | str, device: str | torch.device = "cpu") -> tuple[RunConfig, nn.Module]:
    """Load a finished run's config and trained network (eval mode) from ``config.json`` + ``checkpoint.pt``.

    Raises:
        FileNotFoundError: naming the missing file.
    """
    run_dir = Path(run_dir)
    cfg_path, ckpt_path = run_dir / "config.json", run_dir / CHECKPOINT_NAME
    for p in (cfg_path, ckpt_path):
        if not p.exists():
            raise FileNotFoundError(f"{p} missing: is {run_dir} a finished run folder (train + evaluate)?")
    # save_run adds record-only keys (device, pretrained_source) beside the config fields: drop them here
    raw = json.loads(cfg_path.read_text())
    cfg = RunConfig.from_dict({k: v for k, v in raw.items() if k in RunConfig.__dataclass_fields__})
    # the weights come from the checkpoint: never fetch pretrained ones here
    model, _, _ = build_networks(replace(cfg, model=replace(cfg.model, pretrained="none")))
    ck = _load_checkpoint(ckpt_path)
    model.load_state_dict(ck["model"])
    model.to(torch.device(device)).eval()
    return cfg, model
