"""Practitioner's path: trained run + image folder -> maps, overlays, CSV; unreadable images reported, rest done."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from avaga_lib.cli import main
from avaga_lib.data import generate_dataset
from avaga_lib.evaluation.predict import predict_folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("pred")
    root = generate_dataset(base / "embedded", categories=["weave"], n_train=6, n_test_good=2, n_test_bad=4, size=64)
    args = ["train", "--root", str(root), "--category", "weave", "--method", "ae_l2", "--epochs", "1",
            "--results-dir", str(base / "results"), "--set", "data.val_fraction=0.2", "--set", "train.batch_size=4",
            "--no-progress"]
    assert main(args) == 0  # the CLI's train command: train + evaluate + save
    out = base / "results" / "embedded" / "weave" / "AE-L2-seed0"
    assert (out / "metrics.json").is_file() and (out / "fig_qualitative.png").is_file()
    return out


@pytest.fixture()
def images(tmp_path: Path, run_dir: Path) -> Path:
    folder = tmp_path / "my images"
    folder.mkdir()
    src = sorted((Path(run_dir).parents[2] / "../embedded/weave/test").resolve().glob("*/*.png"))[:2]
    for i, p in enumerate(src):
        shutil.copy(p, folder / f"img{i}.png")
    Image.new("L", (50, 30), 128).save(folder / "gray_small.jpg")  # other size and mode: answered at 50 x 30, RGB
    Image.new("RGB", (64, 64), (10, 20, 30)).save(folder / "img0.jpg")  # same stem as img0.png
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_predict_folder_writes_maps_overlays_and_reports_unreadable(run_dir: Path, images: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="broken.png"):
        frame = predict_folder(run_dir, images, out)
    assert list(frame["file"]) == ["broken.png", "gray_small.jpg", "img0.jpg", "img0.png", "img1.png"]
    bad = frame.set_index("file").loc["broken.png"]
    assert bad["error"] and "broken.png" in bad["error"]
    ok = frame[frame["error"] == ""]
    assert len(ok) == 4 and ok["score"].between(0, 1).all()
    assert ok["map_png"].is_unique and ok["overlay_png"].is_unique
    assert set(ok["decision"]) <= {"normal", "anomalous"}
    for _, row in ok.iterrows():  # at the input's own size (issue 12), not the run's 64 x 64 square
        with Image.open(out / row["map_png"]) as m, Image.open(out / row["overlay_png"]) as o:
            assert m.size == o.size == (row["width"], row["height"]) and o.mode == "RGB"
    assert tuple(ok.set_index("file").loc["gray_small.jpg", ["width", "height"]]) == (50, 30)
    assert len(pd.read_csv(out / "predictions.csv")) == 5
    # issue 23: integers stay integers beside the unreadable file's empty cells (not 50.0 / 0.0)
    assert all(str(frame[c].dtype) == "Int64" for c in ("width", "height", "pred_label"))
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[1].startswith("broken.png,,,") and lines[2].startswith("gray_small.jpg,50,30,")
    raw = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    assert not raw[["width", "height", "pred_label"]].apply(lambda c: c.str.contains(".", regex=False)).any().any()
    assert frame.attrs["notes"][0].startswith("predict: wrote 4 maps and overlays") and str(out) in frame.attrs[
        "notes"][0]


def test_predict_says_when_no_pixel_crossed_the_threshold(tmp_path: Path) -> None:
    from avaga_lib.evaluation import predict

    frame = pd.DataFrame({"file": ["a.png", "b.png", "c.png"], "anomalous_area": [0.0, 0.1, None],
                          "error": ["", "", "unreadable"]})
    notes = predict._notes(frame, tmp_path, tmp_path / "predictions.csv")
    assert notes[0] == f"predict: wrote 2 maps and overlays (<name>_map.png, <name>_overlay.png) and predictions.csv " \
        f"to {tmp_path}"
    assert notes[1].startswith("predict: no pixel above the threshold in 1 of 2 images (a.png): their overlays")
    assert len(predict._notes(frame.iloc[1:], tmp_path, tmp_path / "p.csv")) == 1  # nothing to say: no such line


def test_cli_predict(run_dir: Path, images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.warns(UserWarning):
        assert main(["predict", "--run", str(run_dir), "--images", str(images)]) == 0
    assert "1 unreadable" in capsys.readouterr().out
    assert (run_dir / "maps" / images.name / "predictions.csv").is_file()
    assert main(["predict", "--run", str(run_dir), "--images", str(images / "missing")]) == 2
