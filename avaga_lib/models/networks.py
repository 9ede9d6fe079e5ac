"""The networks of a run: which ones a config trains, and a finished run's trained network loaded back.

Shared by the trainer, the evaluation of saved runs (threshold study, predict) and the benchmarks.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from avaga_lib.config import RunConfig
from avaga_lib.models.registry import check_config, method_of
from avaga_lib.run_folder import RunFolder, load_checkpoint
from avaga_lib.runtime import configure_precision


def build_networks(cfg: RunConfig) -> tuple[nn.Module, nn.Module | None, list[str]]:
    """Instantiate the networks of a run (on the CPU).

    Returns:
        ``(model, discriminator or None, notes)``; notes name fallbacks (e.g. no pretrained weights).
    """
    check_config(cfg)
    return method_of(cfg.method).build(cfg)


def load_trained(run_dir: Path | str, device: str | torch.device = "cpu") -> tuple[RunConfig, nn.Module]:
    """Load a finished run's config and trained network (eval mode) from ``config.json`` + ``checkpoint.pt``.

    Raises:
        FileNotFoundError: naming the missing file.
    """
    folder = RunFolder(run_dir)
    ckpt_path = folder.checkpoint_path
    for p in (folder.config_path, ckpt_path):
        if not p.exists():
            raise FileNotFoundError(f"{p} missing: is {folder.path} a finished run folder (train + evaluate)?")
    cfg = folder.load_config()
    # the weights come from the checkpoint: never fetch pretrained ones here
    model, _, _ = build_networks(replace(cfg, model=replace(cfg.model, pretrained="none")))
    model.load_state_dict(load_checkpoint(ckpt_path)["model"])
    configure_precision(device)  # the trainer's matmul precision (predict infers through here)
    model.to(torch.device(device)).eval()
    return cfg, model
