"""AVAGA behind the models' interface: the adversarial VAE, its Grad-CAM attention map, its two settings."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from avaga_lib.config import SELFSUP_PRETRAINED, RunConfig, latent_side
from avaga_lib.models.avaga import losses
from avaga_lib.models.avaga.attention import infer
from avaga_lib.models.avaga.model import Discriminator, build_model
from avaga_lib.models.avaga.pretrain import resolve_pretrained
from avaga_lib.models.interface import BatchInference, Method, StepNets, no_weight_grads, update
from avaga_lib.runtime import autocast

_ATTENTION_UPPER = 1.0  # 1 - A and A^{c_a} lie in [0, 1]


class AVAGAMethod(Method):
    """AVAGA-R / AVAGA-D (``model.variant``), unsupervised or weakly supervised (``train.setting``)."""

    name = "avaga"
    has_attention = True
    map_upper = _ATTENTION_UPPER

    def build(self, cfg: RunConfig) -> tuple[nn.Module, nn.Module | None, list[str]]:
        """Generator and discriminator (Table 9); the encoder's initialisation is resolved here."""
        # model.pretrained=selfsup names the cached self-supervised encoder of this run's data (issue 21): made here
        # when missing, so a planned study needs no extra step
        model, notes = build_model(resolve_pretrained(cfg.model, cfg.data), cfg.data.image_size, cfg.train.setting)
        return model, Discriminator(cfg.data.image_size), list(notes)

    def train_step(self, cfg: RunConfig, nets: StepNets, x: Tensor, labels: Tensor, amp: torch.dtype | None,
                   loss_scale: float) -> dict[str, Any]:
        """The generator objective (eq. 4 or 6, with Grad-CAM) and its Adam step, then the discriminator objective
        (eq. 2) and its step when ``loss.adversarial_recon``."""
        # the bare D: G's adversarial term needs D's output, not gradients of D's weights (nor D's DDP reducer)
        with autocast(x.device, amp), no_weight_grads(nets.disc):
            g_loss, g_terms, out = losses.generator_objective(
                nets.model, nets.disc, x, labels, cfg.loss, cfg.model, cfg.train.setting
            )
        update(nets.opt_g, g_loss * loss_scale)
        terms = {f"g_{k}" if k in ("total", "loss") else k: v for k, v in g_terms.items()}
        if nets.disc_loss is not None and nets.opt_d is not None and cfg.loss.adversarial_recon:
            with autocast(x.device, amp):
                d_loss, d_terms = nets.disc_loss(x, out.recon.detach())
            update(nets.opt_d, d_loss * loss_scale)
            terms |= {k if k.startswith("d_") else f"d_{k}": v for k, v in d_terms.items()}
        return terms

    def infer(self, cfg: RunConfig, model: nn.Module, x: Tensor, amp: torch.dtype | None) -> BatchInference:
        """The attention map as inferred (1 - A unsupervised, A^{c_a} weak) and the classifier's probability."""
        with autocast(x.device, amp):
            inf = infer(model, x, cfg.model, cfg.train.setting)
        prob = None if inf.prob_anomalous is None else inf.prob_anomalous.float()
        return BatchInference(inf.recon.float(), inf.score_raw.float(), inf.amap.float()[:, 0], prob)

    def check(self, cfg: RunConfig) -> list[str]:
        """The min-max Grad-CAM test map reads the unsupervised latent map; the self-supervised encoder is a ResNet."""
        problems = []
        if cfg.model.test_map != "attention" and cfg.train.setting != "unsupervised":
            problems.append(f"model.test_map='{cfg.model.test_map}' reads the unsupervised latent Grad-CAM: it needs "
                            "train.setting=unsupervised")
        if cfg.model.pretrained == SELFSUP_PRETRAINED and cfg.model.variant != "R":
            problems.append(f"model.pretrained='{SELFSUP_PRETRAINED}' pretrains AVAGA-R's ResNet-18 encoder: it needs "
                            "model.variant=R")
        return problems

    def native_side(self, image_size: int) -> int:
        """Grad-CAM lives on the encoder's latent grid."""
        return latent_side(image_size)

    def classifies(self, setting: str) -> bool:
        """Weakly supervised AVAGA's classifier decides the image (PN 4)."""
        return setting == "weak"
