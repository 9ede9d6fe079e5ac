"""MVTec-layout reader, uint8 tensor cache, augmentation and the validation / weak splits.

Layout (MVTec AD's, and the "bring your own images" layout: any folder arranged like this works)::

    <root>/<category>/train/good/*.png|jpg|...           normal training images
    <root>/<category>/test/good/*                        normal test images
    <root>/<category>/test/<defect>/*                    anomalous test images, one folder per defect type
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png   pixel masks (optional: no ground_truth/ folder
                                                         = image-level labels only; pixel metrics unavailable)

Geometry (PROTOCOL_NOTES 13): training images are resized once to ``round(image_size * resize_ratio)`` (288 for 256)
and kept as uint8; :func:`augment_batch` crops ``image_size`` at random and rotates by +-``rotation_deg`` on whatever
device the batch is. Test images are resized to ``image_size``, never cropped (defects sit near borders). Masks
follow with nearest-neighbour and are binarised at > 127. "Resized" is ``DataConfig.geometry``
(:mod:`avaga_lib.data.geometry`): squash, or letterbox / reflect (aspect kept, zero / mirror padding, a per-image
valid-pixel mask in :attr:`AnomalyDataset.valid`). Padded training squares are cropped and rotated like any other:
the padding is part of every normal training image, so the network learns it as normal content.

Pixel formats (:func:`_to_rgb`): 8-bit images as they are, grayscale repeated on 3 channels, 16-bit grayscale
scaled to 8 bits by ``round(v / 257)``, transparency composited on black (warned, naming the file). The test set
must hold normal images (``test/good``): without them image-level metrics are undefined, so the scan refuses it.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from avaga_lib.config import GEOMETRIES, SETTINGS, DataConfig
from avaga_lib.data.geometry import PAD_VALUE, to_square, valid_mask
from avaga_lib.data.records import DataLayoutError, ImageRecord, Splits
from avaga_lib.data.sources import resolve_root
from avaga_lib.io import read_json, write_json
from avaga_lib.run_folder import SPLITS_NAME

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIX = "_mask.png"  # MVTec AD's mask naming: ground_truth/<defect>/<stem>_mask.png
_WARNED: set[str] = set()  # categories already warned about (warn once per process)


# ------------------------------------------------------------------------------------------------------ scanning
def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)


def _list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` sorted by name; other visible files are reported, hidden ones ignored."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    others = [p.name for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    if others:
        _warn_once(str(folder), f"{folder}: ignoring {len(others)} non-image file(s) {others[:3]} "
                   f"(image extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return images


def _category_folders(root: Path, category: str) -> tuple[Path, Path, Path]:
    """(category, train/good, test) folders of ``category``, each checked to exist with a message naming it."""
    if not root.is_dir():
        raise DataLayoutError(f"dataset root {root} does not exist; expected a folder <root>/<category>/train/good")
    cat_dir = root / category
    if not cat_dir.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DataLayoutError(f"category folder {cat_dir} does not exist; categories found in {root}: {available}")
    if not any(cat_dir.iterdir()):
        raise DataLayoutError(f"category folder {cat_dir} is empty; expected train/good/, test/ and optionally "
                              "ground_truth/ (MVTec AD layout)")
    train_dir, test_dir = cat_dir / "train" / "good", cat_dir / "test"
    for needed, what in ((train_dir, "normal training images"), (test_dir, "one sub-folder per defect type + good")):
        if not needed.is_dir():
            found = sorted(p.name for p in cat_dir.iterdir())
            raise DataLayoutError(f"unknown layout in {cat_dir}: missing {needed} ({what}); found {found}. "
                                  "Expected <category>/train/good, <category>/test/<good|defect>, "
                                  "<category>/ground_truth/<defect>/<stem>_mask.png")
    return cat_dir, train_dir, test_dir


def _scan_test(test_dir: Path, gt_dir: Path, has_masks: bool) -> tuple[list[ImageRecord], list[tuple[Path, Path]], int]:
    """Test records of every defect folder, the (image, expected mask) pairs without a mask, the count with one."""
    test: list[ImageRecord] = []
    missing: list[tuple[Path, Path]] = []
    n_with_mask = 0
    defect_dirs = sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not defect_dirs:
        raise DataLayoutError(f"{test_dir} has no sub-folders; expected test/good and test/<defect type> folders")
    for d in defect_dirs:
        for p in _list_images(d):
            if d.name == "good":
                test.append(ImageRecord(str(p), 0, "good", None))
                continue
            mask = gt_dir / d.name / f"{p.stem}{MASK_SUFFIX}"
            if has_masks and mask.is_file():
                n_with_mask += 1
                test.append(ImageRecord(str(p), 1, d.name, str(mask)))
            else:
                missing.append((p, mask))
                test.append(ImageRecord(str(p), 1, d.name, None))
    if not test:
        raise DataLayoutError(f"{test_dir} holds no images in its sub-folders")
    if not any(r.label == 0 for r in test):
        # without normal test images the image AUROC is undefined and the mean accuracy averages one class only:
        # a run would end with exit 0 and an unexplained 0.000, so the layout is refused here, naming the folder
        good = test_dir / "good"
        state = "is empty" if good.is_dir() else "does not exist"
        raise DataLayoutError(f"{good} {state}: the test set needs normal images (image AUROC, mean accuracy and "
                              f"the normal-image false-positive area are measured on them). Put normal test images "
                              f"in {good} (MVTec layout: <category>/test/good/*.png)")
    return test, missing, n_with_mask


def _masks_usable(cat_dir: Path, gt_dir: Path, missing: list[tuple[Path, Path]], n_with_mask: int) -> bool:
    """Whether pixel masks are used: all anomalous images have one, or none (image-level only, warned)."""
    has_masks = gt_dir.is_dir()
    if has_masks and n_with_mask == 0 and missing:
        _warn_once(f"{cat_dir}:nomask", f"{gt_dir} exists but holds no <stem>{MASK_SUFFIX} for any anomalous test "
                   f"image (e.g. {missing[0][1]}); reading {cat_dir} as image-level only: pixel metrics unavailable")
        has_masks = False
    elif has_masks and missing:
        img, mask = missing[0]
        raise DataLayoutError(f"anomalous test image {img} has no mask: expected {mask} ({len(missing)} image(s) "
                              f"without a mask while {n_with_mask} have one). Add the masks, or remove {gt_dir} to "
                              "use image-level labels only")
    elif not has_masks:
        _warn_once(f"{cat_dir}:nogt", f"{cat_dir} has no ground_truth/ folder: image-level labels only, "
                   "pixel metrics will be reported as unavailable")
    return has_masks


def scan_category(root: Path | str, category: str) -> tuple[list[ImageRecord], list[ImageRecord], bool]:
    """Read the file list of one category in MVTec layout.

    Returns:
        (train/good records, test records, has_masks), each list sorted by path.

    Raises:
        DataLayoutError: missing/empty root or category, no ``train/good`` or ``test/`` (unknown layout), no normal
            test image (``test/good`` missing or empty), some anomalous images with masks and others without.
    """
    cat_dir, train_dir, test_dir = _category_folders(Path(root), category)
    train_files = _list_images(train_dir)
    if not train_files:
        raise DataLayoutError(f"{train_dir} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
    train = [ImageRecord(str(p), 0, "good", None) for p in train_files]
    gt_dir = cat_dir / "ground_truth"
    test, missing, n_with_mask = _scan_test(test_dir, gt_dir, gt_dir.is_dir())
    has_masks = _masks_usable(cat_dir, gt_dir, missing, n_with_mask)
    if not has_masks:
        test = [ImageRecord(r.path, r.label, r.defect, None) for r in test]
    return train, test, has_masks


# -------------------------------------------------------------------------------------------------------- splits
def _n_of(fraction: float, n: int) -> int:
    """ceil(fraction * n), at least 1 (rounded first so 0.02 * 150 = 3.0000000000000004 gives 3, not 4)."""
    return max(1, math.ceil(round(fraction * n, 9)))


def _seeded_pick(records: list[ImageRecord], k: int, seed: int, stream: int, base: Path) -> set[str]:
    """Choose ``k`` records at random from a seed and the sorted relative paths only (stable across settings)."""
    rel = sorted(os.path.relpath(r.path, base) for r in records)
    rng = np.random.default_rng([seed, stream])
    chosen = rng.choice(len(rel), size=k, replace=False)
    return {str(base / rel[i]) for i in sorted(chosen)}


def make_splits(cfg: DataConfig, setting: str, save_dir: Path | None = None) -> Splits:
    """Train / validation / test / weak splits of ``cfg.category``.

    Validation: a seeded ``val_fraction`` (>= 1 image) of train/good. Weak (``setting == "weak"``): a seeded
    ``ceil(weak_fraction * n_anomalous)`` (>= 1) of the anomalous test images, removed from the test set, label
    only (``mask_path`` None, PN 12). The selection depends only on ``cfg.seed`` and the sorted file list, so the
    validation split is the same in both settings. ``save_dir`` given: ``splits.json`` is written there.

    Raises:
        DataLayoutError: bad layout (see :func:`scan_category`), too few images to split.
        ValueError: unknown setting.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting '{setting}' unknown; choose one of {SETTINGS}")
    root = resolve_root(cfg)
    cat_dir = root / cfg.category
    train_good, test, has_masks = scan_category(root, cfg.category)
    if len(train_good) < 2:
        raise DataLayoutError(f"{cat_dir / 'train' / 'good'} holds {len(train_good)} image(s); at least 2 are "
                              "needed (training + validation)")
    val_paths = _seeded_pick(train_good, _n_of(cfg.val_fraction, len(train_good)), cfg.seed, 0, cat_dir)
    if len(val_paths) >= len(train_good):
        raise DataLayoutError(f"val_fraction={cfg.val_fraction} leaves no training image in {cat_dir}")
    anomalous = [r for r in test if r.label == 1]
    weak: list[ImageRecord] = []
    if setting == "weak":
        if not anomalous:
            raise DataLayoutError(f"the weak setting needs anomalous test images; {cat_dir / 'test'} has none")
        weak_paths = _seeded_pick(anomalous, _n_of(cfg.weak_fraction, len(anomalous)), cfg.seed, 1, cat_dir)
        weak = [ImageRecord(r.path, 1, r.defect, None) for r in anomalous if r.path in weak_paths]
        test = [r for r in test if r.path not in weak_paths]
    splits = Splits(
        train=[r for r in train_good if r.path not in val_paths],
        val=[r for r in train_good if r.path in val_paths],
        test=test,
        weak=weak,
        has_masks=has_masks,
        info={"dataset": cfg.dataset, "root": str(root), "category": cfg.category, "setting": setting,
              "seed": cfg.seed, "val_fraction": cfg.val_fraction, "weak_fraction": cfg.weak_fraction},
    )
    if save_dir is not None:
        save_splits(splits, Path(save_dir) / SPLITS_NAME)
    return splits


