"""Real folders as users have them (issue 12): non-square grayscale strips read squashed or letterboxed, the padding
never counted by a pixel metric, `make predict` answering at each image's own size, and image-level-only folders
reported as such."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from avaga_lib.config import GEOMETRIES, make_config
from avaga_lib.data import (
    PAD_VALUE,
    PADDED,
    AnomalyDataset,
    content_box,
    make_splits,
    to_image_size,
    to_square,
    valid_mask,
)
from avaga_lib.evaluation import evaluate as E
from avaga_lib.evaluation import metrics as M
from avaga_lib.evaluation.pixel_metrics import PixelMetricAccumulator, exact_pixel_auroc
from avaga_lib.evaluation.predict import predict_folder
from avaga_lib.io import write_json
from avaga_lib.models.networks import build_networks
from avaga_lib.reporting import report
from avaga_lib.runtime import seed_everything
from avaga_lib.training.run import load_maps, run_one, save_run
from benchmarks.geometry_study import border_band

W, H = 50, 125  # a portrait strip, 2.5:1 like the 500 x 1250 grayscale strips of issue 12


def _gray(rng: np.random.Generator, path: Path, size: tuple[int, int] = (W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((100 + rng.integers(0, 40, (size[1], size[0]))).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def strips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/strip`` in MVTec layout: 50 x 125 grayscale images, thin vertical scratches (6 px) with masks."""
    root = tmp_path_factory.mktemp("strips")
    rng = np.random.default_rng(0)
    cat = root / "strip"
    for i in range(6):
        _gray(rng, cat / "train" / "good" / f"{i:03d}.png")
    for i in range(2):
        _gray(rng, cat / "test" / "good" / f"{i:03d}.png")
    for i in range(3):
        _gray(rng, cat / "test" / "scratch" / f"{i:03d}.png")
        mask = np.zeros((H, W), np.uint8)
        mask[10:115, 15 + 6 * i : 21 + 6 * i] = 255
        (cat / "ground_truth" / "scratch").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(cat / "ground_truth" / "scratch" / f"{i:03d}_mask.png")
    return root


def _cfg(root: Path, geometry: str, **over: object):
    base = {"data.dataset": "folder", "data.root": str(root), "data.category": "strip", "data.image_size": 64,
            "data.geometry": geometry, "data.val_fraction": 0.2, "method": "ae_l2", "model.pretrained": "none",
            "model.latent_channels": 32, "train.batch_size": 4, "train.epochs": 1}
    return make_config("smoke", base | over)


def test_letterbox_keeps_the_aspect_and_marks_the_padding() -> None:
    assert content_box((W, H), 64, "squash") == (0, 0, 64, 64)
    left, top, cw, ch = content_box((W, H), 64, "letterbox")
    assert (cw, ch) == (26, 64) and (left, top) == (19, 0)  # 64 * 50 / 125 = 25.6 -> 26, centred
    assert content_box((H, W), 64, "letterbox") == (0, 19, 64, 26)  # landscape: padded above and below
    valid = valid_mask((W, H), 64, "letterbox")
    assert valid.sum() == 26 * 64 and not valid[:, :left].any() and not valid[:, left + cw :].any()
    assert valid_mask((W, H), 64, "squash").all()
    square = Image.new("L", (40, 40), 7)  # a square image: letterbox is exactly squash
    np.testing.assert_array_equal(to_square(square, 64, "letterbox", Image.BILINEAR),
                                  to_square(square, 64, "squash", Image.BILINEAR))
    back = to_image_size(valid.astype(np.float32), (W, H), "letterbox")  # the padding is cropped, not resized in
    assert back.shape == (H, W) and (back == 1).all()
    assert to_image_size(np.ones((64, 64), np.float32), (W, H), "squash").shape == (H, W)
    with pytest.raises(ValueError, match="letterbox"):
        content_box((W, H), 64, "pad")
    with pytest.raises(ValueError, match="data.geometry"):
        make_config("smoke", {"data.geometry": "pad"})


