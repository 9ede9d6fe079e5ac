"""Device, mixed precision and seeding: the run-time set-up every training, evaluation and benchmark path shares.

Kept apart from the trainer so that evaluation, prediction and the benchmarks do not import ``train.py``.

Precision (issue 15): :func:`configure_precision` is the one place that sets the float32 matmul / convolution
precision (TF32 on CUDA); the trainer, the evaluation and the bench call it. :func:`full_precision` is the region
where the numerically fragile parts run (losses, Grad-CAM, SSIM): autocast off and TF32 off, so they compute in
true float32 whatever the surrounding autocast and backend settings.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
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


def no_autocast(device: torch.device | str) -> AbstractContextManager[Any]:
    """Autocast switched off on ``device``'s type (a no-op where autocast is not active)."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


def configure_precision(device: torch.device | str) -> dict[str, Any]:
    """The one place that sets float32 matmul / convolution precision (trainer, evaluation, bench; issue 15 row 12).

    CUDA: TF32 tensor cores for the float32 matmuls and convolutions that run outside bf16 autocast (``train.amp``
    off, the Adam-free leftovers); :func:`full_precision` switches TF32 off again where precision matters (losses,
    Grad-CAM, SSIM). CPU / MPS: torch's default ("highest"), nothing changed.

    Returns:
        What is in effect, for the run / bench record: ``{"tf32": bool, "matmul_precision": str}``.
    """
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for float32 matmuls
        torch.backends.cudnn.allow_tf32 = True  # TF32 for float32 convolutions (torch's default too)
    return {"tf32": torch.get_float32_matmul_precision() != "highest", "matmul_precision":
            torch.get_float32_matmul_precision()}


@contextmanager
def full_precision(device: torch.device | str) -> Iterator[None]:
    """True float32 inside: autocast off and (CUDA) TF32 off for matmuls and convolutions; restored on exit.

    The backward of the ops run inside runs later, under the global setting (TF32 gradients on CUDA).
    """
    is_cuda = torch.device(device).type == "cuda"
    matmul, conv = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    with no_autocast(device):
        if is_cuda:
            torch.set_float32_matmul_precision("highest")
            torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            if is_cuda:
                torch.set_float32_matmul_precision(matmul)
                torch.backends.cudnn.allow_tf32 = conv


def configure_threads(threads: int) -> int:
    """Pin torch's CPU intra-op threads to ``threads`` (0 = leave torch's default); returns the count in effect.

    CPU reductions split work by thread, so the same seed gives the same floats only at the same count.
    """
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def seed_rngs(seed: int) -> None:
    """Seed python, numpy and torch (every device's default generator)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); ``deterministic`` switches torch to deterministic kernels.

    Deterministic mode is ``torch.use_deterministic_algorithms(True, warn_only=True)``: every op of this study has a
    deterministic kernel on CPU and CUDA (Grad-CAM's bilinear upsampling is a matrix product,
    :func:`avaga_lib.models.avaga.attention.bilinear_upsample`, because CUDA's ``upsample_bilinear2d`` backward has
    none and raised); an op without one (a future change) warns "... does not have a deterministic implementation"
    instead of stopping a run after hours (issue 15 row 2, docs/PERFORMANCE.md).
    """
    seed_rngs(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS for determinism
    wanted = (deterministic, deterministic)  # (enabled, warn_only)
    if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != wanted:
        torch.use_deterministic_algorithms(deterministic, warn_only=deterministic)  # the setter imports inductor
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic  # fixed input sizes: autotuning pays (issue 8)


def iterate_batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)`` (evaluation order)."""
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))