def relative_to_root(path: str | Path, root: str | Path | None) -> str:
    """``path`` relative to the dataset ``root`` in ``/`` form (``weave/test/crack/000.png``), the way run records
    store image paths so that they read the same on every machine; a path outside ``root`` (or no root) stays as
    it is."""
    if not root:
        return str(path)
    rel = os.path.relpath(path, root)
    if os.path.isabs(rel) or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return str(path)
    return Path(rel).as_posix()


def resolve_record_path(path: str, root: str | Path) -> Path:
    """An image path of a run record on this machine: relative ones (current records) under ``root``; absolute ones
    (records written before paths became relative) as they are."""
    return Path(path) if os.path.isabs(path) else Path(root) / path


def save_splits(splits: Splits, path: Path) -> Path:
    """Write ``splits.json``: the settings of the split and the list of paths of every split.

    Paths are relative to the dataset root (``info["root"]``, recorded too), so a run record made on one machine
    names the same images on another; :func:`read_split_paths` reads them back (and older absolute ones).
    """
    data = dict(splits.info)
    root = data.get("root")
    data["has_masks"] = splits.has_masks
    data["counts"] = {k: len(getattr(splits, k)) for k in ("train", "val", "test", "weak")}
    data["paths_relative_to"] = "root"
    for k in ("train", "val", "test", "weak"):
        data[k] = [relative_to_root(r.path, root) for r in getattr(splits, k)]
    return write_json(path, data)


