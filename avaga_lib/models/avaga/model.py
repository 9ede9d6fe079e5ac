"""Networks of the AVAGA paper (Table 9) and its ablation variants, as pure ``nn.Module``s.

* ``AVAGA``: the convolutional adversarial VAE (CAVAE). Variant ``R``: ResNet-18 convolution layers (Table 9, encoder
  layers 1-18) -> ReLU (layer 19) -> two 1x1 convs giving ``mu`` and ``logvar`` (layers 20-21), latent
  ``512 x S/32 x S/32``; residual decoder of Table 9. Variant ``D``: DCGAN encoder / generator (Radford et al. 2015)
  with the same latent shape and the same ReLU + 1x1 heads, random init (no public Celeb-A weights, PN 7).
  ``latent="flat"``: the Sec. 5 ablation (flatten -> FC latent of dim 100 -> FC back to the conv shape).
  ``classifier=True`` (weak setting): flatten z -> Linear -> 2 logits (index 0 normal c_n, 1 anomalous c_a; PN 4).
* ``Discriminator``: the DCGAN patch discriminator of Table 9; ``forward`` returns the mean patch probability
  (PN 6), ``forward_logits`` the patch logits (losses use BCE with logits for numerical safety).

Every network accepts any input side that is a multiple of 32 (64, 128, 256). The model takes images in [0, 1];
the ImageNet normalisation happens inside ``forward``.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights, resnet18

from avaga_lib.config import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision ImageNet statistics (the ResNet-18 weights expect them)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOWNSAMPLING = 32  # ResNet-18 / DCGAN encoder stride: latent side = S / 32 (8 at 256 px, Table 9)
NOTE_NO_PRETRAINED = "pretrained weights unavailable: random init"
NOTE_DCGAN_RANDOM = "AVAGA-D: no public Celeb-A DCGAN weights: random init (PN 7)"


@dataclass
class AVAGAOutput:
    """Everything one forward pass produces (the attention and the losses read from it).

    Attributes:
        features: encoder feature map F after the ReLU (input of the mu / logvar heads), (B, 512, s, s).
        mu: latent mean, (B, C, s, s) for the conv latent, (B, flat_dim) for the flat one. logvar: latent log-variance,
        same shape as ``mu``. z: latent sample (reparameterised in training, ``mu`` at eval), same shape as ``mu``.
        recon: reconstruction in [0, 1], (B, 3, S, S), float32: the sigmoid of ``recon_logits`` computed in float32
            (under bf16 autocast a bf16 sigmoid returns exactly 1.0 from logit 6.3 on, issue 15 row 8).
        logits: classifier logits (B, 2) (index 0 normal, 1 anomalous), None without classifier. recon_logits: the
        decoder's output before its final sigmoid (Table 9 layer 26), what eq. 1's BCE reads
            (BCE with logits, float32); None only for outputs built by hand without it.
    """

    features: Tensor
    mu: Tensor
    logvar: Tensor
    z: Tensor
    recon: Tensor
    logits: Tensor | None
    recon_logits: Tensor | None = None


class SkipAdd(nn.Module):
    """The residual sum of Table 9 ("output layer 1 + output layer 6") as a module, so hooks see it."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Return ``a + b``."""
        return a + b


