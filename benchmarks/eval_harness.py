"""What the evaluation benchmark runs: one test batch through ``avaga_lib.evaluation.evaluate.infer_batch`` (Grad-CAM
maps)
and the metrics the evaluation streams, on random uint8 images with masks (no dataset on disk)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from avaga_lib.config import RunConfig
from avaga_lib.evaluation.evaluate import infer_batch
from avaga_lib.evaluation.metrics import binarize, iou_per_image
from avaga_lib.evaluation.pixel_metrics import PixelMetricAccumulator
from avaga_lib.models.avaga.model import build_model
from benchmarks.harness import synthetic_u8


@dataclass
class EvalHarness:
    """One evaluation batch: ``evaluate.infer_batch`` (Grad-CAM maps) + streamed pixel metrics + IoU at the
    threshold, as the evaluation computes them."""

    cfg: RunConfig
    device: torch.device
    model: nn.Module
    images: Tensor
    masks: Tensor

    def step(self) -> int:
        """Copy a uint8 batch to the device, infer, accumulate metrics; returns the number of images processed."""
        x = self.images.to(self.device, non_blocking=True).float().div_(255.0)
        amap = infer_batch(self.cfg, self.model, x, None).amap
        acc = PixelMetricAccumulator(bins=self.cfg.eval.pixel_bins, max_fpr=self.cfg.eval.aupro_max_fpr)
        acc.update(amap, self.masks)
        iou_per_image(binarize(amap, self.cfg.eval.threshold), self.masks)
        return int(x.shape[0])


def build_eval_harness(cfg: RunConfig, device: torch.device | str, batch_size: int) -> EvalHarness:
    """An eval-mode AVAGA of ``cfg`` (random init) and one batch of test-sized uint8 images with masks."""
    device = torch.device(device)
    size = cfg.data.image_size
    model, _ = build_model(replace(cfg.model, pretrained="none"), size, cfg.train.setting)
    fmt = torch.channels_last if cfg.train.channels_last and device.type == "cuda" else torch.preserve_format
    model = model.to(device=device, memory_format=fmt).eval()
    images, masks, _ = synthetic_u8(batch_size, size, seed=1)
    if device.type == "cuda":
        images = images.pin_memory()
    return EvalHarness(cfg, device, model, images, masks)
