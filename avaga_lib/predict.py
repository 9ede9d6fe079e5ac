"""Practitioner's path: a trained run + a folder of images -> anomaly maps, overlays and one CSV of decisions.

``make predict RUN=<run folder> IMAGES=<folder> [OUT=<folder>]`` calls :func:`predict_folder` through
``python -m avaga_lib.cli predict``. The run folder must hold ``config.json``, ``checkpoint.pt`` and
``calibration.json`` (written by :func:`avaga_lib.run.run_one`). Images get the test geometry of
the run (resized to ``data.image_size``, no crop) and the run's label-free calibration (PROTOCOL_NOTES 8), so the
decisions match what ``metrics.json`` measured. Unreadable files are reported by name (a warning and an ``error``
cell in the CSV) and the others are still processed.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from avaga_lib import plots
from avaga_lib.calibration import Calibration, load_calibration
from avaga_lib.config import RunConfig
from avaga_lib.data import AnomalyDataset, DataLayoutError, ImageRecord
from avaga_lib.evaluate import infer_batch
from avaga_lib.io import write_csv
from avaga_lib.runtime import resolve_device
from avaga_lib.train import load_trained

PREDICTIONS_NAME = "predictions.csv"
_BATCH = 16  # images per inference batch
_COLUMNS = ["file", "score", "score_raw", "prob_anomalous", "pred_label", "decision", "anomalous_area", "map_png",
            "overlay_png", "error"]


def _list_files(images_dir: Path) -> list[Path]:
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} does not exist; expected a folder of image files")
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"image folder {images_dir} holds no files")
    return files


def _load_images(files: list[Path], image_size: int) -> tuple[list[tuple[Path, torch.Tensor]], list[dict[str, Any]]]:
    """Decode every file at the test geometry; unreadable ones become an ``error`` row (and a warning)."""
    readable: list[tuple[Path, torch.Tensor]] = []
    errors: list[dict[str, Any]] = []
    for f in files:
        try:
            ds = AnomalyDataset([ImageRecord(str(f), 0, "unknown", None)], image_size, train=False, has_masks=False)
            readable.append((f, ds.images[0]))
        except (DataLayoutError, OSError, ValueError) as exc:
            warnings.warn(f"predict: skipping unreadable image {f}: {exc}", UserWarning, stacklevel=3)
            errors.append({"file": f.name, "error": str(exc)})
    return readable, errors


def _predict_chunk(cfg: RunConfig, model: torch.nn.Module, cal: Calibration, chunk: list[tuple[Path, torch.Tensor]],
                   device: torch.device, out: Path, stems: Counter[str]) -> list[dict[str, Any]]:
    """Infer one batch of images, write their map and overlay PNGs, return their rows."""
    thr = cfg.eval.threshold
    weak = cfg.method == "avaga" and cfg.train.setting == "weak"
    x = torch.stack([img for _, img in chunk]).to(device).float() / 255.0
    b = infer_batch(cfg, model, x, cal)
    score = cal.normalize_scores(b.score_raw.cpu().numpy())
    prob = b.prob.cpu().numpy() if b.prob is not None else None
    called = (prob > thr) if prob is not None else (score > thr)
    amap = b.amap.clamp(0, 1).cpu()
    rows: list[dict[str, Any]] = []
    for i, (f, img_u8) in enumerate(chunk):
        mask = (amap[i] > thr).numpy() & bool(called[i] or not weak)  # weak: called normal -> empty mask
        base = f.stem if stems[f.stem] == 1 else f"{f.stem}_{f.suffix.lstrip('.')}"  # a.png + a.jpg: no clash
        map_png, overlay_png = out / f"{base}_map.png", out / f"{base}_overlay.png"
        plots.save_map_png(amap[i].numpy(), map_png)
        plots.save_overlay_png(img_u8.numpy(), mask, overlay_png)
        rows.append({"file": f.name, "score": float(score[i]), "score_raw": float(b.score_raw[i]),
                     "prob_anomalous": float(prob[i]) if prob is not None else np.nan, "pred_label": int(called[i]),
                     "decision": "anomalous" if called[i] else "normal", "anomalous_area": float(mask.mean()),
                     "map_png": map_png.name, "overlay_png": overlay_png.name, "error": ""})
    return rows


def predict_folder(
    run_dir: Path | str,
    images_dir: Path | str,
    out_dir: Path | str | None = None,
    device: str = "auto",
) -> pd.DataFrame:
    """Score every image of ``images_dir`` with the trained run in ``run_dir``.

    Writes, per readable image, ``<stem>_map.png`` (anomaly map, 8-bit grey, 255 = 1.0) and ``<stem>_overlay.png``
    (predicted anomalous pixels in red over the image), and one ``predictions.csv`` with a row per file:
    ``file``, ``score`` (calibrated, [0, 1]), ``score_raw``, ``prob_anomalous`` (weak runs), ``pred_label``
    (1 anomalous), ``decision``, ``anomalous_area`` (fraction of pixels flagged), ``map_png``, ``overlay_png``,
    ``error`` (empty when the image was processed).

    Args:
        run_dir: a finished run folder (config.json, checkpoint.pt, calibration.json).
        images_dir: folder of images (any size; converted to RGB; sub-folders are not visited).
        out_dir: output folder; default ``<run_dir>/maps/<images_dir name>`` (git-ignored).
        device: ``auto`` (cuda, mps, cpu) or a torch device string.

    Returns:
        The predictions table (also written as ``predictions.csv`` in ``out_dir``).

    Raises:
        FileNotFoundError: missing run files or image folder (named in the message).
    """
    run_dir, images_dir = Path(run_dir), Path(images_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "maps" / images_dir.name
    files = _list_files(images_dir)
    dev = resolve_device(device)
    cfg, model = load_trained(run_dir, dev)
    cal = load_calibration(run_dir)
    stems = Counter(f.stem for f in files)
    readable, rows = _load_images(files, cfg.data.image_size)
    for start in range(0, len(readable), _BATCH):
        rows += _predict_chunk(cfg, model, cal, readable[start : start + _BATCH], dev, out, stems)
    order = {f.name: i for i, f in enumerate(files)}
    frame = pd.DataFrame(rows).reindex(columns=_COLUMNS)
    frame["error"] = frame["error"].fillna("")
    frame = frame.sort_values("file", key=lambda s: s.map(order)).reset_index(drop=True)
    write_csv(out / PREDICTIONS_NAME, frame)
    return frame


__all__ = ["PREDICTIONS_NAME", "predict_folder"]
