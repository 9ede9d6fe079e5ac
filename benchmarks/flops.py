"""FLOPs: the GEMM peak a training step is compared with, and exact counts through ``FlopCounterMode``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.timing import make_timer, seconds_per_call


def gemm_peak_flops(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    n: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
) -> float:
    """Achieved FLOP/s of an ``n x n`` by ``n x n`` matmul (2 n^3 FLOPs), best of ``repeats`` timed blocks.

    The best, not the median: it is the ceiling the training efficiency is compared with.

    Args:
        device: where to run.
        dtype: float32 on CPU; bf16 on CUDA matches the autocast training.
        n: matrix side; default 2048 on CPU (about 17 GFLOP, ~0.1-0.3 s on 2 cores), 8192 on CUDA.
        repeats: timed blocks (``Timer.timeit``, each after the Timer's own warm-up calls).
        warmup: untimed matmuls before the first block (thread pools, cuBLAS handles).
    """
    device = torch.device(device)
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    if n <= 0 or repeats <= 0:
        raise ValueError(f"gemm_peak_flops: n={n} and repeats={repeats} must be positive")
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(warmup):
        torch.mm(a, b, out=out)
    timer = make_timer(lambda: torch.mm(a, b, out=out))
    calls = 10 if device.type == "cuda" else 1  # one 8192^3 GEMM is ~1 ms on a big GPU: time several per block
    best = min(seconds_per_call(timer, calls) for _ in range(repeats))
    return 2.0 * n**3 / best


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` as counted by ``torch.utils.flop_counter.FlopCounterMode``.

    The counter sees every aten op dispatched inside ``fn``, including backward and double backward, and counts
    matmul / conv / bmm (elementwise ops are not counted: they are small next to the convolutions here).
    """
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def linear_flops(batch: int, in_features: int, out_features: int) -> int:
    """Forward FLOPs of ``nn.Linear`` without bias as FlopCounterMode counts them: 2 * B * in * out."""
    return 2 * batch * in_features * out_features


def conv2d_flops(batch: int, c_in: int, c_out: int, kernel: int, h_out: int, w_out: int, groups: int = 1) -> int:
    """Forward FLOPs of a 2-D convolution as FlopCounterMode counts them: 2 * B * Cout * Hout * Wout * Cin/g * k^2."""
    return 2 * batch * c_out * h_out * w_out * (c_in // groups) * kernel * kernel