def _metrics(ds: AnomalyDataset, maps: np.ndarray, valid: np.ndarray | None) -> dict:
    """metrics.json's pixel metrics of ``maps`` through the evaluator's own functions (a perfect image decision)."""
    y = ds.labels.numpy()
    gt = ds.masks[:, 0].bool().numpy()
    frame = pd.DataFrame({"label": y, "score": y * 1.0, "score_raw": y * 1.0, "score_transductive": y * 1.0,
                          "pred_label": y})
    acc = PixelMetricAccumulator()
    acc.update(maps, gt, valid)
    m = E.metrics_from_maps(frame, maps, gt, 0.5, True, valid, literal_maps=maps, thresholds=[0.5])
    return m | acc.compute()


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_perfect_map_has_iou_one_and_padding_never_counts(strips: Path, geometry: str) -> None:
    cfg = _cfg(strips, geometry)
    splits = make_splits(cfg.data, "unsupervised")
    ds = AnomalyDataset(splits.test, 64, train=False, has_masks=splits.has_masks, geometry=geometry)
    gt, valid, y = ds.masks[:, 0].bool().numpy(), ds.valid[:, 0].numpy(), ds.labels.numpy()
    assert splits.has_masks and (gt[y == 1].sum(axis=(1, 2)) > 0).all()  # the thin scratches survive the resize
    assert not gt[~valid].any()  # no defect in the padding, even where reflect mirrors one into it
    padding = ds.images.permute(1, 0, 2, 3)[:, ~torch.from_numpy(valid)]
    assert (padding == PAD_VALUE).all() == (geometry != "reflect")  # reflect: the mirrored texture, not black
    assert valid.all() == (geometry == "squash")
    perfect = gt.astype(np.float32)  # the ground truth itself, through the same geometry
    flags_padding = np.where(valid, perfect, 1.0).astype(np.float32)
    for maps in (perfect, flags_padding):
        m = _metrics(ds, maps, None if geometry == "squash" else valid)
        assert m["iou"] == 1.0 and m["iou_pooled"] == 1.0 and m["iou_at"]["0.5"] == 1.0
        assert m["fp_area_normal"] == 0.0
        assert m["pixel_auroc"] == pytest.approx(1.0) and m["aupro"] == pytest.approx(1.0)
    if geometry == "letterbox":  # what counting the padding would have cost: the exclusion is doing the work
        counted = _metrics(ds, flags_padding, None)
        assert counted["iou"] < 0.5 and counted["fp_area_normal"] > 0.5 and counted["pixel_auroc"] < 1.0


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_evaluation_records_geometry_and_saves_the_valid_mask(strips: Path, tmp_path: Path, geometry: str) -> None:
    cfg = _cfg(strips, geometry, results_dir=str(tmp_path))
    seed_everything(0)
    model = build_networks(cfg)[0].eval()
    run_dir = save_run(cfg, None, E.evaluate_run(cfg, model, make_splits(cfg.data, "unsupervised")), figures=False)
    assert json.loads((run_dir / "config.json").read_text())["data"]["geometry"] == geometry
    metrics = json.loads((run_dir / "metrics.json").read_text())
    maps = load_maps(run_dir)
    assert ("valid" in maps) == (geometry in PADDED)  # squash: the saved files are as before
    valid = maps.get("valid")
    pred = M.binarize(maps["maps"], 0.5) & (True if valid is None else valid)
    y = pd.read_csv(run_dir / "predictions.csv")["label"].to_numpy()
    assert metrics["fp_area_normal"] == pytest.approx(M.fp_area(pred[y == 0], None if valid is None else valid[y == 0]))
    acc = PixelMetricAccumulator(edges=maps["edges_map"], max_fpr=cfg.eval.aupro_max_fpr)
    acc.update(maps["raw_maps"], maps["gt"], valid)
    assert metrics["aupro"] == pytest.approx(acc.compute()["aupro"], abs=1e-12)
    assert metrics["pixel_auroc"] == exact_pixel_auroc(maps["raw_maps"], maps["gt"], valid)


