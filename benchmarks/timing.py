"""Timing on ``torch.utils.benchmark.Timer``: seconds per call, and interleaved rounds for paired ratios.

Every timed block is one ``Timer.timeit(calls)``: the Timer runs ``max(calls // 100, 2)`` untimed warm-up calls
first, synchronises the accelerator before reading the clock (CUDA is asynchronous) and runs the block at the
thread count given to it (here always torch's current one: the Timer's own default is 1 thread).

Machines are noisy, so candidates whose ratio matters (step with / without L_attn, data step / whole step) are
timed in interleaved rounds (A, B, A, B, ...): slow phases of the machine hit every candidate alike, and per-round
ratios cancel drifts. Tests check call order and structure, never timings.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.benchmark import Timer


def make_timer(fn: Callable[[], Any]) -> Timer:
    """A ``Timer`` calling ``fn()`` at torch's current thread count (the Timer would otherwise force 1 thread)."""
    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())


def seconds_per_call(timer: Timer, calls: int = 1) -> float:
    """Mean seconds per call of one timed block of ``calls`` calls (after the Timer's own warm-up calls)."""
    return float(timer.timeit(calls).mean)


def interleaved_times(
    fns: Mapping[str, Callable[[], Any]],
    repeats: int = 3,
    calls: int = 1,
    warmup: int = 0,
    alternate: bool = False,
) -> dict[str, list[float]]:
    """Seconds per call of each callable in every round, timing them interleaved (A, B, A, B, ...).

    Args:
        fns: name -> callable (one training step, one data step, ...).
        repeats: rounds; each round times one block of ``calls`` calls of every callable.
        calls: calls per timed block (the block time is divided by it).
        warmup: untimed calls of each callable before the first round, on top of the Timer's warm-up of each
            block (rarely needed: the Timer already warms up).
        alternate: reverse the order of the callables in every other round (A, B, B, A, ...), so neither always
            runs right after the other.

    Returns:
        name -> ``repeats`` samples (seconds per call).
    """
    if repeats <= 0 or calls <= 0:
        raise ValueError(f"interleaved_times: repeats={repeats} and calls={calls} must be positive")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    timers = {name: make_timer(fn) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        order = list(timers) if not (alternate and r % 2) else list(reversed(timers))
        for name in order:
            samples[name].append(seconds_per_call(timers[name], calls))
    return samples


def interleaved_medians(
    fns: Mapping[str, Callable[[], Any]],
    repeats: int = 3,
    calls: int = 1,
    warmup: int = 0,
) -> dict[str, float]:
    """Median seconds per call of each callable over interleaved rounds (see :func:`interleaved_times`)."""
    return {k: statistics.median(v) for k, v in interleaved_times(fns, repeats, calls, warmup).items()}


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-round ratios of two interleaved candidates (cancels drifts of the machine)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))