def read_split_paths(path: Path | str, root: Path | str | None = None) -> dict[str, list[Path]]:
    """The image paths of each split of a ``splits.json`` on this machine.

    Args:
        path: the ``splits.json`` file.
        root: the dataset root here; None = the root the record names (its own machine's).

    Returns:
        ``{"train": [...], "val": [...], "test": [...], "weak": [...]}``: relative entries joined to ``root``,
        absolute entries (records written before paths became relative) unchanged.
    """
    data = read_json(path)
    base = Path(root) if root is not None else Path(data.get("root") or ".")
    return {k: [resolve_record_path(p, base) for p in data.get(k, [])] for k in ("train", "val", "test", "weak")}


def split_counts(splits: Splits) -> pd.DataFrame:
    """Table of image counts per split and defect type (a pandas DataFrame: rows defect, columns split + total)."""
    rows = [{"split": name, "defect": r.defect} for name in ("train", "val", "test", "weak")
            for r in getattr(splits, name)]
    frame = pd.DataFrame(rows, columns=["split", "defect"])
    table = pd.crosstab(frame["defect"], frame["split"]).reindex(columns=["train", "val", "test", "weak"],
                                                                  fill_value=0)
    order = ["good"] + sorted(d for d in table.index if d != "good")
    table = table.reindex([d for d in order if d in table.index])
    table.loc["total"] = table.sum()
    table["total"] = table.sum(axis=1)
    table.columns.name = None
    return table


