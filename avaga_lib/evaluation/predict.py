"""Practitioner's path: a trained run + a folder of images -> anomaly maps, overlays and one CSV of decisions.

``make predict RUN=<run folder> IMAGES=<folder> [OUT=<folder>]`` calls :func:`predict_folder` through
``python -m avaga_lib.cli predict``. The run folder must hold ``config.json``, ``checkpoint.pt`` and
``calibration.json`` (written by :func:`avaga_lib.training.run.run_one`). Images get the test geometry of
the run (``data.image_size`` square, squashed or padded as ``data.geometry``, no crop) and the run's label-free
calibration (PROTOCOL_NOTES 8), so the decisions match what ``metrics.json`` measured. The answer is at the user's
resolution: the square map goes back to each image's own size with the same geometry
(:func:`avaga_lib.data.to_image_size`: squash = resize; letterbox, reflect = crop the padding, resize), is thresholded
there, and the overlay is drawn on the original pixels. Unreadable files are reported by name (a warning and an
``error`` cell in the CSV) and the others are still processed. Where no pixel of an image crossed the threshold its
overlay is the input unchanged: :func:`predict_folder` says so (a note naming those images) and says where it wrote.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from avaga_lib.config import RunConfig
from avaga_lib.data import AnomalyDataset, DataLayoutError, ImageRecord, to_image_size
from avaga_lib.evaluation import plots
from avaga_lib.evaluation.calibration import Calibration, load_calibration
from avaga_lib.evaluation.evaluate import infer_batch
from avaga_lib.io import write_csv
from avaga_lib.models.networks import load_trained
from avaga_lib.models.registry import method_of
from avaga_lib.run_folder import PREDICTIONS_NAME, RunFolder
from avaga_lib.runtime import resolve_device

_BATCH = 16  # images per inference batch
_COLUMNS = ["file", "width", "height", "score", "score_raw", "prob_anomalous", "pred_label", "decision",
            "anomalous_area", "map_png", "overlay_png", "error"]
# Integer columns: pandas' nullable Int64 keeps them integers when an unreadable image leaves them empty (a float
# column would write 500.0 and 0.0 into predictions.csv)
_INT_COLUMNS = ("width", "height", "pred_label")
_NAMED = 10  # images named in the no-pixel note before "and N more"


def _list_files(images_dir: Path) -> list[Path]:
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} does not exist; expected a folder of image files")
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"image folder {images_dir} holds no files")
    return files


_Readable = tuple[Path, torch.Tensor, tuple[int, int]]  # file, square uint8 (3,S,S), original (width, height)


def _load_images(files: list[Path], image_size: int, geometry: str) -> tuple[list[_Readable], list[dict[str, Any]]]:
    """Decode every file at the test geometry; unreadable ones become an ``error`` row (and a warning)."""
    readable: list[_Readable] = []
    errors: list[dict[str, Any]] = []
    for f in files:
        try:
            ds = AnomalyDataset([ImageRecord(str(f), 0, "unknown", None)], image_size, train=False, has_masks=False,
                                geometry=geometry)
            with Image.open(f) as im:  # the header only: the original size the answer is given at
                readable.append((f, ds.images[0], im.size))
        except (DataLayoutError, OSError, ValueError) as exc:
            warnings.warn(f"predict: skipping unreadable image {f}: {exc}", UserWarning, stacklevel=3)
            errors.append({"file": f.name, "error": str(exc)})
    return readable, errors


def _original_rgb(path: Path) -> np.ndarray:
    """The image's own pixels, (H,W,3) uint8 (grayscale made RGB), for the overlay."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _predict_chunk(cfg: RunConfig, model: torch.nn.Module, cal: Calibration, chunk: list[_Readable],
                   device: torch.device, out: Path, stems: Counter[str]) -> list[dict[str, Any]]:
    """Infer one batch of images, write their map and overlay PNGs at each image's size, return their rows."""
    thr = cfg.eval.threshold
    weak = method_of(cfg.method).classifies(cfg.train.setting)
    x = torch.stack([img for _, img, _ in chunk]).to(device).float() / 255.0
    b = infer_batch(cfg, model, x, cal)
    score = cal.normalize_scores(b.score_raw.cpu().numpy())
    prob = b.prob.cpu().numpy() if b.prob is not None else None
    called = (prob > thr) if prob is not None else (score > thr)
    amap = b.amap.clamp(0, 1).cpu()
    rows: list[dict[str, Any]] = []
    for i, (f, _, size) in enumerate(chunk):
        full = to_image_size(amap[i].numpy(), size, cfg.data.geometry)  # (H, W) at the image's own size
        mask = (full > thr) & bool(called[i] or not weak)  # weak: called normal -> empty mask
        base = f.stem if stems[f.stem] == 1 else f"{f.stem}_{f.suffix.lstrip('.')}"  # a.png + a.jpg: no clash
        map_png, overlay_png = out / f"{base}_map.png", out / f"{base}_overlay.png"
        plots.save_map_png(full, map_png)
        plots.save_overlay_png(_original_rgb(f), mask, overlay_png)
        rows.append({"file": f.name, "width": size[0], "height": size[1], "score": float(score[i]),
                     "score_raw": float(b.score_raw[i]),
                     "prob_anomalous": float(prob[i]) if prob is not None else np.nan, "pred_label": int(called[i]),
                     "decision": "anomalous" if called[i] else "normal", "anomalous_area": float(mask.mean()),
                     "map_png": map_png.name, "overlay_png": overlay_png.name, "error": ""})
    return rows


