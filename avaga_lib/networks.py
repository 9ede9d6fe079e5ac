"""The networks of a run: which ones a config trains, and a finished run's trained network loaded back.

Shared by the trainer, the evaluation of saved runs (threshold study, predict) and the benchmarks.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from avaga_lib.baselines import BergmannAE
from avaga_lib.checkpoint import load_checkpoint
from avaga_lib.config import RunConfig
from avaga_lib.model import Discriminator, build_model
from avaga_lib.pretrain import resolve_pretrained
from avaga_lib.runtime import configure_precision

CHECKPOINT_NAME = "checkpoint.pt"  # in the run folder, beside config.json


def build_networks(cfg: RunConfig) -> tuple[nn.Module, nn.Module | None, list[str]]:
    """Instantiate the networks of a run (on the CPU).

    Returns:
        ``(model, discriminator or None, notes)``; notes name fallbacks (e.g. no pretrained weights).
    """
    if cfg.method == "avaga":
        # model.pretrained=selfsup names the cached self-supervised encoder of this run's data (issue 21): made here
        # when missing, so a planned study needs no extra step
        model, notes = build_model(resolve_pretrained(cfg.model, cfg.data), cfg.data.image_size, cfg.train.setting)
        return model, Discriminator(cfg.data.image_size), list(notes)
    return BergmannAE(cfg.data.image_size), None, []


def load_trained(run_dir: Path | str, device: str | torch.device = "cpu") -> tuple[RunConfig, nn.Module]:
    """Load a finished run's config and trained network (eval mode) from ``config.json`` + ``checkpoint.pt``.

    Raises:
        FileNotFoundError: naming the missing file.
    """
    run_dir = Path(run_dir)
    cfg_path, ckpt_path = run_dir / "config.json", run_dir / CHECKPOINT_NAME
    for p in (cfg_path, ckpt_path):
        if not p.exists():
            raise FileNotFoundError(f"{p} missing: is {run_dir} a finished run folder (train + evaluate)?")
    # save_run adds record-only keys (device, pretrained_source) beside the config fields: drop them here
    raw = json.loads(cfg_path.read_text())
    cfg = RunConfig.from_dict({k: v for k, v in raw.items() if k in RunConfig.__dataclass_fields__})
    # the weights come from the checkpoint: never fetch pretrained ones here
    model, _, _ = build_networks(replace(cfg, model=replace(cfg.model, pretrained="none")))
    model.load_state_dict(load_checkpoint(ckpt_path)["model"])
    configure_precision(device)  # the trainer's matmul precision (predict infers through here)
    model.to(torch.device(device)).eval()
    return cfg, model
