"""The training data path on the device (issue 8, the GPU issue's "data resident on the GPU"), run on device "cpu".

The trainer decodes the training images once into a uint8 tensor, moves it to the training device once
(``train._training_images``) and indexes and augments each batch there (:func:`avaga_lib.data.augment_batch`). These
tests check what a run relies on: the batches are float images in [0, 1] of the training side, and with the
augmentation off they are exactly the dataset's own tensors, so the device path adds nothing but the augmentation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from avaga_lib.config import make_config
from avaga_lib.data import AnomalyDataset, augment_batch, make_splits
from avaga_lib.training import train

DEVICE = torch.device("cpu")


def _device_batch(cfg_overrides: dict[str, object], root: Path, idx: list[int]) -> tuple[torch.Tensor, object]:
    cfg = make_config("smoke", {"data.root": str(root), "data.category": "weave", "data.image_size": 64,
                                **cfg_overrides}, run="AVAGA-R_u")
    splits = make_splits(cfg.data, cfg.train.setting)
    images_u8, labels, n_normal, _ = train._training_images(cfg, splits, DEVICE)
    assert images_u8.dtype == torch.uint8 and images_u8.device == DEVICE and len(labels) == n_normal
    rows = torch.tensor(idx, device=DEVICE)
    masks = torch.zeros((len(idx), 1, 1, 1), dtype=torch.uint8, device=DEVICE)  # as the trainer: never trained on
    x, _ = augment_batch(images_u8[rows], masks, cfg.data.image_size, cfg.data.rotation_deg,
                         generator=torch.Generator(device=DEVICE).manual_seed(3))
    return x, (cfg, splits)


def test_device_batches_are_float_images_in_0_1_of_the_training_side(tiny_root: Path) -> None:
    x, _ = _device_batch({}, tiny_root, [0, 3, 1, 2])  # the profile's crop margin and +-15 degree rotation
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32 and x.device == DEVICE
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.std()) > 0


def test_without_augmentation_device_batches_equal_the_datasets_tensors(tiny_root: Path) -> None:
    idx = [4, 0, 2]
    x, (cfg, splits) = _device_batch({"data.train_resize_ratio": 1.0, "data.rotation_deg": 0.0}, tiny_root, idx)
    ds = AnomalyDataset(list(splits.train), cfg.data.image_size, train=True, resize_ratio=1.0, rotation_deg=0.0,
                        has_masks=False, geometry=cfg.data.geometry)
    expected = torch.stack([ds[i]["image"] for i in idx])  # the CPU loader's float tensors
    assert x.shape == expected.shape
    assert torch.allclose(x, expected, atol=1e-6, rtol=0), float((x - expected).abs().max())

