"""``python -m benchmarks.geometry_study``: which image geometry to use for non-square images (issue 23).

AE-SSIM (the baseline whose map showed the bright band) is trained once per geometry (squash, letterbox, reflect) on
the same data, seed and profile, and each run is read for its pixel AUROC (exact, padding left out), its label-free
IoU and the **border band**: the mean of its raw map over the ``BAND`` outermost content lines along the padded axis
(:func:`border_band`) against the mean over the rest of the content, on the normal test images (for squash, the
same lines of the squashed image: what the data itself puts at its borders). A geometry adds no false edge when its
band is no brighter than squash's.

Two datasets:

* ``strips``: a generated non-square folder: the embedded granite category generated at 320 px and cut to its middle
  128 rows (a 2.5 : 1 landscape strip, as the 500 x 1250 strips of issue 23), masks cut alike; an anomalous test
  image whose defect lies outside the strip is dropped (no defect left to find), all others are kept.
* ``mtd``: Magnetic Tile (``../shared/data/magnetic_tile``, aspect ratios 0.4 to 2.4), converted as the study does.
  Its ~760 training images make one cpu-profile run ~40 CPU-minutes, so ``--mtd-epochs`` (default 3: ~2,300 training
  images seen, about what 15 epochs of the 80 embedded images give) keeps the three runs within a session; the
  comparison is between geometries at the same budget, not a result of the method.

Writes ``<out>/summary.md`` and ``summary.csv`` (default ``results/geometry``: small, meant to be cited by
docs/PROTOCOL.md "Image geometry") and keeps every run folder under ``<out>/runs`` (git-ignored).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from avaga_lib import paths
from avaga_lib.config import GEOMETRIES, make_config
from avaga_lib.data import make_splits
from avaga_lib.data.synthetic import generate_dataset
from avaga_lib.io import write_csv, write_text
from avaga_lib.run_folder import RunFolder
from avaga_lib.training.run import load_maps, run_one

BAND = 2  # content lines per side: the two outermost content columns of issue 23's finding
RUN = "AE-SSIM"  # the baseline whose letterbox map showed the band (0.98 at the border against 0.66 inside)
STRIP_SOURCE_SIDE = 320  # generated square side; the strip keeps its middle STRIP_ROWS rows (2.5 : 1)
STRIP_ROWS = 128


def border_band(maps: np.ndarray, valid: np.ndarray, width: int = BAND,
                sizes: list[tuple[int, int]] | None = None) -> tuple[float, float]:
    """Mean of ``maps`` over the ``width`` outermost content lines along the padded axis, and over the rest.

    Args:
        maps: (N,H,W) float maps.
        valid: (N,H,W) bool, True on image content (a square image, with no padding, contributes nothing).
        width: content lines per side counted as the band.
        sizes: each image's original (width, height). With them an unpadded (squash) map is measured too: its
            content is the whole square and its band lies along the axis a padded geometry would pad, so squash
            shows what the data itself puts at its borders.

    Returns:
        (band mean, interior mean); NaN both when no image is padded (or, with ``sizes``, every image is square).
    """
    band_sum = band_n = inner_sum = inner_n = 0.0
    for i, (m, v) in enumerate(zip(maps, valid, strict=True)):
        rows, cols = np.flatnonzero(v.any(axis=1)), np.flatnonzero(v.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        content = m[r0:r1, c0:c1]
        w, h = sizes[i] if sizes is not None else (0, 0)
        if c1 - c0 < v.shape[1] or (v.all() and w < h):  # padded (or, squashed, would be) left and right
            band = np.concatenate([content[:, :width], content[:, -width:]], axis=1)
            inner = content[:, width:-width]
        elif r1 - r0 < v.shape[0] or (v.all() and w > h):  # above and below
            band = np.concatenate([content[:width], content[-width:]], axis=0)
            inner = content[width:-width]
        else:
            continue
        band_sum, band_n = band_sum + float(band.sum()), band_n + band.size
        inner_sum, inner_n = inner_sum + float(inner.sum()), inner_n + inner.size
    if band_n == 0 or inner_n == 0:
        return float("nan"), float("nan")
    return band_sum / band_n, inner_sum / inner_n


def make_strips(root: Path, seed: int = 0) -> Path:
    """The generated non-square folder (see the module docstring) at ``root/granite_strip``; returns ``root``."""
    done = root / ".complete"
    if done.is_file():
        return root
    src = root.parent / (root.name + "_square")
    generate_dataset(src, seed=seed, categories=["granite"], size=STRIP_SOURCE_SIDE, n_test_bad=250)
    top = (STRIP_SOURCE_SIDE - STRIP_ROWS) // 2
    box = (0, top, STRIP_SOURCE_SIDE, top + STRIP_ROWS)
    cat_src, cat = src / "granite", root / "granite_strip"
    for image in sorted(cat_src.glob("t*/*/*.png")):
        rel = image.relative_to(cat_src)
        mask = cat_src / "ground_truth" / rel.parent.name / f"{image.stem}_mask.png"
        if rel.parts[0] == "test" and rel.parent.name != "good":
            with Image.open(mask) as m:
                cut = m.crop(box)
            if not np.asarray(cut).any():
                continue  # its defect lies outside the strip
            (cat / "ground_truth" / rel.parent.name).mkdir(parents=True, exist_ok=True)
            cut.save(cat / "ground_truth" / rel.parent.name / mask.name)
        (cat / rel.parent).mkdir(parents=True, exist_ok=True)
        with Image.open(image) as im:
            im.crop(box).save(cat / rel)
    shutil.rmtree(src)
    done.write_text("generated by benchmarks.geometry_study.make_strips\n")
    return root


def measure(dataset: str, root: str, category: str, geometry: str, out: Path, epochs: int | None,
            seed: int = 0) -> dict[str, Any]:
    """Train and evaluate :data:`RUN` at the cpu profile with ``geometry``; the row of the summary."""
    over: dict[str, Any] = {"data.dataset": dataset, "data.root": root, "data.category": category,
                            "data.geometry": geometry, "train.seed": seed, "results_dir": str(out / "runs" / geometry)}
    if epochs is not None:
        over["train.epochs"] = epochs
    cfg = make_config("cpu", over, run=RUN)
    folder = RunFolder(Path(cfg.run_dir))
    if not folder.is_finished():
        run_one(cfg, figures=False)
    metrics = folder.metrics()
    maps = load_maps(folder.path)
    valid = maps.get("valid", np.ones_like(maps["gt"], dtype=bool))
    normal = pd.read_csv(folder.predictions_path)["label"].to_numpy() == 0
    sizes = []
    for record in make_splits(cfg.data, cfg.train.setting).test:  # the evaluation's order
        with Image.open(record.path) as im:
            sizes.append(im.size)
    band, inner = border_band(maps["raw_maps"][normal], valid[normal], sizes=[s for s, n in zip(sizes, normal) if n])
    return {"dataset": dataset if dataset != "folder" else category, "geometry": geometry,
            "epochs": cfg.train.epochs, "image_size": cfg.data.image_size, "seed": seed,
            "pixel_auroc": metrics["pixel_auroc"], "iou": metrics["iou"], "image_auroc": metrics["image_auroc"],
            "band_mean": band, "interior_mean": inner, "band_over_interior": band / inner if inner else float("nan"),
            "train_wall_time_s": metrics.get("train_wall_time_s")}


def write_summary(rows: list[dict[str, Any]], out: Path) -> Path:
    """``summary.csv`` and ``summary.md`` under ``out``; returns the markdown file."""
    frame = pd.DataFrame(rows)
    write_csv(out / "summary.csv", frame)
    lines = [f"# Image geometry: {RUN} per geometry (issue 23)", "",
             f"`python -m benchmarks.geometry_study`; cpu profile, seed 0; pixel AUROC exact over content pixels "
             f"(padding left out); IoU at the label-free 0.99 validation quantile; band = mean raw map over the "
             f"{BAND} outermost content lines along the padded axis of the normal test images (squash: the same lines "
             "of the squashed image, what the data puts at its borders), interior = the rest of the content.",
             "",
             "| dataset | geometry | epochs | pixel AUROC | IoU | image AUROC | band | interior | band / interior |",
             "|---|---|---|---|---|---|---|---|---|"]
    def cell(v: float, digits: int = 3) -> str:
        return "—" if v != v else f"{v:.{digits}f}"  # NaN: every image square, no border to measure

    for r in rows:
        lines.append(f"| {r['dataset']} | {r['geometry']} | {r['epochs']} | {r['pixel_auroc']:.3f} | {r['iou']:.3f} "
                     f"| {r['image_auroc']:.3f} | {cell(r['band_mean'])} | {cell(r['interior_mean'])} "
                     f"| {cell(r['band_over_interior'], 2)} |")
    return write_text(out / "summary.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Measure every geometry on the chosen datasets, print and write the summary."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.geometry_study", description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="strips,mtd", help="comma-separated among strips, mtd")
    parser.add_argument("--geometries", default=",".join(GEOMETRIES))
    parser.add_argument("--mtd-epochs", type=int, default=3, help="Magnetic Tile epochs (module docstring)")
    parser.add_argument("--out", type=Path, default=None, help="default: results/geometry")
    args = parser.parse_args(argv)
    out = args.out or paths.results_dir() / "geometry"
    rows = []
    for dataset in args.datasets.split(","):
        for geometry in args.geometries.split(","):
            if dataset == "strips":
                root = make_strips(paths.data_dir() / "geometry_strips")
                row = measure("folder", str(root), "granite_strip", geometry, out, None)
            elif dataset == "mtd":
                row = measure("mtd", "", "magnetic_tile", geometry, out, args.mtd_epochs)
            else:
                raise SystemExit(f"unknown dataset {dataset!r}; choose strips or mtd")
            print(row, flush=True)
            rows.append(row)
            write_summary(rows, out)
    print(f"wrote {out / 'summary.md'}")
    return rows


if __name__ == "__main__":
    main()