class ResidualUpBlock(nn.Module):
    """Table 9 decoder block: ConvTr 4x4 s2 -> BN -> ReLU -> Conv 3x3 -> BN -> ReLU, plus skip from the ConvTr."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)  # Table 9: 4x4, stride 2, pad 1 (doubles the side)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(c_out, c_out, 3, 1, 1)  # Table 9: 3x3, stride 1, pad 1
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=False)
        self.skip = SkipAdd()

    def forward(self, x: Tensor) -> Tensor:
        """Upsample by 2 and refine; the skip starts at the upsampling output (Sec. 3)."""
        u = self.up(x)
        h = self.relu2(self.bn2(self.conv(self.relu1(self.bn1(u)))))
        return self.skip(u, h)


class ResidualDecoder(nn.Module):
    """Residual decoder of Table 9 generalised to any side: 4 residual up blocks then ConvTr to 3 channels.

    ``forward`` returns the logits; the final Sigmoid (layer 26, ``self.sigmoid``) is applied by ``AVAGA.forward``
    in float32, and the reconstruction loss reads the logits (BCE with logits).
    """

    def __init__(self, latent_channels: int = 512) -> None:
        super().__init__()
        widths = (512, 256, 128, 64)  # Table 9 decoder layers 1, 7, 13, 19
        blocks = []
        c_in = latent_channels
        for w in widths:
            blocks.append(ResidualUpBlock(c_in, w))
            c_in = w
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.ConvTranspose2d(c_in, 3, 4, 2, 1)  # Table 9 layer 25
        self.sigmoid = nn.Sigmoid()  # Table 9 layer 26: reconstruction in [0, 1], applied by AVAGA.forward

    def forward(self, z: Tensor) -> Tensor:
        """Decode a conv latent (B, C, s, s) into image logits (B, 3, 32 s, 32 s) (sigmoid not applied)."""
        return self.out(self.blocks(z))


class DCGANGenerator(nn.Module):
    """DCGAN generator (Radford et al. 2015): 4 x [ConvTr 4x4 s2, BN, ReLU] then ConvTr to 3 channels.

    The last activation is a Sigmoid instead of DCGAN's Tanh, so the reconstruction is in [0, 1] like the input
    (eq. 1); as in :class:`ResidualDecoder`, ``forward`` returns the logits and ``AVAGA.forward`` applies it.
    """

    def __init__(self, latent_channels: int = 512) -> None:
        super().__init__()
        widths = (512, 256, 128, 64)  # DCGAN halves the width at each doubling; same widths as Table 9's decoder
        layers: list[tuple[str, nn.Module]] = []
        c_in = latent_channels
        for i, w in enumerate(widths, start=1):
            layers += [
                (f"up{i}", nn.ConvTranspose2d(c_in, w, 4, 2, 1, bias=False)),  # DCGAN: no bias before BN
                (f"bn{i}", nn.BatchNorm2d(w)),
                (f"relu{i}", nn.ReLU(inplace=False)),
            ]
            c_in = w
        layers += [("out", nn.ConvTranspose2d(c_in, 3, 4, 2, 1, bias=False)), ("sigmoid", nn.Sigmoid())]
        self.net = nn.Sequential(OrderedDict(layers))

    @property
    def sigmoid(self) -> nn.Module:
        """The final Sigmoid (kept inside ``net`` so parameter and hook names stay as they were)."""
        return self.net.sigmoid

    def forward(self, z: Tensor) -> Tensor:
        """Decode (B, C, s, s) into image logits (B, 3, 32 s, 32 s) (sigmoid not applied)."""
        return self.net[:-1](z)


def _dcgan_encoder_body() -> nn.Sequential:
    """DCGAN discriminator trunk used as encoder: 5 x Conv 4x4 s2 (BN from the 2nd, LeakyReLU 0.2 except the last).

    The last conv is followed by BN only; the shared encoder head then applies the ReLU of Table 9 layer 19.
    """
    widths = (64, 128, 256, 512, 512)  # DCGAN widths, ending at the 512 channels of Table 9's latent
    layers: list[tuple[str, nn.Module]] = []
    c_in = 3
    for i, w in enumerate(widths, start=1):
        layers.append((f"conv{i}", nn.Conv2d(c_in, w, 4, 2, 1, bias=False)))  # stride 2: S -> S/32 after 5
        if i > 1:
            layers.append((f"bn{i}", nn.BatchNorm2d(w)))  # DCGAN: no BN on the first layer
        if i < len(widths):
            layers.append((f"lrelu{i}", nn.LeakyReLU(0.2, inplace=False)))  # DCGAN slope 0.2
        c_in = w
    return nn.Sequential(OrderedDict(layers))


def _imagenet_checkpoint_path() -> Path:
    """Where torchvision's hub cache keeps ``ResNet18_Weights.IMAGENET1K_V1`` (checked, never downloaded)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)