def predict_folder(
    run_dir: Path | str,
    images_dir: Path | str,
    out_dir: Path | str | None = None,
    device: str = "auto",
    log: Callable[[str], None] | None = print,
) -> pd.DataFrame:
    """Score every image of ``images_dir`` with the trained run in ``run_dir``.

    Writes, per readable image and at that image's own size, ``<stem>_map.png`` (anomaly map, 8-bit grey,
    255 = 1.0) and ``<stem>_overlay.png`` (predicted anomalous pixels in red over the original pixels), and one
    ``predictions.csv`` with a row per file: ``file``, ``width``, ``height``, ``score`` (calibrated, [0, 1]),
    ``score_raw``, ``prob_anomalous`` (weak runs), ``pred_label`` (1 anomalous), ``decision`` (image level: the
    calibrated score, or the weak run's classifier, as in ``metrics.json``), ``anomalous_area`` (fraction of the
    image's own pixels flagged), ``map_png``, ``overlay_png``, ``error`` (empty when the image was processed).

    Args:
        run_dir: a finished run folder (config.json, checkpoint.pt, calibration.json). images_dir: folder of images (any
        size; converted to RGB; sub-folders are not visited). out_dir: output folder; default
        ``<run_dir>/maps/<images_dir name>`` (inside the run folder, git-ignored;
            ``make predict OUT=<folder>`` chooses another).
        device: ``auto`` (cuda, mps, cpu) or a torch device string. log: where the notes go (default ``print``; None:
        silent): the folder written and, when some image had no
            pixel above the threshold, which ones (their overlays are the input unchanged).

    Returns:
        The predictions table (also written as ``predictions.csv`` in ``out_dir``); ``width``, ``height`` and
        ``pred_label`` are nullable integers (empty for an unreadable file), and ``frame.attrs["notes"]`` holds the
        notes given to ``log``.

    Raises:
        FileNotFoundError: missing run files or image folder (named in the message).
    """
    run_dir, images_dir = Path(run_dir), Path(images_dir)
    out = Path(out_dir) if out_dir is not None else RunFolder(run_dir).maps_dir / images_dir.name
    files = _list_files(images_dir)
    dev = resolve_device(device)
    cfg, model = load_trained(run_dir, dev)
    cal = load_calibration(run_dir)
    stems = Counter(f.stem for f in files)
    readable, rows = _load_images(files, cfg.data.image_size, cfg.data.geometry)
    for start in range(0, len(readable), _BATCH):
        rows += _predict_chunk(cfg, model, cal, readable[start : start + _BATCH], dev, out, stems)
    order = {f.name: i for i, f in enumerate(files)}
    frame = pd.DataFrame(rows).reindex(columns=_COLUMNS)
    frame["error"] = frame["error"].fillna("")
    frame = frame.sort_values("file", key=lambda s: s.map(order)).reset_index(drop=True)
    for column in _INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column]).astype("Int64")
    csv = write_csv(out / PREDICTIONS_NAME, frame)
    frame.attrs["notes"] = _notes(frame, out, csv)
    for note in frame.attrs["notes"] if log is not None else ():
        log(note)
    return frame


def _notes(frame: pd.DataFrame, out: Path, csv: Path) -> list[str]:
    """Where the files went, and the images whose map crossed the threshold nowhere (an overlay without a mark)."""
    done = frame[frame["error"] == ""]
    notes = [f"predict: wrote {len(done)} maps and overlays (<name>_map.png, <name>_overlay.png) and {csv.name} "
             f"to {out}"]
    empty = list(done.loc[done["anomalous_area"] == 0, "file"])
    if empty:
        named = ", ".join(empty[:_NAMED]) + (f" and {len(empty) - _NAMED} more" if len(empty) > _NAMED else "")
        notes.append(f"predict: no pixel above the threshold in {len(empty)} of {len(done)} images ({named}): their "
                     "overlays are the input unchanged (anomalous_area 0 in the CSV)")
    return notes


__all__ = ["predict_folder"]
