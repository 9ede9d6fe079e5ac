"""Aggregate training images/s of k runs sharing one GPU, each in its own process (``make gpu-study``).

One paper-profile run (AVAGA-R_u, 256 px, batch 24) leaves a large GPU mostly idle: small convolutions, a
second-order Grad-CAM backward, the Python between kernel launches. The study's runs are independent, so the cheap
way to fill the GPU is to run several at once, as the scheduler does with ``runs_per_gpu`` = k
(:mod:`avaga_lib.orchestration.scheduler`): one process per run, each with its own CUDA context.

:func:`aggregate_throughput` measures exactly that layout: k spawned processes, each building the trainer's step
(:func:`benchmarks.harness.build_train_harness`, the memory format the trainer would use) and warming it up; then a
barrier, and every process steps for the same ``seconds``. The aggregate is every process's images over the union of
their timed windows (``time.monotonic`` is one system-wide clock on Linux, so the windows of different processes
compare), i.e. what the GPU delivered while all k were running. :func:`measure_runs_per_gpu` repeats it for each k.

Without CUDA MPS the kernels of different processes time-slice on the GPU rather than overlap; the gain then comes
from filling the gaps one process leaves (launches, host work). With MPS (``nvidia-cuda-mps-control -d``, where the
machine allows it) kernels of different processes can run at the same time; :func:`mps_running` records which of the
two a measurement had (docs/PERFORMANCE.md, "Several runs per GPU").
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from avaga_lib.config import RunConfig
from avaga_lib.runtime import synchronize
from benchmarks.harness import build_train_harness

RUNS_PER_GPU: tuple[int, ...] = (1, 2, 4, 8)  # the k measured by default (8 x 2 threads fill a 16-core host)
DEFAULT_MPS_PIPE = "/tmp/nvidia-mps"  # nvidia-cuda-mps-control's default pipe directory


def mps_running(env: dict[str, str] | None = None) -> bool:
    """Whether a CUDA MPS control daemon's pipe exists (``CUDA_MPS_PIPE_DIRECTORY``, default /tmp/nvidia-mps).

    The pipe is how CUDA clients find the daemon, so its presence is what makes this process an MPS client; it is
    a record beside the measurement, not a check that the daemon answers.
    """
    env = dict(os.environ) if env is None else env
    return (Path(env.get("CUDA_MPS_PIPE_DIRECTORY", DEFAULT_MPS_PIPE)) / "control").exists()


def _one_run(rank: int, cfg: RunConfig, device: str, batch: int, warmup: int, seconds: float, threads: int,
             barrier: Any, results: Any) -> None:
    """One of the k processes: build and warm up the step, wait for the others, step for ``seconds``, report."""
    try:
        torch.set_num_threads(threads)
        harness = build_train_harness(cfg, device, batch, n_images=4 * batch)
        for _ in range(warmup):  # lazy initialisation, cuDNN autotuning: outside the timed window
            harness.step()
        synchronize(device)
    except Exception as exc:  # noqa: BLE001 - reported by the parent (out of memory at a large k is a finding)
        barrier.abort()  # the others stop waiting for this one
        results.put({"rank": rank, "error": f"{type(exc).__name__}: {exc}",
                     "where": traceback.format_exc().strip().splitlines()[-1]})
        return
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        results.put({"rank": rank, "error": "another process failed before the timed window"})
        return
    start = time.monotonic()
    images = 0
    while time.monotonic() - start < seconds:
        harness.step()
        images += batch
    synchronize(device)  # the last step's kernels belong in the window
    results.put({"rank": rank, "images": images, "start": start, "end": time.monotonic()})


def aggregate_throughput(cfg: RunConfig, runs: int, device: str = "cuda", batch: int = 24, seconds: float = 10.0,
                         warmup: int = 3, threads: int = 2, timeout_s: float = 300.0) -> dict[str, Any]:
    """Training images/s of one device with ``runs`` processes stepping on it at once.

    Args:
        cfg: the run config each process trains (``data.image_size``, ``train.amp``, ``method``, ...).
        runs: k, processes at once.
        device: the device all k share.
        batch: images per step of each process.
        seconds: length of each process's timed window (it ends after the step that crosses it).
        warmup: untimed steps of each process before the barrier.
        threads: CPU threads of each process.
        timeout_s: the whole measurement's limit (start-up included); past it the processes are stopped.

    Returns:
        ``runs``, ``images_per_s`` (all images / union of the windows), ``per_run_images_per_s`` (each process over
        its own window), ``window_s``; or ``runs`` and ``error`` when a process failed or the limit passed.
    """
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    barrier = ctx.Barrier(runs, timeout=timeout_s)
    results = ctx.Queue()
    procs = [ctx.Process(target=_one_run, args=(rank, cfg, device, batch, warmup, seconds, threads, barrier, results),
                         daemon=True) for rank in range(runs)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    got: list[dict[str, Any]] = []
    try:
        while len(got) < runs:
            got.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
    except queue_mod.Empty:
        got.append({"rank": -1, "error": f"no result within {timeout_s:.0f} s ({len(got)} of {runs} reported)"})
    finally:
        for p in procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join()
    errors = sorted({g["error"] for g in got if "error" in g})
    if errors:
        return {"runs": runs, "error": "; ".join(errors)}
    got.sort(key=lambda g: g["rank"])
    window = max(g["end"] for g in got) - min(g["start"] for g in got)
    return {"runs": runs, "images_per_s": sum(g["images"] for g in got) / window,
            "per_run_images_per_s": [g["images"] / (g["end"] - g["start"]) for g in got], "window_s": window}


def measure_runs_per_gpu(cfg: RunConfig, ks: Sequence[int] = RUNS_PER_GPU, device: str = "cuda", batch: int = 24,
                         seconds: float = 10.0, threads: int = 2, log: Callable[[str], None] = print,
                         **kwargs: Any) -> dict[int, dict[str, Any]]:
    """:func:`aggregate_throughput` for each k of ``ks`` in turn; stops after the first k that fails (a larger one
    would fail too: out of memory, or the limit)."""
    out: dict[int, dict[str, Any]] = {}
    for k in ks:
        res = aggregate_throughput(cfg, k, device, batch, seconds, threads=threads, **kwargs)
        out[k] = res
        log(f"[gpu-study] {k} run(s) on one GPU: " + (f"{res['images_per_s']:.0f} images/s in all" if "error" not in res
                                                     else f"failed: {res['error']}"))
        if "error" in res:
            break
    return out


__all__ = ["RUNS_PER_GPU", "aggregate_throughput", "measure_runs_per_gpu", "mps_running"]
