"""Baselines of Tables 2-5 measured under the AVAGA protocol: AE-L2 and AE-SSIM (Bergmann et al. 2018).

Bergmann, Löwe, Fauser, Sattlegger, Steger, "Improving unsupervised defect segmentation by applying structural
similarity to autoencoders" (arXiv 1807.02011). Their Table 1 autoencoder, trained on normal images only with a
per-pixel L2 or an SSIM loss (window 11, their choice); the anomaly map is the squared residual (AE-L2) or
1 - SSIM (AE-SSIM). Thresholds are *not* set here: the evaluation calibrates them on the normal validation split
exactly as for AVAGA (PROTOCOL_NOTES 8).

SSIM: torchmetrics is not installed in this project's environment, so :func:`ssim_map` is our own (Wang et al.
2004, Gaussian window, population covariance), tested against ``skimage.metrics.structural_similarity``.

Precision (issue 15 row 7): the losses and maps run in float32 outside autocast and TF32
(:func:`avaga_lib.runtime.full_precision`) whatever the caller's autocast: in bf16 the SSIM blur convolutions
and the cancellation in E[x^2] - E[x]^2 gave SSIM values outside [-1, 1] and a gradient 14 % off. The
autoencoder's final sigmoid runs in float32 too.

Value ranges of :func:`anomaly_map` (for the fixed bins of ``pixel_metrics.PixelMetricAccumulator``):
``ANOMALY_MAP_RANGE`` below; L2 residuals are usually tiny, so prefer ``pixel_metrics.quantile_edges`` of the
validation maps over uniform bins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avaga_lib.runtime import full_precision

__all__ = [
    "BergmannAE",
    "ssim_map",
    "reconstruction_loss",
    "anomaly_map",
    "image_score",
    "ANOMALY_MAP_RANGE",
    "KINDS",
]

KINDS = ("l2", "ssim")
ANOMALY_MAP_RANGE: dict[str, tuple[float, float]] = {
    "l2": (0.0, 1.0),  # squared residual of images in [0, 1]
    "ssim": (0.0, 2.0),  # 1 - SSIM, SSIM in [-1, 1]
}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, as PIL's convert("L")


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)  # Bergmann et al. 2018, Sec. 4: LeakyReLU slope 0.2


class BergmannAE(nn.Module):
    """Convolutional autoencoder of Bergmann et al. 2018, Table 1, sized for 64 / 128 / 256 px inputs.

    Encoder (their Table 1, designed for 128 px): conv 4x4/2 (32), 4x4/2 (32), 3x3/1 (32), 4x4/2 (64), 3x3/1 (64),
    4x4/2 (128), 3x3/1 (64), 3x3/1 (32), then a conv to the latent vector of size ``latent_dim`` whose kernel is
    the spatial side at that point (image_size / 16: 8 at 128 px, as theirs; 4 at 64 px; 16 at 256 px). The
    decoder mirrors it with transposed convolutions. LeakyReLU(0.2) after every layer except the latent (linear
    bottleneck) and the output, which is a sigmoid (in float32, also under autocast) so reconstructions lie in
    [0, 1] like the inputs.

    Args:
        image_size: input side, a multiple of 16 (64, 128, 256). latent_dim: size of the latent vector (100 in their
        paper). in_channels: 3 for RGB (this study feeds every dataset as 3 channels), 1 for grayscale.
    """

    def __init__(self, image_size: int, latent_dim: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        if image_size % 16 != 0 or image_size < 16:
            raise ValueError(f"BergmannAE: image_size={image_size} must be a multiple of 16 (64, 128, 256)")
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.in_channels = in_channels
        side = image_size // 16  # four stride-2 convolutions
        c = in_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(c, 32, 4, 2, 1), _act(),
            nn.Conv2d(32, 32, 4, 2, 1), _act(),
            nn.Conv2d(32, 32, 3, 1, 1), _act(),
            nn.Conv2d(32, 64, 4, 2, 1), _act(),
            nn.Conv2d(64, 64, 3, 1, 1), _act(),
            nn.Conv2d(64, 128, 4, 2, 1), _act(),
            nn.Conv2d(128, 64, 3, 1, 1), _act(),
            nn.Conv2d(64, 32, 3, 1, 1), _act(),
            nn.Conv2d(32, latent_dim, side, 1, 0),  # -> (B, d, 1, 1)
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 32, side, 1, 0), _act(),
            nn.Conv2d(32, 64, 3, 1, 1), _act(),
            nn.Conv2d(64, 128, 3, 1, 1), _act(),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), _act(),
            nn.Conv2d(64, 64, 3, 1, 1), _act(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), _act(),
            nn.Conv2d(32, 32, 3, 1, 1), _act(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), _act(),
            nn.ConvTranspose2d(32, c, 4, 2, 1),  # logits; decode() applies the sigmoid in float32
        )  # fmt: skip

    def encode(self, x: Tensor) -> Tensor:
        """(B, C, S, S) in [0, 1] -> latent (B, latent_dim)."""
        return self.encoder(x).flatten(1)

    def decode(self, z: Tensor) -> Tensor:
        """Latent (B, latent_dim) -> reconstruction (B, C, S, S) in [0, 1], float32."""
        logits = self.decoder(z[:, :, None, None])
        return torch.sigmoid(logits.to(torch.promote_types(logits.dtype, torch.float32)))

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct ``x`` (B, C, S, S) in [0, 1]; returns the reconstruction, same shape, in [0, 1]."""
        if x.shape[-2:] != (self.image_size, self.image_size) or x.shape[1] != self.in_channels:
            raise ValueError(
                f"BergmannAE built for (B, {self.in_channels}, {self.image_size}, {self.image_size}) "
                f"inputs, got {tuple(x.shape)}"
            )
        return self.decode(self.encode(x))