def _load_resnet_state(path: Path) -> dict[str, Tensor]:
    """Read a ResNet-18 state dict from ``path`` (a plain state dict or a checkpoint holding ``state_dict``)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"cannot read ResNet-18 weights from '{path}': {exc}; expected a torch state dict") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"'{path}' does not hold a state dict (got {type(obj).__name__}); expected ResNet-18 weights")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _resnet18_body(pretrained: str) -> tuple[nn.Sequential, str, list[str]]:
    """ResNet-18 convolution layers (conv1 .. layer4, no avgpool / fc) with the weights PN 7 asks for.

    Returns:
        (body, source, notes): source is "imagenet", "none" or the path; notes list fallbacks.
    """
    net = resnet18(weights=None)
    notes: list[str] = []
    source = "none"
    state: dict[str, Tensor] | None = None
    if pretrained == "imagenet":
        ckpt = _imagenet_checkpoint_path()
        if ckpt.is_file():
            state = _load_resnet_state(ckpt)
            source = "imagenet"
        else:
            warnings.warn(
                f"ResNet-18 ImageNet weights not in the torch hub cache ({ckpt}); random init (no download offline)",
                stacklevel=3,
            )
            notes.append(NOTE_NO_PRETRAINED)
    elif pretrained not in ("none", ""):
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"model.pretrained='{pretrained}': no such file; expected a ResNet-18 state dict")
        state = _load_resnet_state(path)
        source = str(path)
    if state is not None:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier head is not used
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(
                f"ResNet-18 weights from '{source if source != 'imagenet' else _imagenet_checkpoint_path()}' do not "
                f"match torchvision's resnet18: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    body = nn.Sequential(
        OrderedDict(
            (name, getattr(net, name))
            for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        )
    )
    return body, source, notes


class AVAGA(nn.Module):
    """The CAVAE of Table 9 (R or D variant, conv or flat latent, optional classifier head).

    Attributes:
        pretrained_source: what the encoder was initialised from ("imagenet", "none" or a path). init_notes: fallbacks
        that happened at construction (recorded in the run config by ``build_model``).
    """

    def __init__(self, cfg: ModelConfig, image_size: int, classifier: bool) -> None:
        super().__init__()
        if image_size % DOWNSAMPLING != 0:
            raise ValueError(f"image_size={image_size} must be a multiple of 32 (64, 128, 256)")
        if cfg.variant not in ("R", "D"):
            raise ValueError(f"model.variant '{cfg.variant}' unknown; choose R or D")
        if cfg.latent not in ("conv", "flat"):
            raise ValueError(f"model.latent '{cfg.latent}' unknown; choose conv or flat")
        self.cfg = cfg
        self.image_size = image_size
        self.side = image_size // DOWNSAMPLING  # latent side s
        self.latent = cfg.latent
        self.init_notes: list[str] = []
        c = cfg.latent_channels
        feat_c = 512  # ResNet-18 layer4 / DCGAN trunk width
        if cfg.variant == "R":
            self.body, self.pretrained_source, notes = _resnet18_body(cfg.pretrained)
            self.init_notes += notes
        else:
            self.body = _dcgan_encoder_body()
            self.pretrained_source = "none"
            self.init_notes.append(NOTE_DCGAN_RANDOM)
        self.register_buffer("img_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("img_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.relu = nn.ReLU(inplace=False)  # Table 9 encoder layer 19
        n_flat_feat = feat_c * self.side * self.side  # 32768 at 256 px (Table 9 W.S. layer 22)
        if cfg.latent == "conv":
            self.mu = nn.Conv2d(feat_c, c, 1, 1, 0)  # Table 9 layer 20
            self.logvar = nn.Conv2d(feat_c, c, 1, 1, 0)  # Table 9 layer 21
            self.fc_dec: nn.Linear | None = None
            cls_in = c * self.side * self.side
        else:
            self.mu = nn.Linear(n_flat_feat, cfg.flat_dim)  # Sec. 5: FC latent of dimension 100
            self.logvar = nn.Linear(n_flat_feat, cfg.flat_dim)
            self.fc_dec = nn.Linear(cfg.flat_dim, c * self.side * self.side)  # back to the conv shape for the decoder
            cls_in = cfg.flat_dim
        self.decoder: nn.Module = ResidualDecoder(c) if cfg.variant == "R" else DCGANGenerator(c)
        self.classifier: nn.Sequential | None = None
        if classifier:
            # Table 9 W.S. layers 22-23 (flatten, Linear 2); the softmax of layer 24 is applied by losses / infer.
            self.classifier = nn.Sequential(OrderedDict([("flatten", nn.Flatten()), ("linear", nn.Linear(cls_in, 2))]))

    def encode(self, x: Tensor) -> Tensor:
        """Encoder feature map F (after Table 9 layer 19's ReLU) of images in [0, 1]."""
        x = (x - self.img_mean) / self.img_std  # ImageNet normalisation inside the model (input in [0, 1])
        return self.relu(self.body(x))

    def forward(self, x: Tensor) -> AVAGAOutput:
        """Encode, sample (reparameterisation in training, z = mu at eval), decode and classify.

        Args:
            x: images (B, 3, S, S) in [0, 1], S = ``image_size`` (any multiple of 32 works).
        """
        feats = self.encode(x)
        if self.latent == "conv":
            mu, logvar = self.mu(feats), self.logvar(feats)
        else:
            flat = feats.flatten(1)
            mu, logvar = self.mu(flat), self.logvar(flat)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterisation (Kingma & Welling)
        else:
            z = mu  # test time: the mean (Sec. 2.1.1)
        if self.fc_dec is not None:
            s = feats.shape[-1]
            dec_in = self.fc_dec(z).view(z.shape[0], -1, s, s)
        else:
            dec_in = z
        recon_logits = self.decoder(dec_in)
        wide = torch.promote_types(recon_logits.dtype, torch.float32)  # bf16 under autocast -> float32 (issue 15)
        recon = self.decoder.sigmoid(recon_logits.to(wide))
        logits = self.classifier(z) if self.classifier is not None else None
        return AVAGAOutput(features=feats, mu=mu, logvar=logvar, z=z, recon=recon, logits=logits,
                           recon_logits=recon_logits)


class Discriminator(nn.Module):
    """DCGAN patch discriminator of Table 9: 5 x Conv 4x4 s2 (BN from the 2nd, LeakyReLU 0.2), Sigmoid.

    At 256 px its output is 8x8x512 patch probabilities; ``forward`` averages them into one probability per image
    (PN 6). The losses use ``forward_logits`` with BCE-with-logits per patch (numerically safe; same value as the
    BCE of the patch probabilities).
    """

    def __init__(self, image_size: int = 256) -> None:
        super().__init__()
        if image_size % DOWNSAMPLING != 0:
            raise ValueError(f"image_size={image_size} must be a multiple of 32 (64, 128, 256)")
        widths = (64, 128, 256, 512, 512)  # Table 9 discriminator layers 1, 3, 6, 9, 12
        layers: list[tuple[str, nn.Module]] = []
        c_in = 3
        for i, w in enumerate(widths, start=1):
            layers.append((f"conv{i}", nn.Conv2d(c_in, w, 4, 2, 1)))
            if 1 < i < len(widths):
                layers.append((f"bn{i}", nn.BatchNorm2d(w)))
            if i < len(widths):
                layers.append((f"lrelu{i}", nn.LeakyReLU(0.2, inplace=False)))  # Table 9: Leaky ReLU (0.2)
            c_in = w
        self.net = nn.Sequential(OrderedDict(layers))
        self.sigmoid = nn.Sigmoid()  # Table 9 layer 13

    def forward_logits(self, x: Tensor) -> Tensor:
        """Patch logits (B, 512, S/32, S/32) of images in [0, 1]."""
        return self.net(x * 2.0 - 1.0)  # DCGAN convention: inputs in [-1, 1]

    def forward(self, x: Tensor, logits: bool = False) -> Tensor:
        """Probability that each image is real, (B,): the mean of the patch probabilities (PN 6).

        Args:
            x: images in [0, 1]. logits: return the patch logits instead (what the losses use; through ``__call__`` so
            wrappers such as
                ``torch.compile`` or DDP see the call).
        """
        if logits:
            return self.forward_logits(x)
        return self.sigmoid(self.forward_logits(x)).flatten(1).mean(1)


def build_model(cfg: ModelConfig, image_size: int, setting: str) -> tuple[AVAGA, list[str]]:
    """Build the AVAGA network for a setting; the weak setting adds the classifier head.

    Args:
        cfg: model configuration. image_size: input side (multiple of 32). setting: "unsupervised" or "weak".

    Returns:
        (model, notes): notes are fallbacks to record in the run config (e.g. ``NOTE_NO_PRETRAINED``).
    """
    if setting not in ("unsupervised", "weak"):
        raise ValueError(f"setting '{setting}' unknown; choose unsupervised or weak")
    model = AVAGA(cfg, image_size, classifier=setting == "weak")
    return model, list(model.init_notes)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
