"""Magnetic Tile Defect (Huang et al. 2018) -> MVTec layout: a real-data example of the "bring your own images" path.

The release holds ``MT_<Class>/Imgs/<stem>.jpg`` images with a ``<stem>.png`` mask beside each, for the classes
Free (defect-free), Blowhole, Break, Crack, Fray and Uneven. The converted copy is one category,
:data:`MTD_CATEGORY`::

    <dst>/magnetic_tile/train/good/          seeded train_fraction (80%) of MT_Free
    <dst>/magnetic_tile/test/good/           the rest of MT_Free
    <dst>/magnetic_tile/test/<class>/        every image of every defect class (class name lower-case)
    <dst>/magnetic_tile/ground_truth/<class>/<stem>_mask.png   masks binarised at > 127, stored 0/255

A handful of MT_Uneven masks (4 in the public release) are empty: those images are kept as anomalous with an empty
mask (their label is known; their pixel IoU is undefined and the metrics code treats an empty mask accordingly).
The source is never written to; the copy is written to a temporary sibling folder and renamed at the end.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from avaga_lib.data.records import DataLayoutError
from avaga_lib.io import atomic_write, read_json, replace_dir, write_json

MTD_CATEGORY = "magnetic_tile"
MARKER = ".complete.json"  # written last: the converted copy is complete
FREE = "MT_Free"


def _pairs(class_dir: Path) -> list[tuple[Path, Path]]:
    imgs = class_dir / "Imgs"
    if not imgs.is_dir():
        raise DataLayoutError(f"{class_dir} has no Imgs/ folder; expected MT_<Class>/Imgs/<stem>.jpg + <stem>.png")
    out = []
    for jpg in sorted(imgs.glob("*.jpg")):
        png = jpg.with_suffix(".png")
        if not png.is_file():
            raise DataLayoutError(f"Magnetic Tile image {jpg} has no mask: expected {png}")
        out.append((jpg, png))
    if not out:
        raise DataLayoutError(f"{imgs} holds no .jpg images")
    return out


def convert_magnetic_tile(
    src: Path | str,
    dst: Path | str,
    seed: int = 0,
    train_fraction: float = 0.8,  # issue 2: train = seeded 80% of MT_Free
    size: int | None = None,
) -> Path:
    """Convert the Magnetic Tile Defect release at ``src`` into MVTec layout under ``dst``; return ``dst``.

    Args:
        src: folder holding ``MT_Free``, ``MT_Blowhole``, ... (read only).
        dst: destination root; the category folder is ``dst / MTD_CATEGORY``. Skipped when a complete copy made
            with the same parameters is already there.
        seed: seed of the train / test split of MT_Free (chosen from the sorted file names only).
        train_fraction: share of MT_Free going to train/good.
        size: when given, every image is resized to ``size x size`` (bilinear; masks nearest) and stored as PNG,
            giving a small copy; otherwise images are copied byte for byte (JPEG) and only masks are rewritten.

    Raises:
        DataLayoutError: ``src`` is not a Magnetic Tile release, or ``dst`` lies inside ``src``.
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not (src / FREE).is_dir():
        raise DataLayoutError(f"{src} is not a Magnetic Tile Defect release: expected {src / FREE}/Imgs "
                              "and MT_<Defect>/Imgs folders")
    if dst == src or src in dst.parents:
        raise DataLayoutError(f"destination {dst} lies inside the source {src}; the source is never written to")
    params = {"source": str(src), "seed": seed, "train_fraction": train_fraction, "size": size}
    if (dst / MARKER).is_file() and read_json(dst / MARKER) == params:
        return dst
    if dst.exists() and any(dst.iterdir()) and not (dst / MARKER).is_file():
        raise DataLayoutError(f"{dst} exists and is not a converted Magnetic Tile copy (no {MARKER}); "
                              "choose another destination")
    free = _pairs(src / FREE)
    defect_dirs = sorted(p for p in src.iterdir() if p.is_dir() and p.name.startswith("MT_") and p.name != FREE)
    rng = np.random.default_rng([seed, 2])  # stream 2: independent of the split streams of make_splits
    n_train = round(train_fraction * len(free))
    train_idx = set(rng.choice(len(free), size=n_train, replace=False).tolist())

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        empty = _write_category(tmp / MTD_CATEGORY, free, train_idx, defect_dirs, size)
        write_json(tmp / MARKER, params)
        write_json(tmp / "conversion.json", {**params, "n_train": n_train, "n_free": len(free),
                                             "defect_classes": [d.name for d in defect_dirs],
                                             "empty_masks": empty})
        replace_dir(tmp, dst)  # atomic swap; an older copy is removed only afterwards
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _write_category(
    cat: Path, free: list[tuple[Path, Path]], train_idx: set[int], defect_dirs: list[Path], size: int | None
) -> list[str]:
    """Write the MVTec-layout category folder ``cat``; return the images whose mask is empty."""
    for i, (jpg, _) in enumerate(free):
        split = "train" if i in train_idx else "test"
        _copy_image(jpg, cat / split / "good", size)
    empty: list[str] = []
    for d in defect_dirs:
        name = d.name[3:].lower()
        for jpg, png in _pairs(d):
            out = _copy_image(jpg, cat / "test" / name, size)
            if not _write_mask(png, cat / "ground_truth" / name / f"{out.stem}_mask.png", size):
                empty.append(str(jpg))
    return empty


def _copy_image(jpg: Path, folder: Path, size: int | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if size is None:
        out = folder / jpg.name
        shutil.copyfile(jpg, out)  # byte copy: no re-compression of the JPEG
        return out
    out = folder / f"{jpg.stem}.png"
    try:
        with Image.open(jpg) as im:
            small = im.convert("RGB").resize((size, size), Image.BILINEAR)
    except OSError as exc:
        raise DataLayoutError(f"cannot read Magnetic Tile image {jpg}: {exc}") from exc
    atomic_write(out, lambda p: small.save(p, format="PNG"))
    return out


def _write_mask(png: Path, out: Path, size: int | None) -> bool:
    """Binarise (> 127) and store 0/255; return False when the mask is empty."""
    try:
        with Image.open(png) as m:
            binary = (np.asarray(m.convert("L")) > 127).astype(np.uint8) * 255
    except OSError as exc:
        raise DataLayoutError(f"cannot read Magnetic Tile mask {png}: {exc}") from exc
    im = Image.fromarray(binary)
    if size is not None:
        im = im.resize((size, size), Image.NEAREST)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: im.save(p, format="PNG"))
    return bool(binary.any())