def _gaussian_kernel1d(window: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    r = (window - 1) // 2
    t = torch.arange(-r, r + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _pad_symmetric(x: Tensor, p: int) -> Tensor:
    """Half-sample symmetric padding (``d c b a | a b c d``), as scipy.ndimage's 'reflect' used by scikit-image."""
    x = torch.cat([x[..., :p].flip(-1), x, x[..., -p:].flip(-1)], dim=-1)
    return torch.cat([x[..., :p, :].flip(-2), x, x[..., -p:, :].flip(-2)], dim=-2)


def _blur(x: Tensor, k1: Tensor) -> Tensor:
    """Separable Gaussian filter of (N, 1, H, W) with symmetric borders (output same size)."""
    p = (k1.numel() - 1) // 2
    x = _pad_symmetric(x, p)
    x = F.conv2d(x, k1.view(1, 1, 1, -1))
    return F.conv2d(x, k1.view(1, 1, -1, 1))


def _to_gray(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"channels='gray' needs 1 or 3 channels, got {x.shape[1]}")
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def ssim_map(
    x: Tensor,
    y: Tensor,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    channels: str = "mean",
) -> Tensor:
    """Per-pixel SSIM map (Wang et al. 2004) with a Gaussian window, differentiable.

    Matches ``skimage.metrics.structural_similarity(full=True, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)``: window 11 (= 2 * int(3.5 * 1.5 + 0.5) + 1, Bergmann et al.'s
    window), K1 = 0.01, K2 = 0.03, population covariance, symmetric borders so the map covers the whole image.

    Args:
        x: (B, C, H, W) images in [0, data_range]. y: same shape. window: odd Gaussian window side (11 as Bergmann et
        al.). sigma: Gaussian standard deviation (1.5, Wang et al. 2004). data_range: dynamic range of the images (1 for
        [0, 1]). channels: ``"mean"`` = SSIM map of each channel, averaged (skimage with ``channel_axis``, then mean
        over
            channels); ``"gray"`` = SSIM of the BT.601 luma of both images.

    Returns:
        (B, 1, H, W) float32 SSIM map in [-1, 1], computed in float32 outside autocast (and TF32).
    """
    with full_precision(x.device):
        return _ssim_map(_at_least_f32(x), _at_least_f32(y), window, sigma, data_range, channels)


def _at_least_f32(t: Tensor) -> Tensor:
    """float32 for half / bf16 inputs; float64 stays float64."""
    return t if t.dtype == torch.float64 else t.float()


def _ssim_map(x: Tensor, y: Tensor, window: int, sigma: float, data_range: float, channels: str) -> Tensor:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim_map: x {tuple(x.shape)} and y {tuple(y.shape)} must be equal (B, C, H, W) shapes")
    if window % 2 != 1 or min(x.shape[-2:]) < window:
        raise ValueError(f"ssim_map: window={window} must be odd and <= the image side {tuple(x.shape[-2:])}")
    if channels == "gray":
        x, y = _to_gray(x), _to_gray(y)
    elif channels != "mean":
        raise ValueError(f"ssim_map: channels='{channels}' unknown; choose 'mean' or 'gray'")
    b, c, h, w = x.shape
    x = x.reshape(b * c, 1, h, w)
    y = y.reshape(b * c, 1, h, w)
    k1 = _gaussian_kernel1d(window, sigma, x.device, x.dtype)
    c1 = (0.01 * data_range) ** 2  # K1 = 0.01 (Wang et al. 2004)
    c2 = (0.03 * data_range) ** 2  # K2 = 0.03 (Wang et al. 2004)
    # one blur call for the five moments (batched along dim 0)
    mom = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=0), k1)
    ux, uy, uxx, uyy, uxy = mom.split(b * c, dim=0)
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(b, c, h, w).mean(dim=1, keepdim=True)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"baseline kind '{kind}' unknown; choose one of {KINDS} (config method ae_l2 / ae_ssim)")


def reconstruction_loss(kind: str, x: Tensor, recon: Tensor) -> Tensor:
    """Training loss of the baseline: ``"l2"`` = mean squared error; ``"ssim"`` = 1 - mean SSIM map.

    Args:
        kind: ``"l2"`` (AE-L2) or ``"ssim"`` (AE-SSIM). x: (B, C, H, W) input in [0, 1]. recon: reconstruction, same
        shape.

    Returns:
        Scalar loss (mean per element and image, PROTOCOL_NOTES 5).
    """
    _check_kind(kind)
    with full_precision(x.device):
        if kind == "l2":
            return F.mse_loss(recon.float(), x.float())
        return 1.0 - ssim_map(x, recon).mean()


def anomaly_map(kind: str, x: Tensor, recon: Tensor) -> Tensor:
    """Per-pixel anomaly map of the baseline, (B, 1, H, W), higher = more anomalous.

    ``"l2"``: squared residual (x - recon)^2 averaged over channels, in [0, 1]. ``"ssim"``: 1 - SSIM map (channel mean),
    in [0, 2].

    Args:
        kind: ``"l2"`` or ``"ssim"``. x: (B, C, H, W) input in [0, 1]. recon: reconstruction, same shape.
    """
    _check_kind(kind)
    with full_precision(x.device):
        if kind == "l2":
            return (x.float() - recon.float()).pow(2).mean(dim=1, keepdim=True)
        return 1.0 - ssim_map(x, recon)


def image_score(amap: Tensor) -> Tensor:
    """Image anomaly score of a baseline: the mean of its anomaly map (B, 1, H, W) -> (B,).

    The mean mirrors AVAGA's detection score (mean pixel-wise difference, PROTOCOL_NOTES 8) so both are
    calibrated by the same code on the normal validation split.
    """
    return amap.flatten(1).mean(dim=1)
