"""Tests of avaga_lib.models.autoencoder.model: AE shapes, a tiny overfit, SSIM against scikit-image."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from avaga_lib.models.autoencoder import model as B

skmetrics = pytest.importorskip("skimage.metrics", reason="scikit-image is a dev dependency (pip install -e .[dev])")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny convolutions: one intra-op thread avoids oversubscription stalls on a busy 2-core machine (10x)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("size", [64, 128])
def test_autoencoder_shapes_and_range(size: int) -> None:
    torch.manual_seed(0)
    ae = B.BergmannAE(size)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        z = ae.encode(x)
        r = ae(x)
    assert z.shape == (2, 100)
    assert r.shape == x.shape
    assert float(r.min()) >= 0.0 and float(r.max()) <= 1.0
    for kind in B.KINDS:
        amap = B.anomaly_map(kind, x, r)
        assert amap.shape == (2, 1, size, size)
        lo, hi = B.ANOMALY_MAP_RANGE[kind]
        assert float(amap.min()) >= lo - 1e-6 and float(amap.max()) <= hi + 1e-6
        assert B.image_score(amap).shape == (2,)
        assert torch.allclose(B.image_score(amap), amap.mean(dim=(1, 2, 3)))


def test_autoencoder_rejects_wrong_input() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        B.BergmannAE(100)
    with pytest.raises(ValueError, match="built for"):
        B.BergmannAE(64)(torch.rand(1, 3, 128, 128))
    with pytest.raises(ValueError, match="unknown"):
        B.reconstruction_loss("l1", torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize("kind", B.KINDS)
def test_overfit_one_image_loss_decreases(kind: str) -> None:
    torch.manual_seed(0)
    ae = B.BergmannAE(32)  # smallest size the AE and the 11-px SSIM window allow: keeps the test fast
    # a smooth image with structure (SSIM on pure noise is a degenerate target)
    g = torch.linspace(0, 1, 32)
    x = torch.stack(
        [g[None, :].expand(32, 32), g[:, None].expand(32, 32), (0.5 + 0.4 * torch.sin(6 * g))[None, :].expand(32, 32)]
    )
    x = x[None].clamp(0, 1)
    opt = torch.optim.Adam(ae.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = B.reconstruction_loss(kind, x, ae(x))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.6 * losses[0], losses  # measured: l2 x0.16, ssim x0.32


def _pair(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    b = np.clip(a + rng.normal(0, 0.2, shape), 0, 1)  # correlated, so SSIM is far from 0
    return a, b


def test_ssim_map_matches_skimage_per_channel_mean() -> None:
    a, b = _pair(0, (3, 40, 48))
    _, ref = skmetrics.structural_similarity(
        a, b, full=True, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0
    )
    got = B.ssim_map(torch.from_numpy(a)[None].float(), torch.from_numpy(b)[None].float())
    assert got.shape == (1, 1, 40, 48)
    np.testing.assert_allclose(got[0, 0].numpy(), ref.mean(axis=0), atol=1e-4)
    # also differentiable, and 1 for identical images
    x = torch.from_numpy(a)[None].float().requires_grad_()
    B.ssim_map(x, torch.from_numpy(b)[None].float()).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.allclose(B.ssim_map(x.detach(), x.detach()), torch.ones(1, 1, 40, 48), atol=1e-5)


def test_ssim_map_matches_skimage_gray() -> None:
    a, b = _pair(1, (2, 3, 32, 32))
    got = B.ssim_map(torch.from_numpy(a).float(), torch.from_numpy(b).float(), channels="gray")
    w = np.array([0.299, 0.587, 0.114])[None, :, None, None]
    ga, gb = (a * w).sum(1), (b * w).sum(1)
    for i in range(2):
        _, ref = skmetrics.structural_similarity(
            ga[i], gb[i], full=True, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
        np.testing.assert_allclose(got[i, 0].numpy(), ref, atol=1e-4)


def test_anomaly_maps_locate_a_defect() -> None:
    x = torch.full((1, 3, 64, 64), 0.5)
    recon = x.clone()
    recon[..., 20:30, 40:50] = 0.9  # a local reconstruction error
    for kind in B.KINDS:
        amap = B.anomaly_map(kind, x, recon)[0, 0]
        assert float(amap[25, 45]) > 10 * float(amap[5, 5]) + 1e-6
        assert float(amap[5, 5]) == pytest.approx(0.0, abs=1e-6)
