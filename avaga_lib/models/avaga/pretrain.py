"""Offline initialisation arm (issue 21): the ResNet-18 encoder pretrained without labels on a category's normal images.

The paper's AVAGA-R starts from ImageNet weights; this study runs offline, so every committed run so far started
from random initialisation. This module makes the closest thing a machine without internet can make: the encoder
that :func:`avaga_lib.models.avaga.model.build_model` builds for AVAGA-R, trained by **masked inpainting** (a
context-encoder objective, Pathak et al., CVPR 2016) on the normal training images of one category (the validation
images excluded, so the label-free thresholds stay calibrated on images no weight has seen). It is a proxy for ImageNet,
not ImageNet: it has seen a few dozen images of one texture, not 1.3 million photographs (docs/PROTOCOL.md,
"7. Pretraining").

The result is a torchvision-format ResNet-18 state dict (the keys of ``torchvision.models.resnet18().state_dict()``
without ``fc.*``), loadable through ``model.pretrained=<file>``. It is written atomically under
``data/pretrained/<dataset>/<category>/`` (git-ignored) with its inputs beside it as JSON; the file name carries a
hash of the inputs, so the same inputs find the same file and skip the work (cached).

``model.pretrained=selfsup`` (:data:`SELFSUP`) names that file for a run's own dataset, root, category and image side
at the default schedule (:data:`DEFAULT_EPOCHS`, seed 0): :func:`resolve_pretrained` returns its path and makes it
first when it is missing (under a file lock, so the seeds of one study that start together pretrain it once).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:  # POSIX file locks; elsewhere no lock (two processes then both make the same file, atomically)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from avaga_lib import paths
from avaga_lib.config import SELFSUP_PRETRAINED, DataConfig, ModelConfig
from avaga_lib.data import AnomalyDataset, augment_batch, make_splits, resolve_root
from avaga_lib.io import atomic_write, read_json, write_json
from avaga_lib.models.avaga.model import build_model

SELFSUP = SELFSUP_PRETRAINED  # model.pretrained value that names this module's cached file for the run's own data
OBJECTIVE = "masked-inpainting-v1"  # recorded in the inputs: a change of the objective must miss the cache
DEFAULT_EPOCHS = 30  # ~120 steps on the 58 embedded training images at batch 16: about 3 CPU-minutes at 128 px
# (one thread); the reconstruction loss has flattened by then on granite (measured while writing issue 21)
BATCH_SIZE = 16  # the study's training batch (TrainConfig.batch_size), so BatchNorm sees the same batch statistics
LR = 1e-3  # Adam's default step (Kingma & Ba 2015): a fresh encoder and decoder, nothing to preserve; not tuned
MASK_GRID = 8  # the image is cut into 8 x 8 cells (16 px at 128 px) ...
MASK_RATIO = 0.25  # ... and a quarter of them is blanked: Pathak et al. remove about 1/4 of the image
HOLE_WEIGHT = 1.0  # loss = L1 over every pixel + HOLE_WEIGHT x L1 over the blanked ones (the inpainting part)
DECODER_WIDTHS = (128, 64, 32, 32, 16)  # five x2 upsamplings undo the encoder's stride 32; small so the encoder
# does the work (a strong decoder could inpaint from little)
FILE_PREFIX = "resnet18-inpaint"


class PretrainError(ValueError):
    """A pretraining input or weights file that cannot be used (the message names it)."""


@dataclass(frozen=True)
class PretrainInputs:
    """Everything the weights depend on: the cache key (recorded beside the file as JSON).

    Attributes:
        dataset: data source (``data.dataset``). root: the resolved dataset root (absolute), so two roots never share a
        file. category: category whose normal training images are used. image_size: side of the training crops (the
        run's ``data.image_size``). epochs: passes over the training images. seed: seed of the crops, masks and initial
        weights. val_fraction: validation share left out (``data.val_fraction``), with ``split_seed`` the split's seed.
        split_seed: seed of that split (``data.seed``). objective: :data:`OBJECTIVE`. batch_size: :data:`BATCH_SIZE`.
        lr: :data:`LR`. mask_grid: :data:`MASK_GRID`. mask_ratio: :data:`MASK_RATIO`.
    """

    dataset: str
    root: str
    category: str
    image_size: int
    epochs: int
    seed: int
    val_fraction: float
    split_seed: int
    objective: str = OBJECTIVE
    batch_size: int = BATCH_SIZE
    lr: float = LR
    mask_grid: int = MASK_GRID
    mask_ratio: float = MASK_RATIO

    def digest(self) -> str:
        """Short hash of the inputs (the file name's suffix)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PretrainResult:
    """What :func:`pretrain_encoder` did: the weights file, whether it was already there, the final loss."""

    path: Path
    skipped: bool
    final_loss: float = math.nan


def inputs_for(data: DataConfig, epochs: int = DEFAULT_EPOCHS, seed: int = 0) -> PretrainInputs:
    """The pretraining inputs of a run's data config (root resolved, so the default location is spelled out)."""
    if epochs < 1:
        raise PretrainError(f"pretrain: epochs={epochs} must be >= 1")
    return PretrainInputs(dataset=data.dataset, root=str(resolve_root(data).resolve()), category=data.category,
                          image_size=data.image_size, epochs=epochs, seed=seed, val_fraction=data.val_fraction,
                          split_seed=data.seed)


def default_path(inputs: PretrainInputs) -> Path:
    """``data/pretrained/<dataset>/<category>/resnet18-inpaint-<size>px-<hash>.pth`` (git-ignored: ``data/``)."""
    name = f"{FILE_PREFIX}-{inputs.image_size}px-{inputs.digest()}.pth"
    return paths.data_dir() / "pretrained" / inputs.dataset / inputs.category / name


def inputs_path(weights: Path) -> Path:
    """The JSON beside a weights file that records its inputs."""
    return weights.with_suffix(".json")


class _InpaintDecoder(nn.Module):
    """Small decoder used only by the pretext task (thrown away): 1x1 conv, 5 x [x2 bilinear, 3x3 conv, ReLU], RGB."""

    def __init__(self, in_channels: int = 512) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, DECODER_WIDTHS[0], 1)]
        c = DECODER_WIDTHS[0]
        for w in DECODER_WIDTHS:
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(c, w, 3, padding=1), nn.ReLU(inplace=True)]
            c = w
        layers.append(nn.Conv2d(c, 3, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, feats: Tensor) -> Tensor:
        """Image in [0, 1] from the encoder's (B, 512, S/32, S/32) features."""
        return torch.sigmoid(self.net(feats))


def _hole_masks(b: int, side: int, generator: torch.Generator) -> Tensor:
    """(B, 1, side, side) masks, 1 on the blanked cells (MASK_RATIO of a MASK_GRID x MASK_GRID grid, at random)."""
    n_cells = MASK_GRID * MASK_GRID
    k = max(1, round(MASK_RATIO * n_cells))
    order = torch.rand((b, n_cells), generator=generator).argsort(dim=1)
    cells = torch.zeros((b, n_cells))
    cells.scatter_(1, order[:, :k], 1.0)
    return F.interpolate(cells.view(b, 1, MASK_GRID, MASK_GRID), size=(side, side), mode="nearest")


def _encoder_state(body: nn.Module) -> dict[str, Tensor]:
    """The encoder body's weights under torchvision's ResNet-18 key names (the body keeps them: conv1 ... layer4)."""
    return {k: v.detach().clone().cpu() for k, v in body.state_dict().items()}


def _train(inputs: PretrainInputs, data: DataConfig, progress: Callable[[str], None] | None) -> tuple[
        dict[str, Tensor], float]:
    """Masked-inpainting training of the AVAGA-R encoder; returns (torchvision-keyed state dict, last epoch loss)."""
    torch.manual_seed(inputs.seed)  # the encoder's and decoder's initial weights
    gen = torch.Generator().manual_seed(inputs.seed)  # crops, rotations and masks
    splits = make_splits(data, "unsupervised")  # validation images left out: they calibrate the run's thresholds
    ds = AnomalyDataset(splits.train, inputs.image_size, train=True, resize_ratio=data.train_resize_ratio,
                        rotation_deg=data.rotation_deg, has_masks=False, geometry=data.geometry)
    model, _ = build_model(ModelConfig(variant="R", pretrained="none"), inputs.image_size, "unsupervised")
    decoder = _InpaintDecoder()
    params = [*model.body.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=inputs.lr)
    model.train()
    decoder.train()
    n = len(ds)
    loss_value = math.nan
    for epoch in range(inputs.epochs):
        order = torch.randperm(n, generator=gen)
        total, batches = 0.0, 0
        for start in range(0, n, inputs.batch_size):
            idx = order[start:start + inputs.batch_size]
            if len(idx) < 2:  # BatchNorm needs two images; a last batch of one is dropped
                continue
            x, _ = augment_batch(ds.images[idx], ds.masks[idx], inputs.image_size, data.rotation_deg, generator=gen)
            holes = _hole_masks(len(idx), inputs.image_size, gen)
            fill = x.mean(dim=(2, 3), keepdim=True)  # each image's mean colour: a blank that says nothing
            recon = decoder(model.encode(x * (1 - holes) + fill * holes))
            err = (recon - x).abs()
            loss = err.mean() + HOLE_WEIGHT * (err * holes).sum() / (holes.sum() * 3).clamp(min=1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            batches += 1
        loss_value = total / max(batches, 1)
        if progress is not None:
            progress(f"pretrain {inputs.dataset}/{inputs.category} epoch {epoch + 1}/{inputs.epochs}: "
                     f"loss {loss_value:.4f}")
    return _encoder_state(model.body), loss_value


def is_cached(path: Path, inputs: PretrainInputs) -> bool:
    """The weights file exists and its recorded inputs are ``inputs``."""
    record = inputs_path(path)
    if not (path.is_file() and record.is_file()):
        return False
    try:
        return read_json(record).get("inputs") == json.loads(json.dumps(asdict(inputs)))
    except (OSError, ValueError, AttributeError):
        return False


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` (POSIX; elsewhere no lock: a second process then repeats the work)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    with open(path.with_suffix(path.suffix + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def pretrain_encoder(data: DataConfig, epochs: int = DEFAULT_EPOCHS, seed: int = 0, out: Path | str | None = None,
                     progress: Callable[[str], None] | None = None) -> PretrainResult:
    """Pretrain the AVAGA-R encoder on ``data``'s normal training images and write its state dict (cached).

    Args:
        data: dataset, root, category, image side, split of the run the weights are for. epochs: passes over the
        training images. seed: seed of the initial weights, crops and masks. out: weights file; None =
        :func:`default_path` of the inputs. progress: called with one line per epoch.

    Returns:
        the file and whether it was skipped (same inputs already recorded beside it).
    """
    inputs = inputs_for(data, epochs, seed)
    path = Path(out) if out is not None else default_path(inputs)
    with _lock(path):
        if is_cached(path, inputs):
            return PretrainResult(path, skipped=True)
        t0 = time.perf_counter()
        state, loss = _train(inputs, data, progress)
        atomic_write(path, lambda p: torch.save(state, p))
        # the record is written after the weights: a record always describes a complete file
        write_json(inputs_path(path), {"inputs": asdict(inputs), "final_loss": loss,
                                       "wall_time_s": time.perf_counter() - t0, "torch_version": torch.__version__,
                                       "what": "ResNet-18 encoder (torchvision keys, no fc) pretrained by masked "
                                               "inpainting on normal training images: a proxy for ImageNet, "
                                               "not ImageNet (avaga_lib/models/avaga/pretrain.py)"})
    return PretrainResult(path, skipped=False, final_loss=loss)


def resolve_pretrained(model: ModelConfig, data: DataConfig, progress: Callable[[str], None] | None = print) -> (
        ModelConfig):
    """``model`` with ``pretrained=selfsup`` replaced by the path of its cached file (made first when missing).

    Any other value is returned unchanged (``imagenet``, ``none`` and paths are handled by the model builder).
    """
    if model.pretrained != SELFSUP:
        return model
    if model.variant != "R":
        raise PretrainError(f"model.pretrained='{SELFSUP}' pretrains the ResNet-18 encoder of AVAGA-R; "
                            f"model.variant is '{model.variant}'")
    result = pretrain_encoder(data, progress=progress)
    return replace(model, pretrained=str(result.path))


def describe(result: PretrainResult) -> str:
    """One line for the command line."""
    record = inputs_path(result.path).name
    if result.skipped:
        return f"pretrain: {result.path} already made from the same inputs (cached; {record})"
    return f"pretrain: wrote {result.path} (final loss {result.final_loss:.4f}; inputs in {record})"


def summary(path: Path) -> dict[str, Any]:
    """The inputs record of a weights file (for the report and notebooks)."""
    return read_json(inputs_path(path))
