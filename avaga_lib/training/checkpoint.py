"""Checkpoints of the trainer: what is saved, how a run resumes exactly, and when a checkpoint may be resumed.

A checkpoint (``checkpoint.pt`` in the run folder, written atomically by :func:`avaga_lib.io.save_torch`) holds the
weights, the optimiser and scheduler states, every RNG state of every rank (python, numpy, torch, the training
device's CUDA generator, and the trainer's own ``torch.Generator``s, each tagged with its device type), the loss
history and the notes of the run. Restoring all of them makes a run interrupted after epoch k and resumed end with
the same weights as an uninterrupted run (tested on CPU, alone and with 2 processes). A state that cannot be
restored on the resuming machine (another device type, another number of processes) is reseeded with a note
instead of stopping the run (issue 15 rows 3-5).

A checkpoint is resumed only by the config that wrote it: :func:`resume_hash` hashes the config without the fields
that may change between the two calls (the number of epochs, the device, the checkpoint cadence, ...).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avaga_lib.config import RunConfig, TrainConfig, apply_overrides, config_hash
from avaga_lib.runtime import seed_rngs

RNG_FORMAT = 2  # tagged states, one entry per rank (issue 15); checkpoints without "format" are read as before

# Fields that may change between an interrupted run and its resumption without invalidating the checkpoint.
RESUME_FREE = (
    "train.epochs",
    "train.resume",
    "train.checkpoint_every",
    "train.checkpoint_minutes",
    "train.device",
    "train.log_every",
    "results_dir",
)


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


def checkpoint_due(epoch: int, tc: TrainConfig, device: torch.device, seconds_since_last: float) -> bool:
    """Whether the trainer writes a checkpoint after ``epoch``.

    Every ``train.checkpoint_every`` epochs and always after the last one; on CUDA, where an MVTec epoch can take
    0.1 s and the checkpoint (329 MiB for AVAGA-R) longer, no sooner than ``train.checkpoint_minutes`` after the
    previous one (0 = per epoch there too). CPU / MPS epochs take minutes: per epoch (issue 15 row 10).
    """
    if epoch == tc.epochs:
        return True
    if epoch % tc.checkpoint_every != 0:
        return False
    if device.type == "cuda" and tc.checkpoint_minutes > 0:
        return seconds_since_last >= 60.0 * tc.checkpoint_minutes
    return True


def resume_hash(cfg: RunConfig) -> str:
    """Config hash ignoring the fields that may change on resumption (epochs, device, checkpoint cadence)."""
    neutral = {key: _get(RunConfig(), key) for key in sorted(RESUME_FREE)}
    return config_hash(apply_overrides(cfg, neutral))


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def rng_state(generators: dict[str, torch.Generator], device: torch.device) -> dict[str, Any]:
    """This process's RNG states, each tagged with its device type (one rank's entry of a checkpoint's ``rng``).

    Python, numpy and torch's CPU generator; the default generator of the *training device only* (``cuda:k``:
    ``torch.cuda.get_rng_state(k)``, not every visible GPU's); the trainer's named generators with their device.

    Args:
        generators: the trainer's named generators (``sampler`` on the CPU, ``augment`` on the training device).
        device: the device this process trains on.
    """
    return {
        "format": RNG_FORMAT,
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "device": {"type": device.type, "state": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        "generators": {name: {"device": g.device.type, "state": g.get_state()} for name, g in generators.items()},
    }


def restore_rank_rng(
    saved: dict[str, Any] | list[dict[str, Any]],
    generators: dict[str, torch.Generator],
    device: torch.device,
    rank: int,
    reseed: int,
) -> list[str]:
    """Restore rank ``rank``'s RNG states from a checkpoint's ``rng`` (a list with one entry per rank).

    What cannot be restored is reseeded from ``reseed`` and named in the returned notes (the run then no longer
    continues exactly as an uninterrupted one would, but it runs): a generator saved on another device type (a CPU
    checkpoint resumed on CUDA or back), a CUDA state missing for this device, a rank the checkpoint has no entry
    for (more processes than when it was written). Checkpoints written before issue 15 (one dict, untagged states,
    every visible GPU's state in a list) are read too.

    Returns:
        The notes (empty when everything was restored exactly).
    """
    states = saved if isinstance(saved, list) else [saved]
    if rank >= len(states):
        seed_rngs(reseed)
        for i, g in enumerate(generators.values()):
            g.manual_seed(reseed + 1 + i)
        return [f"rank {rank}: no RNG state in the checkpoint (written by {len(states)} processes): "
                f"every generator reseeded from {reseed}"]
    state = states[rank]
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    notes = _restore_device_rng(state, device, reseed)
    for i, (name, g) in enumerate(generators.items()):
        notes += _restore_generator(name, g, _tagged(state, name), reseed + 1 + i)
    return notes


def _tagged(state: dict[str, Any], name: str) -> dict[str, Any]:
    """A named generator's ``{"device", "state"}`` (an untagged pre-issue-15 state gets device None)."""
    if "generators" in state:
        return dict(state["generators"][name])
    return {"device": None, "state": state[name]}


def _restore_generator(name: str, g: torch.Generator, saved: dict[str, Any], reseed: int) -> list[str]:
    if saved["device"] in (None, g.device.type):
        try:
            g.set_state(saved["state"])
            return []
        except (RuntimeError, ValueError):  # untagged state of another device type (its size differs)
            pass
    g.manual_seed(reseed)
    return [f"RNG '{name}': state saved on {saved['device'] or 'another device type'}, this run's generator is on "
            f"{g.device.type}: reseeded from {reseed} (the resumed run differs from an uninterrupted one)"]


def _restore_device_rng(state: dict[str, Any], device: torch.device, reseed: int) -> list[str]:
    """The training device's default generator (CUDA only; the CPU one is ``state["torch"]``)."""
    if device.type != "cuda":
        return []
    index = device.index if device.index is not None else torch.cuda.current_device()
    if "device" in state:
        saved = state["device"]
        cuda_state = saved["state"] if saved["type"] == "cuda" else None
        origin = saved["type"]
    else:  # pre-issue-15: every visible GPU's state, indexed by device number
        states = state.get("cuda") or []
        cuda_state = states[index] if index < len(states) else None
        origin = f"{len(states)} GPU(s)" if states else "cpu"
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state, device)
        return []
    torch.cuda.manual_seed_all(reseed)  # this process uses one GPU: seeding the others changes nothing
    return [f"RNG of {device}: no CUDA state for it in the checkpoint (saved on {origin}): reseeded from {reseed}"]


def state_or_none(obj: Any) -> Any:
    """``obj.state_dict()``, or None for an absent module / optimiser (the baselines have no discriminator)."""
    return None if obj is None else obj.state_dict()


__all__ = ["RESUME_FREE", "RNG_FORMAT", "NonFiniteLossError", "TrainingInterrupted", "checkpoint_due",
           "restore_rank_rng", "resume_hash", "rng_state", "state_or_none"]