def test_reflect_keeps_the_aspect_and_continues_the_texture() -> None:
    """reflect: the letterbox's content box, the padding a mirror of the content (no step at the seam), the mask
    padded as normal; the way back crops the same box."""
    assert content_box((W, H), 64, "reflect") == content_box((W, H), 64, "letterbox")
    np.testing.assert_array_equal(valid_mask((W, H), 64, "reflect"), valid_mask((W, H), 64, "letterbox"))
    ramp = Image.fromarray(np.tile(np.arange(W, dtype=np.uint8) * 5, (H, 1)))  # brightness rises to the right
    left, _, cw, _ = content_box((W, H), 64, "reflect")
    square = to_square(ramp, 64, "reflect", Image.NEAREST).astype(int)
    assert square.shape == (64, 64)
    np.testing.assert_array_equal(square[:, left - 1], square[:, left])  # the edge pixel repeated: no seam
    np.testing.assert_array_equal(square[:, left + cw], square[:, left + cw - 1])
    np.testing.assert_array_equal(square[:, left - 3 : left][:, ::-1], square[:, left : left + 3])  # mirrored
    mask = to_square(Image.new("L", (W, H), 255), 64, "reflect", Image.NEAREST, is_mask=True)
    np.testing.assert_array_equal(mask > 127, valid_mask((W, H), 64, "reflect"))  # the padding holds no defect
    square_im = Image.new("L", (40, 40), 7)
    np.testing.assert_array_equal(to_square(square_im, 64, "reflect", Image.BILINEAR),
                                  to_square(square_im, 64, "squash", Image.BILINEAR))


def test_reflect_leaves_no_bright_band_at_the_content_border(tmp_path: Path) -> None:
    """Issue 23: on a constant texture a letterboxed AE-SSIM maps the content border as anomalous (the hard edge
    beside the black padding); padded by reflection the border band is no brighter than the interior."""
    rng = np.random.default_rng(0)
    for i in range(10):
        _gray(rng, tmp_path / "data" / "strip" / "train" / "good" / f"{i:03d}.png")
    for i in range(4):
        _gray(rng, tmp_path / "data" / "strip" / "test" / "good" / f"{i:03d}.png")
    band = {}
    for geometry in PADDED:
        cfg = _cfg(tmp_path / "data", geometry, method="ae_ssim", results_dir=str(tmp_path / geometry),
                   **{"train.epochs": 2})
        maps = load_maps(run_one(cfg, figures=False))
        band[geometry] = border_band(maps["raw_maps"], maps["valid"])  # (band mean, interior mean)
    assert band["letterbox"][0] > 2 * band["letterbox"][1]  # the finding: the false edge (measured 0.98 vs 0.33)
    assert band["reflect"][0] <= band["reflect"][1]  # the mirror continues the texture (measured 0.19 vs 0.21)


