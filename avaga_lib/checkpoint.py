"""Checkpoints of the trainer: what is saved, how a run resumes exactly, and when a checkpoint may be resumed.

A checkpoint (``checkpoint.pt`` in the run folder, written atomically by :func:`avaga_lib.io.save_torch`) holds the
weights, the optimiser and scheduler states, every RNG state (python, numpy, torch, cuda, and the trainer's own
``torch.Generator``s), the loss history and the notes of the run. Restoring all of them makes a run interrupted
after epoch k and resumed end with the same weights as an uninterrupted run (tested on CPU).

A checkpoint is resumed only by the config that wrote it: :func:`resume_hash` hashes the config without the fields
that may change between the two calls (the number of epochs, the device, the checkpoint cadence, ...).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avaga_lib.config import RunConfig, apply_overrides, config_hash

# Fields that may change between an interrupted run and its resumption without invalidating the checkpoint.
RESUME_FREE = (
    "train.epochs",
    "train.resume",
    "train.checkpoint_every",
    "train.device",
    "train.log_every",
    "results_dir",
)


def resume_hash(cfg: RunConfig) -> str:
    """Config hash ignoring the fields that may change on resumption (epochs, device, checkpoint cadence)."""
    neutral = {key: _get(RunConfig(), key) for key in sorted(RESUME_FREE)}
    return config_hash(apply_overrides(cfg, neutral))


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG state of the process plus the named generators' (saved in each checkpoint)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    state.update({name: g.get_state() for name, g in generators.items()})
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Restore what :func:`rng_state` saved (the generators in place)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in generators.items():
        g.set_state(state[name])


def state_or_none(obj: Any) -> Any:
    """``obj.state_dict()``, or None for an absent module / optimiser (the baselines have no discriminator)."""
    return None if obj is None else obj.state_dict()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU.

    Raises:
        ValueError: the file is not a readable checkpoint (naming it and the way out).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # our own file: holds RNG tuples
    except Exception as exc:  # a truncated file cannot happen with atomic writes, but a foreign one can
        raise ValueError(f"cannot read checkpoint {path} ({exc}); delete it or set train.resume=False") from exc


__all__ = ["RESUME_FREE", "load_checkpoint", "resume_hash", "rng_state", "set_rng_state", "state_or_none"]