# ------------------------------------------------------------------------------------------------------- decoding
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # PIL's 16-bit grayscale (older Pillow: "I")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
ALPHA_BACKGROUND = (PAD_VALUE,) * 3  # transparent pixels: black, the colour letterbox padding uses for "no content"


def _to_8bit(im: Image.Image, path: str) -> Image.Image:
    """A 16-bit grayscale image as 8-bit ``L`` (other modes unchanged).

    Scaled by ``round(v / 257)``: 65535 / 257 = 255 exactly, so the full 16-bit range maps onto the full 8-bit
    range, and an 8-bit image stored in 16 bits (``v8 * 257``, how converters widen) comes back bit-identical.
    ``v >> 8`` would truncate instead (up to one grey level darker, 0.5 on average). PIL's own ``convert("RGB")``
    clips every value above 255 to white.

    Raises:
        DataLayoutError: a 32-bit integer image with values outside 0..65535 (naming ``path``).
    """
    if im.mode not in SIXTEEN_BIT_MODES:
        return im
    values = np.asarray(im).astype(np.int64)  # "I" is int32 and "I;16B" big-endian: one safe integer type
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise DataLayoutError(f"image {path} is {im.mode} with values {values.min()}..{values.max()}; only 8-bit "
                              "and 16-bit (0..65535) images are read. Convert it to 8-bit PNG")
    return Image.fromarray(((values + 128) // 257).astype(np.uint8), "L")


def _to_rgb(im: Image.Image, path: str) -> Image.Image:
    """The RGB image the network reads: 16-bit grayscale scaled (:func:`_to_8bit`), grayscale to 3 channels, and
    transparency composited on :data:`ALPHA_BACKGROUND` (black).

    Composited rather than refused: a fully opaque alpha channel (common in exported PNGs) loses nothing, and a
    transparent region is shown as the same black as letterbox padding. Images with transparent pixels are named
    once per folder in a warning, so the compositing is never silent.
    """
    im = _to_8bit(im, path)
    has_alpha = im.mode in ALPHA_MODES or (im.mode == "P" and "transparency" in im.info)
    if not has_alpha:
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    alpha = rgba.getchannel("A")
    if alpha.getextrema()[0] < 255:
        _warn_once(f"{Path(path).parent}:alpha", f"image {path} has transparent pixels: composited on black "
                   f"{ALPHA_BACKGROUND} (alpha is not a channel of the network; other images of this folder may "
                   "be composited too)")
    background = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
    background.paste(rgba.convert("RGB"), mask=alpha)
    return background


def _decode(record: ImageRecord, side: int, want_mask: bool, geometry: str = "squash") -> tuple[
    np.ndarray, np.ndarray, np.ndarray
]:
    """(uint8 RGB image (S,S,3), uint8 0/1 mask (S,S), bool valid-pixel mask (S,S)) of one record."""
    try:
        with Image.open(record.path) as im:
            im.load()
            size = im.size
            img = to_square(_to_rgb(im, record.path), side, geometry, Image.BILINEAR)
    except DataLayoutError:
        raise  # already names the file and the reason (a ValueError: the clause below would relabel it)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataLayoutError(f"cannot read image {record.path}: {exc} (unreadable or truncated file)") from exc
    valid = valid_mask(size, side, geometry)
    mask = np.zeros((side, side), np.uint8)
    if want_mask and record.mask_path is not None:
        try:
            with Image.open(record.mask_path) as m:
                m.load()
                if m.size != size:
                    raise DataLayoutError(f"mask {record.mask_path} is {m.size[0]}x{m.size[1]} but image "
                                          f"{record.path} is {size[0]}x{size[1]}; a mask must match its image")
                m8 = np.asarray(_to_8bit(m, record.mask_path).convert("L"))
        except OSError as exc:
            raise DataLayoutError(f"cannot read mask {record.mask_path} of {record.path}: {exc}") from exc
        binary = Image.fromarray(((m8 > 127) * 255).astype(np.uint8))  # binarise before resizing (> 127)
        mask = (to_square(binary, side, geometry, Image.NEAREST, is_mask=True) > 127).astype(np.uint8)
    return img.astype(np.uint8, copy=False), mask, valid


class AnomalyDataset(Dataset):
    """Images of a list of records, decoded and resized once into uint8 tensors (epochs never touch the disk).

    ``train=True`` keeps side ``round(image_size * resize_ratio)`` for :func:`augment_batch`; ``train=False`` keeps
    ``image_size`` (no crop). Masks are zeros for normal images, weak images and mask-less datasets. ``geometry``
    (``DataConfig.geometry``) squashes or pads (letterbox, reflect); ``valid`` (N,1,S,S) bool is False on padding only.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        image_size: int,
        train: bool,
        resize_ratio: float = 1.125,  # PN 13: 288 / 256
        rotation_deg: float = 15.0,  # PN 13
        has_masks: bool = True,
        geometry: str = "squash",
    ) -> None:
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry '{geometry}' unknown; choose one of {GEOMETRIES} (DataConfig.geometry)")
        self.records = list(records)
        self.geometry = geometry
        self.image_size = image_size
        self.train = train
        self.rotation_deg = rotation_deg
        self.has_masks = has_masks
        self.side = round(image_size * resize_ratio) if train else image_size
        n = len(self.records)
        self.images = torch.zeros((n, 3, self.side, self.side), dtype=torch.uint8)
        self.masks = torch.zeros((n, 1, self.side, self.side), dtype=torch.uint8)
        self.valid = torch.ones((n, 1, self.side, self.side), dtype=torch.bool)
        self.labels = torch.tensor([r.label for r in self.records], dtype=torch.int64)
        self.defects = [r.defect for r in self.records]
        self.paths = [r.path for r in self.records]
        workers = max(1, min(8, os.cpu_count() or 1))  # PIL releases the GIL while decoding / resizing
        with ThreadPoolExecutor(workers) as pool:
            results = pool.map(lambda r: _decode(r, self.side, has_masks, geometry), self.records)
            for i, (img, mask, valid) in enumerate(tqdm(results, total=n, disable=n <= 50, desc="decoding images",
                                                        leave=False)):
                self.images[i] = torch.from_numpy(img).permute(2, 0, 1)
                self.masks[i, 0] = torch.from_numpy(mask)
                self.valid[i, 0] = torch.from_numpy(valid)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "image": self.images[i].float() / 255.0,
            "mask": self.masks[i].float(),
            "valid": self.valid[i],
            "label": int(self.labels[i]),
            "defect": self.defects[i],
            "path": self.paths[i],
        }


# --------------------------------------------------------------------------------------------------- augmentation
def augment_batch(
    images_u8: torch.Tensor,
    masks_u8: torch.Tensor,
    out_size: int,
    rotation_deg: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop to ``out_size`` + random rotation in [-rotation_deg, rotation_deg] (PN 13), batched.

    Crop and rotation are one affine map per image, applied with a single ``grid_sample`` on the tensors' device
    (bilinear for images, nearest for masks). The rotation turns the crop about its centre; corners that would
    fall outside the resized image are filled by reflection rather than black, so the network never learns
    black corners as normal content (the paper does not say; recorded in docs). With ``rotation_deg=0`` the
    result is an exact pixel crop.

    Args:
        images_u8: (B, 3, S, S) uint8 (or float in [0, 1]).
        masks_u8: (B, 1, S, S) with values 0/1.
        out_size: crop side (<= S).
        rotation_deg: maximum absolute rotation angle in degrees.
        generator: optional torch generator (its device is used to draw the random numbers).

    Returns:
        (images float32 in [0, 1], masks float32 in {0, 1}), both of side ``out_size``.
    """
    b, _, h, w = images_u8.shape
    if h < out_size or w < out_size:
        raise ValueError(f"augment_batch: images {h}x{w} smaller than out_size {out_size}")
    device = images_u8.device
    gdev = generator.device if generator is not None else torch.device("cpu")
    r = torch.rand((b, 3), generator=generator, device=gdev).to(device=device, dtype=torch.float32)
    left = torch.floor(r[:, 0] * (w - out_size + 1)).clamp(max=w - out_size)  # integer offsets: exact pixel crop
    top = torch.floor(r[:, 1] * (h - out_size + 1)).clamp(max=h - out_size)
    ang = (r[:, 2] * 2 - 1) * math.radians(rotation_deg)
    cos, sin = torch.cos(ang), torch.sin(ang)
    # output normalised coords u -> input normalised coords: x = (2 c / W - 1) + R u * (out / W)  (align_corners=False)
    theta = torch.zeros((b, 2, 3), device=device, dtype=torch.float32)
    theta[:, 0, 0], theta[:, 0, 1] = cos * out_size / w, -sin * out_size / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * out_size / h, cos * out_size / h
    theta[:, 0, 2] = 2 * (left + out_size / 2) / w - 1
    theta[:, 1, 2] = 2 * (top + out_size / 2) / h - 1
    grid = F.affine_grid(theta, [b, 1, out_size, out_size], align_corners=False)
    imgs = images_u8.float() / 255.0 if images_u8.dtype == torch.uint8 else images_u8.float()
    out_img = F.grid_sample(imgs, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    out_mask = F.grid_sample(masks_u8.float(), grid, mode="nearest", padding_mode="reflection", align_corners=False)
    return out_img.clamp(0, 1), (out_mask > 0.5).float()