@pytest.fixture(scope="module")
def letterbox_run(strips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_one(_cfg(strips, "letterbox", results_dir=str(tmp_path_factory.mktemp("res"))), figures=False)


def test_predict_answers_at_each_images_own_size(letterbox_run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = tmp_path / "parts"
    sizes = {"portrait.png": (W, H), "landscape.png": (127, 50), "square.png": (64, 64)}
    for name, size in sizes.items():
        _gray(rng, images / name, size)
    out = tmp_path / "out"
    frame = predict_folder(letterbox_run, images, out).set_index("file")
    for name, (w, h) in sizes.items():
        row = frame.loc[name]
        assert (row["width"], row["height"]) == (w, h) and row["error"] == ""
        with Image.open(out / row["map_png"]) as m, Image.open(out / row["overlay_png"]) as o:
            assert m.size == o.size == (w, h)
            overlay = np.asarray(o.convert("RGB"))
        with Image.open(images / name) as im:
            original = np.asarray(im.convert("RGB"))
        tinted = (overlay != original).any(axis=-1)  # red only where flagged; the original pixels elsewhere
        assert row["anomalous_area"] == pytest.approx(tinted.mean(), abs=1e-12)
        assert row["anomalous_area"] * w * h == pytest.approx(round(row["anomalous_area"] * w * h), abs=1e-6)


# ------------------------------------------------------------------------------------ image-level-only folders
def _fake_run(base: Path, name: str, metrics: dict, geometry: str = "letterbox") -> None:
    cfg = make_config("smoke", {"data.dataset": "folder", "data.category": "strip", "results_dir": str(base),
                                "data.geometry": geometry}, run=name)
    cfg.save(cfg.run_dir / "config.json")
    write_json(cfg.run_dir / "metrics.json", {
        "iou": None, "iou_pooled": None, "pixel_auroc": None, "aupro": None, "image_auroc": 0.7,
        "fp_area_normal": 0.01, "pixel_metrics_available": False, "n_test": 10, "n_anomalous": 5,
        "iou_at": {"0.2": None, "0.3": None, "0.4": None, "0.5": None, "0.6": None}, **metrics})


def test_image_level_only_folder_report_says_there_are_no_masks(tmp_path: Path) -> None:
    base = tmp_path / "results"
    for name, acc in (("AVAGA-R_u", 0.7), ("AVAGA-R_w", 0.8), ("AE-L2", 0.6), ("AVAGA-R_u-noattn", 0.65)):
        _fake_run(base, name, {"mean_accuracy": acc, "image_auroc": acc + 0.05})
    paths = report.write_report(base)
    md = paths.report_md.read_text()
    # issue 23: no IoU table of a category column alone, in REPORT.md or as a CSV; the image-level ones stay
    assert "### Table 2 (folder)" not in md and "### Table 7" not in md and "### Tables 6/8" not in md
    for csv in (base / "tables").glob("folder_*.csv"):
        assert len(pd.read_csv(csv).columns) > 1, f"{csv.name} holds only its first column"
    assert not (base / "tables" / "folder_table2_iou.csv").exists()
    acc_section = md.split("### Table 3 (folder): mean accuracy per category")[1].split("###")[0]
    assert "| category | AE-L2 | AVAGA-R_u | AVAGA-R_w |" in acc_section  # image-level tables kept, with columns
    assert "| strip | 0.60 | 0.70 | 0.80 |" in acc_section
    # the summary stays, image-level only, the ablation included, with no footnote of the left-out pixel columns
    summary = md.split("### Summary (folder)")[1].split("###")[0]
    assert "| run | role | image AUROC | mean accuracy |" in summary
    assert "| AVAGA-R_u-noattn | ablation | 0.700 | 0.650 |" in summary
    assert "has no pixel masks" in summary and "cap x" not in md and "centred Gaussian that never" not in md
    # the banner says why, without promising localization verdicts
    banner = md.splitlines()[2]
    assert banner.startswith("> **folder: the dataset has no pixel masks**") and "no localization claim is" not in md
    assert "results/cpu/reference holds" in banner  # the cpu profile's own reference (smoke: 64 px)
    # each reason names its own metric; a run never made is "not run", not the mask-less reason
    verdicts = [line for line in md.splitlines() if line.startswith("- **") and ", folder" in line]
    by_metric = {"(IoU)": "localization (IoU) is not measurable", "(pixel AUROC": "pixel AUROC is not measurable"}
    for marker, reason in by_metric.items():
        asked = [v for v in verdicts if marker in v and "not run" not in v]
        assert asked and all(reason in v for v in asked), (marker, asked)
    flat = next(v for v in verdicts if "flat latent" in v)
    assert "not run: no run of AVAGA-R_u-flat" in flat and "pixel masks" not in flat
    assert not any("both sides in a common category" in v for v in verdicts)
    one_seed = "**undecided (one seed: no interval)**"
    assert any("classifies better than AVAGA-R_u" in v and one_seed in v for v in verdicts)
    # the geometry each run was read at: in the protocol line and in runs.csv
    assert "image geometry letterbox" in md and "1 category (strip)" in md and "1 categories" not in md
    assert set(pd.read_csv(paths.runs_csv)["geometry"]) == {"letterbox"}
