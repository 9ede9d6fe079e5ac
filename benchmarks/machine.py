"""The machine a bench runs on: backend switches, the record of what it is, and peak memory."""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any

import torch

from avaga_lib.runtime import configure_precision


def configure_backends(device: torch.device | str, threads: int | None = None) -> dict[str, Any]:
    """Set the global speed switches of a run and return what was set (for the bench record).

    CUDA: cudnn.benchmark (fixed input sizes, so autotuning pays after the first step) and the trainer's float32
    precision (:func:`avaga_lib.runtime.configure_precision`: TF32). CPU: optional thread count.
    """
    done: dict[str, Any] = {}
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithm once
        done["cudnn_benchmark"] = True
    done |= configure_precision(device)  # TF32: the trainer's and the evaluation's setting (one place, runtime.py)
    if threads is not None:
        torch.set_num_threads(threads)
    done["threads"] = torch.get_num_threads()
    return done


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on (they mean nothing without it)."""
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    with contextlib.suppress(OSError):
        info["loadavg_1min_at_start"] = os.getloadavg()[0]  # other processes share the CPU: read figures with it
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def proc_status_kb(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (e.g. ``VmHWM``), None where the file or the field is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_memory(device: torch.device | str = "cpu") -> bool:
    """Reset the peak-memory counter; returns False where it cannot (the peak then covers the whole process).

    CPU: writing ``5`` to ``/proc/self/clear_refs`` resets the RSS high-water mark (Linux >= 4.0).
    """
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory_bytes(device: torch.device | str = "cpu") -> int:
    """Peak memory since the last reset: ``torch.cuda.max_memory_allocated`` on CUDA, RSS high-water mark on CPU.

    Raises:
        RuntimeError: on CPU when ``/proc/self/status`` has no ``VmHWM`` (non-Linux).
    """
    if torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    kb = proc_status_kb("VmHWM")
    if kb is None:
        raise RuntimeError("peak_memory_bytes: /proc/self/status has no VmHWM (Linux only on CPU)")
    return kb * 1024
