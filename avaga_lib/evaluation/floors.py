"""Floors every localization claim must clear (issue 26): maps that learn nothing about defects, scored like a run's.

On real data such maps score surprisingly well (Magnetic Tile, 128 px, pixel AUROC: raw intensity 0.542, an untrained
random-init ResNet-18's channel mean 0.532, the centred Gaussian 0.475), so a method is credited with localization
only when its map beats every floor, as it must beat the position priors of :mod:`avaga_lib.evaluation.priors`:

* ``floor_intensity`` / ``floor_intensity_inv``: the channel-mean intensity of the image in [0, 1], and 1 - that.
  Whether defects are brighter or darker than their surroundings is a property of the dataset that only the test
  masks reveal, so both directions are reported and neither is chosen here (choosing would read test labels).
* ``floor_train_residual``: |x - m| averaged over channels, m the per-pixel mean of the normal **training** images
  (:class:`TrainMean`): the reconstruction error of a "model" that always outputs the mean training image.
* ``floor_untrained``: the run's own network at the initialisation the trainer starts from (same seed, same
  construction: :func:`untrained_model`), mapped by the evaluator's own map function (:func:`untrained_map`): what
  the architecture and the map's arithmetic give before any training step.

Every floor is label-free: the image itself, the training images and the seed, never a test label or mask. Maps are
float32 (B,H,W) numpy, higher = more anomalous, from uint8 (B,3,H,W) image batches in the evaluator's test geometry
(``AnomalyDataset.images``); the evaluator places each floor's bin edges and label-free threshold on its normal
validation maps with the upper bound :func:`floor_upper` gives, exactly as for the run's map.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

import numpy as np
import torch
from torch import Tensor, nn

from avaga_lib.config import RunConfig
from avaga_lib.data import AnomalyDataset, ImageRecord
from avaga_lib.evaluation.localization import recon_error_map
from avaga_lib.models.networks import build_networks
from avaga_lib.runtime import iterate_batches, seed_rngs

__all__ = ["FLOORS", "FLOOR_REASONS", "FLOOR_UPPER", "FloorMaps", "InferMap", "TrainMean", "floor_map_fn",
           "floor_upper", "image_floor_maps", "intensity_map", "inverse_intensity_map", "train_mean_image",
           "train_residual_map", "untrained_map", "untrained_model"]

FLOORS: tuple[str, ...] = ("floor_intensity", "floor_intensity_inv", "floor_train_residual", "floor_untrained")
FLOOR_REASONS: Mapping[str, str] = MappingProxyType({
    "floor_intensity": "brightness alone: defects brighter than their surroundings score without any learning",
    "floor_intensity_inv": "darkness alone: the same floor for defects darker than their surroundings",
    "floor_train_residual": "distance to the mean normal training image: no network, one average",
    "floor_untrained": "the run's own network and map function at its initial weights: whatever training did not add",
})
# Largest value each map can take (the top of its pixel-metric bins). None: the method's own map upper, which only
# the evaluator knows (AVAGA's attention maps and the baselines' residuals differ), see floor_upper.
FLOOR_UPPER: Mapping[str, float | None] = MappingProxyType({
    "floor_intensity": 1.0,  # channel mean of [0, 1] images
    "floor_intensity_inv": 1.0,
    "floor_train_residual": 1.0,  # |x - m| of [0, 1] images
    "floor_untrained": None,
})

InferMap = Callable[[nn.Module, Tensor], Tensor]
"""``infer(model, x) -> (B,H,W) map`` of images ``x`` (B,3,H,W) in [0, 1] on the model's device: the evaluator's
map function (``avaga_lib.evaluation.evaluate.infer_batch``'s ``raw_map``), passed in because the evaluator sits above
this
module in the layer contract (``.importlinter``)."""
FloorMaps = Callable[[Tensor], dict[str, np.ndarray]]
"""uint8 images (B,3,H,W) -> floor name -> float32 (B,H,W) map (the evaluator's ``ExtraMaps``)."""
_MEAN_BATCH = 64  # images per batch while averaging the training images (they are decoded once, in memory)


def floor_upper(name: str, map_upper: float) -> float:
    """Largest value the floor ``name`` can take, for its histogram bin edges.

    Args:
        name: one of :data:`FLOORS`. map_upper: the upper bound the evaluator uses for the run's own map (AVAGA 1.0, the
        baselines 2.0): the
            untrained network's map is that same map function, so it shares its bound.

    Raises:
        ValueError: an unknown floor.
    """
    if name not in FLOOR_UPPER:
        raise ValueError(f"floor '{name}' unknown; choose one of {FLOORS}")
    upper = FLOOR_UPPER[name]
    return map_upper if upper is None else upper


def _check_images(images_u8: Tensor) -> None:
    """Reject anything but the evaluator's uint8 (B,C,H,W) batches (a float batch in [0, 1] would score as ~0)."""
    if not isinstance(images_u8, Tensor) or images_u8.dtype != torch.uint8 or images_u8.ndim != 4:
        shape = tuple(images_u8.shape) if hasattr(images_u8, "shape") else type(images_u8).__name__
        dtype = getattr(images_u8, "dtype", None)
        raise ValueError(f"expected a uint8 torch tensor (B,3,H,W) as AnomalyDataset.images holds, got {dtype} {shape}")


# --------------------------------------------------------------------------------------------- image-only floors


def intensity_map(images_u8: Tensor) -> np.ndarray:
    """Channel-mean intensity in [0, 1]: anomalous = bright.

    Which of this and :func:`inverse_intensity_map` scores higher on a dataset needs its test masks; both are
    reported, so neither direction is picked with test labels.

    Args:
        images_u8: uint8 images (B,3,H,W), any device.

    Returns:
        float32 (B,H,W) in [0, 1].
    """
    _check_images(images_u8)
    return (images_u8.detach().cpu().float().mean(dim=1) / 255.0).numpy()


def inverse_intensity_map(images_u8: Tensor) -> np.ndarray:
    """1 - :func:`intensity_map`: anomalous = dark (both directions are reported; which wins needs test labels).

    Args:
        images_u8: uint8 images (B,3,H,W), any device.

    Returns:
        float32 (B,H,W) in [0, 1].
    """
    return (1.0 - intensity_map(images_u8)).astype(np.float32)


class TrainMean:
    """Per-pixel mean of the normal training images (uint8, the test geometry), fed batch by batch.

    The sum is kept as exact integers, so the mean does not depend on the batch size or order. Feed it the normal
    training images only (``splits.train``, never the validation, weak or test images): the floor must be
    label-free and must not have seen the images it is scored on.
    """

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self.n_images = 0

    def update(self, images_u8: Tensor) -> None:
        """Add a batch of uint8 images (B,3,H,W), any device.

        Raises:
            ValueError: not a uint8 (B,C,H,W) tensor, or a shape other than the batches before.
        """
        _check_images(images_u8)
        batch = images_u8.detach().cpu().to(torch.int64).sum(dim=0).numpy()
        if self._sum is None:
            self._sum = np.zeros_like(batch)
        if self._sum.shape != batch.shape:
            raise ValueError(f"TrainMean.update: images of shape {batch.shape} after {self._sum.shape}")
        self._sum += batch
        self.n_images += int(images_u8.shape[0])

    def result(self) -> np.ndarray:
        """The mean image, float32 (3,H,W) in [0, 1].

        Raises:
            ValueError: no image was added.
        """
        if self._sum is None or self.n_images == 0:
            raise ValueError("TrainMean: no training image added (the training split is empty)")
        return (self._sum / self.n_images / 255.0).astype(np.float32)


def train_mean_image(cfg: RunConfig, records: list[ImageRecord]) -> np.ndarray:
    """:class:`TrainMean` of the normal training images ``records`` in the evaluator's test geometry.

    Args:
        cfg: the run config (image size, geometry). records: ``splits.train`` (normal training images; the validation,
        weak and test images stay out).

    Returns:
        float32 (3,H,W) in [0, 1].
    """
    ds = AnomalyDataset(list(records), cfg.data.image_size, train=False, has_masks=False, geometry=cfg.data.geometry)
    acc = TrainMean()
    for sl in iterate_batches(len(ds), _MEAN_BATCH):
        acc.update(ds.images[sl])
    return acc.result()


def train_residual_map(images_u8: Tensor, mean_image: np.ndarray) -> np.ndarray:
    """|x - m| averaged over channels, m = :meth:`TrainMean.result`.

    The reconstruction error (:func:`avaga_lib.evaluation.localization.recon_error_map`, the function the evaluator
    scores ``recon`` with) of a model whose reconstruction is always the mean training image.

    Args:
        images_u8: uint8 images (B,3,H,W), any device. mean_image: float (3,H,W) in [0, 1].

    Returns:
        float32 (B,H,W) in [0, 1].

    Raises:
        ValueError: the mean image's shape is not the images'.
    """
    _check_images(images_u8)
    mean = np.asarray(mean_image, dtype=np.float32)
    if mean.shape != tuple(images_u8.shape[1:]):
        raise ValueError(f"train_residual_map: mean image {mean.shape} and images {tuple(images_u8.shape[1:])} differ "
                         "(the mean must come from training images in the same test geometry)")
    return recon_error_map(images_u8.detach().cpu(), torch.from_numpy(mean)[None])


def image_floor_maps(images_u8: Tensor, mean_image: np.ndarray) -> dict[str, np.ndarray]:
    """The floors that need no network, keyed as :data:`FLOORS` (in its order).

    Args:
        images_u8: uint8 images (B,3,H,W); mean_image: :meth:`TrainMean.result`.
    """
    bright = intensity_map(images_u8)
    return {"floor_intensity": bright, "floor_intensity_inv": (1.0 - bright).astype(np.float32),
            "floor_train_residual": train_residual_map(images_u8, mean_image)}


# ------------------------------------------------------------------------------------------- the untrained network


@contextmanager
def _global_rng_kept() -> Iterator[None]:
    """Restore python, numpy and torch's global RNG states on exit (an evaluation must not reseed its caller)."""
    py, npy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng():  # torch CPU and every CUDA device's generator
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def untrained_model(cfg: RunConfig, device: str | torch.device = "cpu") -> nn.Module:
    """The run's network with the weights the trainer starts from (before its first step), in eval mode.

    The trainer (:func:`avaga_lib.training.train.train_run`, its ``_set_up``) seeds python / numpy / torch from
    ``train.seed`` and then builds the networks with :func:`avaga_lib.models.networks.build_networks`, the model before
    the discriminator; this does the same two calls in the same order, so the weights are identical (tested
    against ``train_run`` with ``train.epochs=0``). With ``model.pretrained=imagenet`` the encoder is ImageNet's,
    as the trainer's is: the floor is "this run before training", not "random features"; a random-init floor is
    the same config with ``model.pretrained=none``. Construction fallbacks (no ImageNet weights in the cache) warn
    as in training and are listed in the AVAGA model's ``init_notes``.

    The global RNG states are restored afterwards, so calling this never changes what the caller draws next.

    Args:
        cfg: the run config (method, model, image size, setting, ``train.seed``). device: where the model goes.
    """
    with _global_rng_kept():
        seed_rngs(cfg.train.seed)  # the trainer's seed_everything, without its global determinism switches
        model, _, _ = build_networks(cfg)
    return model.to(torch.device(device)).eval()


def untrained_map(cfg: RunConfig, model: nn.Module, images_u8: Tensor, device: str | torch.device,
                  infer: InferMap) -> np.ndarray:
    """The untrained network's map of a batch, by the evaluator's own map function for the method.

    The evaluator passes its map function as ``infer`` (this module sits below it in the layer contract), e.g.
    ``lambda m, x: avaga_lib.evaluation.evaluate.infer_batch(cfg, m, x, None).raw_map``: AVAGA's Grad-CAM map (1 - A or
    A^{c_a}, ungated), the baselines' uncalibrated residual map (L2 or 1 - SSIM). So the floor differs from the run's
    map only by the weights.

    Args:
        cfg: the run config (its image size is checked against the batch). model: :func:`untrained_model` of ``cfg``, on
        ``device``. images_u8: uint8 images (B,3,H,W) (``ds.images[sl]``), moved to ``device`` and scaled to [0, 1] as
        the
            evaluator does.
        device: where to infer. infer: ``infer(model, x) -> (B,H,W)`` map tensor.

    Returns:
        float32 (B,H,W).

    Raises:
        ValueError: a batch of another side than ``cfg.data.image_size``, or a map of another shape than (B,H,W).
    """
    _check_images(images_u8)
    b, _, h, w = images_u8.shape
    if (h, w) != (cfg.data.image_size, cfg.data.image_size):
        raise ValueError(f"untrained_map: images of side {(h, w)}, but {cfg.name} is built for "
                         f"data.image_size={cfg.data.image_size}")
    x = images_u8.to(torch.device(device)).float() / 255.0  # the evaluator's scaling (evaluate._to_device)
    amap = infer(model, x).detach().float().cpu().numpy()
    if amap.shape != (b, h, w):
        raise ValueError(f"untrained_map: infer returned a map of shape {amap.shape}, expected (B,H,W) = {(b, h, w)}")
    return amap


def floor_map_fn(cfg: RunConfig, mean_image: np.ndarray, model: nn.Module, device: str | torch.device,
                 infer: InferMap) -> FloorMaps:
    """Every floor of :data:`FLOORS` (in its order) of a batch, as one callable for the evaluator's passes.

    Args:
        cfg: the run config; mean_image: :func:`train_mean_image`; model: :func:`untrained_model` on ``device``;
        device: where the untrained network infers; infer: the evaluator's map function (:data:`InferMap`).
    """

    def maps(images_u8: Tensor) -> dict[str, np.ndarray]:
        return {**image_floor_maps(images_u8, mean_image),
                "floor_untrained": untrained_map(cfg, model, images_u8, device, infer)}

    return maps
