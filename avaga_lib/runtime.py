"""Device, mixed precision and seeding: the run-time set-up every training, evaluation and benchmark path shares.

Kept apart from the trainer so that evaluation, prediction and the benchmarks do not import ``train.py``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; any other string is passed to ``torch.device``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels (CUDA is asynchronous; timings without this measure the launch only)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.amp``: ``auto`` = bf16 on cuda only (no GradScaler needed), ``bf16``, ``off``."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    raise ValueError(f"train.amp='{amp}' unknown; choose auto, bf16 or off")


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """Autocast context on ``device`` (a no-op when ``dtype`` is None)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure_threads(threads: int) -> int:
    """Pin torch's CPU intra-op threads to ``threads`` (0 = leave torch's default); returns the count in effect.

    CPU reductions split work by thread, so the same seed gives the same floats only at the same count.
    """
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); ``deterministic`` switches torch to deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS for determinism
    if torch.are_deterministic_algorithms_enabled() != deterministic:  # the setter imports inductor (seconds)
        torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic  # fixed input sizes: autotuning pays (issue 8)


def iterate_batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)`` (evaluation order)."""
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))
