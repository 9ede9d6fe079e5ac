"""AE-L2 and AE-SSIM behind the models' interface: the autoencoder, its reconstruction loss, its residual map."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from avaga_lib.config import SELFSUP_PRETRAINED, RunConfig
from avaga_lib.models.autoencoder.model import BergmannAE, anomaly_map, image_score, reconstruction_loss
from avaga_lib.models.interface import BatchInference, Method, StepNets, update
from avaga_lib.runtime import autocast

# baselines: residual maps never exceed 2 (L2 <= 1, 1 - SSIM <= 2); the top of their pixel bins
_MAP_UPPER = 2.0


class AutoencoderMethod(Method):
    """A Bergmann et al. autoencoder whose map is a reconstruction residual of kind ``l2`` or ``ssim``."""

    has_attention = False
    map_upper = _MAP_UPPER

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"ae_{kind}"

    def build(self, cfg: RunConfig) -> tuple[nn.Module, nn.Module | None, list[str]]:
        """The autoencoder alone (no discriminator, nothing to fall back on)."""
        return BergmannAE(cfg.data.image_size), None, []

    def train_step(self, cfg: RunConfig, nets: StepNets, x: Tensor, labels: Tensor, amp: torch.dtype | None,
                   loss_scale: float) -> dict[str, Any]:
        """The reconstruction loss (float32, outside autocast) and one Adam step."""
        with autocast(x.device, amp):
            recon = nets.model(x)
        loss = reconstruction_loss(self.kind, x, recon)
        update(nets.opt_g, loss * loss_scale)
        return {"loss": loss.detach()}

    def infer(self, cfg: RunConfig, model: nn.Module, x: Tensor, amp: torch.dtype | None) -> BatchInference:
        """Only the forward under autocast; the residual map and its mean (the image score) in float32."""
        model.eval()
        with torch.no_grad(), autocast(x.device, amp):
            recon = model(x).float()
        with torch.no_grad():
            raw = anomaly_map(self.kind, x, recon).float()
            if raw.ndim == 4:
                raw = raw[:, 0]
            score = image_score(raw).float().reshape(-1)
        return BatchInference(recon, score, raw, None)

    def check(self, cfg: RunConfig) -> list[str]:
        """The attention-only keys: a residual map has no Grad-CAM test map and no ResNet encoder to pretrain."""
        problems = []
        if cfg.model.test_map != "attention":
            problems.append(f"model.test_map='{cfg.model.test_map}' reads AVAGA's latent Grad-CAM: it needs "
                            "method=avaga")
        if cfg.model.pretrained == SELFSUP_PRETRAINED:
            problems.append(f"model.pretrained='{SELFSUP_PRETRAINED}' pretrains AVAGA-R's ResNet-18 encoder: it needs "
                            "method=avaga and model.variant=R")
        return problems

    def native_side(self, image_size: int) -> int:
        """Residuals are per pixel: the image's own grid."""
        return image_size
