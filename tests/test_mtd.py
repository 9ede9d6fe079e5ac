"""Magnetic Tile Defect adapter: a fake release built here, and a small subset of the shared real copy."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avaga_lib import paths
from avaga_lib.cli import main as cli_main
from avaga_lib.config import DataConfig
from avaga_lib.data import AnomalyDataset, DataLayoutError, make_splits
from avaga_lib.data.mtd import MTD_CATEGORY, convert_magnetic_tile


def _fake_release(src: Path, n_free: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in (("MT_Free", n_free), ("MT_Blowhole", 3), ("MT_Uneven", 2)):
        d = src / cls / "Imgs"
        d.mkdir(parents=True)
        for i in range(n):
            h, w = 40 + i, 50  # varied sizes, as the release's
            Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(d / f"exp{i}.jpg")
            m = np.zeros((h, w), np.uint8)
            if cls != "MT_Free" and not (cls == "MT_Uneven" and i == 0):  # one empty Uneven mask, as in the release
                m[5:15, 10:20] = 200  # > 127: anomalous
                m[20:25, 10:20] = 100  # <= 127: not anomalous
            Image.fromarray(m).save(d / f"exp{i}.png")
    return src


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_convert_fake_release(tmp_path: Path) -> None:
    src = _fake_release(tmp_path / "src")
    before = _tree_hash(src)
    dst = convert_magnetic_tile(src, tmp_path / "mtd", seed=0)
    assert _tree_hash(src) == before  # source untouched
    cat = dst / MTD_CATEGORY
    assert len(list((cat / "train" / "good").iterdir())) == 8 and len(list((cat / "test" / "good").iterdir())) == 2
    assert sorted(p.name for p in (cat / "test").iterdir()) == ["blowhole", "good", "uneven"]
    m = np.asarray(Image.open(cat / "ground_truth" / "blowhole" / "exp1_mask.png"))
    assert set(np.unique(m)) == {0, 255} and (m == 255).sum() == 100  # binarised > 127, stored 0/255
    assert (np.asarray(Image.open(cat / "ground_truth" / "uneven" / "exp0_mask.png")) == 0).all()  # kept, empty
    s = make_splits(DataConfig(dataset="mtd", root=str(dst), category=MTD_CATEGORY), "unsupervised")
    assert s.has_masks and sum(r.label for r in s.test) == 5
    te = AnomalyDataset(s.test, 32, False)
    assert te.masks[te.labels == 1].sum() > 0
    # another seed, another train/test split of MT_Free; same seed, same split
    other = convert_magnetic_tile(src, tmp_path / "mtd2", seed=1)
    same = convert_magnetic_tile(src, tmp_path / "mtd3", seed=0)
    names = lambda d: sorted(p.name for p in (d / MTD_CATEGORY / "train" / "good").iterdir())  # noqa: E731
    assert names(other) != names(dst) and names(same) == names(dst)


def test_resize_option_and_cli(tmp_path: Path) -> None:
    src = _fake_release(tmp_path / "src", n_free=5)
    assert cli_main(["convert-mtd", str(src), "--dst", str(tmp_path / "small"), "--size", "32"]) == 0
    cat = tmp_path / "small" / MTD_CATEGORY
    for p in [*cat.rglob("*.png")]:
        assert Image.open(p).size == (32, 32)
    # the README's form: the source as --src (issue 12); the same copy as the positional form
    assert cli_main(["convert-mtd", "--src", str(src), "--dst", str(tmp_path / "opt"), "--size", "32"]) == 0
    opt = tmp_path / "opt" / MTD_CATEGORY
    files = lambda d: sorted(p.relative_to(d) for p in d.rglob("*.png"))  # noqa: E731
    assert files(opt) == files(cat)
    assert cli_main(["convert-mtd", str(src), "--src", str(tmp_path), "--dst", str(tmp_path / "x")]) == 2  # two sources


def test_refuses_bad_source_and_destination_inside_source(tmp_path: Path) -> None:
    (tmp_path / "notmtd").mkdir()
    with pytest.raises(DataLayoutError, match="notmtd"):
        convert_magnetic_tile(tmp_path / "notmtd", tmp_path / "out")
    src = _fake_release(tmp_path / "src", n_free=2)
    with pytest.raises(DataLayoutError, match="inside the source"):
        convert_magnetic_tile(src, src / "converted")
    (src / "MT_Blowhole" / "Imgs" / "exp0.png").unlink()
    with pytest.raises(DataLayoutError, match="exp0.jpg"):
        convert_magnetic_tile(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.real_data
def test_real_magnetic_tile_subset(tmp_path: Path) -> None:
    real = paths.shared_magnetic_tile()
    if real is None:
        pytest.skip("../shared/data/magnetic_tile not present")
    sub = tmp_path / "subset"
    for cls in sorted(p.name for p in real.iterdir() if p.name.startswith("MT_")):
        (sub / cls / "Imgs").mkdir(parents=True)
        jpgs = sorted((real / cls / "Imgs").glob("*.jpg"))[: 10 if cls == "MT_Free" else 2]
        for j in jpgs:
            shutil.copyfile(j, sub / cls / "Imgs" / j.name)
            shutil.copyfile(j.with_suffix(".png"), sub / cls / "Imgs" / j.with_suffix(".png").name)
    dst = convert_magnetic_tile(sub, tmp_path / "mtd", size=64)
    s = make_splits(DataConfig(dataset="mtd", root=str(dst), category=MTD_CATEGORY), "weak")
    assert {r.defect for r in s.test} >= {"good", "blowhole", "break", "crack", "fray"}
    ds = AnomalyDataset(s.test, 64, False)
    assert ds.images.shape[1:] == (3, 64, 64) and ds.masks[ds.labels == 1].sum() > 0
