"""Peak memory of one training step, each configuration measured in a fresh python process.

A process that already ran other configurations keeps their freed heap in its RSS, which would inflate the CPU
figure; so :func:`memory_probe` starts ``python -c`` on :func:`peak_memory_of_train_step`. This module imports only
what a training step needs, since the fresh process's baseline memory is part of the figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from avaga_lib.runtime import synchronize
from benchmarks.harness import build_train_harness, variant_config
from benchmarks.machine import peak_memory_bytes, reset_peak_memory

_REPO_ROOT = Path(__file__).resolve().parents[1]  # so the child process finds `benchmarks` from any directory


def peak_memory_of_train_step(size: int, setting: str, device: str, batch: int, amp: str) -> int:
    """In this process: build one training configuration, run one step, return the peak memory in bytes."""
    dev = torch.device(device)
    h = build_train_harness(variant_config(size, setting, amp), dev, batch)
    reset_peak_memory(dev)
    h.step()
    synchronize(dev)
    return peak_memory_bytes(dev)


def memory_probe(size: int, setting: str, device: str, batch: int, amp: str = "auto") -> int:
    """Peak memory (bytes) of one training step of AVAGA at ``size`` px, measured in a fresh python process.

    Raises:
        RuntimeError: the child process failed (its stderr is in the message).
    """
    code = (
        "import json; from benchmarks.memory import peak_memory_of_train_step; "
        f"print(json.dumps(peak_memory_of_train_step({size}, {setting!r}, {device!r}, {batch}, {amp!r})))"
    )
    pythonpath = os.pathsep.join(p for p in (str(_REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe ({size} px, {setting}, {device}) failed: {out.stderr[-2000:]}")
    return int(json.loads(out.stdout.strip().splitlines()[-1]))
