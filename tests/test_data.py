"""Data layer: scan, splits, uint8 dataset, augmentation and every bad input of issue 2."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avaga_lib.config import DataConfig
from avaga_lib.data import (
    AnomalyDataset,
    DataLayoutError,
    ImageRecord,
    augment_batch,
    make_splits,
    preparation_key,
    prepare_datasets,
    resolve_root,
    scan_category,
    split_counts,
)
from avaga_lib.data.dataset import _n_of, read_split_paths


def _cfg(root: Path, category: str = "weave", **kw) -> DataConfig:
    return DataConfig(dataset="folder", root=str(root), category=category, **kw)


def _copy(tiny: Path, tmp: Path, category: str = "weave") -> Path:
    shutil.copytree(tiny / category, tmp / category)
    return tmp


# ------------------------------------------------------------------------------------------------------- splits
def test_scan_reads_mvtec_layout(tiny_dataset: Path) -> None:
    train, test, has_masks = scan_category(tiny_dataset, "weave")
    assert has_masks and len(train) == 12 and len(test) == 12
    assert {r.defect for r in test} == {"good", "scratch", "hole", "discoloration", "crack"}
    for r in test:
        assert (r.label == 0) == (r.defect == "good")
        assert (r.mask_path is not None) == (r.label == 1)
        if r.mask_path:
            assert Path(r.mask_path).name == Path(r.path).stem + "_mask.png"


def test_splits_val_weak_and_json(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_dataset)
    u = make_splits(cfg, "unsupervised", save_dir=tmp_path / "u")
    w = make_splits(cfg, "weak", save_dir=tmp_path / "w")
    assert len(u.val) == 3 and len(u.train) == 9  # ceil(0.2 * 12) = 3 (val_fraction 0.2 since issue 20)
    assert u.weak == [] and len(u.test) == 12
    assert [r.path for r in u.val] == [r.path for r in w.val]  # same validation split in both settings
    assert len(w.weak) == 1 and all(r.label == 1 and r.mask_path is None for r in w.weak)  # ceil(0.02 * 8) = 1
    weak_paths = {r.path for r in w.weak}
    assert len(w.test) == 11 and not weak_paths & {r.path for r in w.test}
    assert not {r.path for r in u.val} & {r.path for r in u.train}
    saved = json.loads((tmp_path / "w" / "splits.json").read_text())
    assert saved["weak"] == [str(Path(r.path).relative_to(tiny_dataset)) for r in w.weak] and saved["seed"] == 0
    assert [tiny_dataset / p for p in saved["val"]] == [Path(r.path) for r in w.val]  # relative to the root
    # more weak images at a higher fraction; a different seed picks other images
    assert len(make_splits(replace(cfg, weak_fraction=0.3), "weak").weak) == 3
    other = [make_splits(replace(cfg, seed=s), "unsupervised").val for s in range(1, 6)]
    assert any({r.path for r in v} != {r.path for r in u.val} for v in other)


def test_splits_json_is_portable_and_old_absolute_records_still_read(tiny_dataset: Path, tmp_path: Path) -> None:
    """Issue 22: splits.json named the absolute paths of the machine that made it."""
    splits = make_splits(_cfg(tiny_dataset), "weak", save_dir=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert saved["root"] == str(tiny_dataset) and saved["paths_relative_to"] == "root"
    assert all(not Path(p).is_absolute() and p.startswith("weave/") for k in ("train", "val", "test", "weak")
               for p in saved[k])
    elsewhere = _copy(tiny_dataset, tmp_path / "other_machine")  # the same dataset under another root
    paths = read_split_paths(tmp_path / "run" / "splits.json", root=elsewhere)
    assert paths["test"] == [elsewhere / Path(r.path).relative_to(tiny_dataset) for r in splits.test]
    assert all(p.is_file() for k in paths for p in paths[k])
    assert read_split_paths(tmp_path / "run" / "splits.json")["val"] == [Path(r.path) for r in splits.val]
    old = dict(saved, val=[r.path for r in splits.val])  # a record written before: absolute paths
    old.pop("paths_relative_to")
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert read_split_paths(tmp_path / "old.json", root=elsewhere)["val"] == [Path(r.path) for r in splits.val]


def test_split_depends_only_on_seed_and_files(tiny_dataset: Path, tmp_path: Path) -> None:
    moved = _copy(tiny_dataset, tmp_path / "elsewhere")
    a = make_splits(_cfg(tiny_dataset), "weak")
    b = make_splits(_cfg(moved), "weak")
    rel = lambda recs, root: [Path(r.path).relative_to(root).as_posix() for r in recs]  # noqa: E731
    assert rel(a.val, tiny_dataset) == rel(b.val, moved) and rel(a.weak, tiny_dataset) == rel(b.weak, moved)


def test_ceil_fraction_is_robust_to_float_error() -> None:
    assert _n_of(0.02, 150) == 3 and _n_of(0.02, 50) == 1 and _n_of(0.02, 1) == 1 and _n_of(0.02, 51) == 2


def test_split_counts_table(tiny_dataset: Path) -> None:
    t = split_counts(make_splits(_cfg(tiny_dataset), "weak"))
    assert list(t.columns) == ["train", "val", "test", "weak", "total"]
    assert t.loc["good", "train"] == 9 and t.loc["total", "total"] == 24 and t.loc["total", "weak"] == 1


# ------------------------------------------------------------------------------------------------------ roots
def test_resolve_root(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_root(DataConfig(dataset="mvtec", root=str(tiny_dataset))) == tiny_dataset  # root wins
    with pytest.raises(DataLayoutError, match="ROOT="):
        resolve_root(DataConfig(dataset="mvtec"))
    with pytest.raises(DataLayoutError, match="nowhere"):
        resolve_root(DataConfig(dataset="folder", root=str(tmp_path / "nowhere")))
    # embedded without a root: generated on first use under the project's data/ folder
    import avaga_lib.data.synthetic as synthetic

    calls = []
    real = synthetic.generate_dataset

    def tiny(root: Path, **kw) -> Path:
        calls.append(root)
        return real(root, categories=["granite"], n_train=3, n_test_good=1, n_test_bad=1, size=32)

    monkeypatch.setenv("AVAGA_PROJECT_ROOT", str(tmp_path))
    monkeypatch.setattr(synthetic, "generate_dataset", tiny)
    root = resolve_root(DataConfig(dataset="embedded"))
    assert root == tmp_path / "data" / "embedded" and (root / "granite" / "train" / "good").is_dir()
    assert resolve_root(DataConfig(dataset="embedded")) == root and len(calls) == 1  # not regenerated


def test_each_dataset_is_prepared_once_and_a_failure_is_named_not_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what the pipeline and `make gpu-study` do before their runs start side by side
    import avaga_lib.data.synthetic as synthetic

    calls = []
    monkeypatch.setenv("AVAGA_PROJECT_ROOT", str(tmp_path))
    monkeypatch.setattr(synthetic, "generate_dataset",
                        lambda root, **kw: calls.append(root) or root.mkdir(parents=True))
    cfgs = [DataConfig(dataset="embedded", category=c) for c in ("granite", "weave", "granite")]
    missing = DataConfig(dataset="folder", root=str(tmp_path / "nowhere"), category="mine")
    errors = prepare_datasets([*cfgs, missing, missing])
    assert len(calls) == 1  # one preparation serves every embedded category
    assert list(errors) == [("folder", str(tmp_path / "nowhere"), "")]
    error = errors[preparation_key(missing)]
    assert error.startswith("DataLayoutError:") and "nowhere" in error
    # STC extracts one scene at a time: each scene is its own preparation
    scenes = [preparation_key(DataConfig(dataset="stc", category=c)) for c in ("01", "02")]
    assert scenes[0] != scenes[1]
    assert preparation_key(cfgs[0]) == preparation_key(cfgs[1])


# ----------------------------------------------------------------------------------------------------- dataset
def test_dataset_geometry_and_items(tiny_dataset: Path) -> None:
    s = make_splits(_cfg(tiny_dataset, "washer"), "unsupervised")
    tr = AnomalyDataset(s.train, image_size=32, train=True)
    te = AnomalyDataset(s.test, image_size=32, train=False)
    assert tr.images.shape == (9, 3, 36, 36) and tr.images.dtype == torch.uint8  # round(32 * 1.125) = 36
    assert te.images.shape == (12, 3, 32, 32) and te.masks.shape == (12, 1, 32, 32)
    assert set(te.masks.unique().tolist()) <= {0, 1}
    normal = te.labels == 0
    assert te.masks[normal].sum() == 0 and (te.masks[~normal].sum((1, 2, 3)) > 0).all()
    item = te[len(te) - 1]
    assert item["image"].dtype == torch.float32 and 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["label"] == 1 and item["mask"].shape == (1, 32, 32) and item["path"] == s.test[-1].path
    # masks off (image-level dataset): all-zero masks
    assert AnomalyDataset(s.test, 32, False, has_masks=False).masks.sum() == 0


def test_grayscale_becomes_three_channels(tmp_path: Path) -> None:
    p = tmp_path / "g.png"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)).save(p)
    ds = AnomalyDataset([ImageRecord(str(p), 0, "good", None)], image_size=32, train=False)
    assert ds.images.shape == (1, 3, 32, 32)
    assert torch.equal(ds.images[0, 0], ds.images[0, 1]) and torch.equal(ds.images[0, 1], ds.images[0, 2])


def test_sixteen_bit_grayscale_is_scaled_by_257_not_clipped_white(tmp_path: Path) -> None:
    """Issue 22: PIL's convert("RGB") clips I;16 above 255, so a 16-bit PNG read as a solid white image."""
    values = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    values[0, :4] = [0, 128, 129, 65535]  # round(v / 257): 128 -> 0, 129 -> 1 (v >> 8 gives 0 for both)
    values[1, :3] = [200 * 257, 17 * 257, 255 * 257]  # an 8-bit image widened to 16 bits comes back exactly
    p = tmp_path / "gray16.png"
    Image.fromarray(values).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I")  # the fixture really is 16-bit
    ds = AnomalyDataset([ImageRecord(str(p), 0, "good", None)], image_size=16, train=False)
    got = ds.images[0].numpy()
    expected = ((values.astype(np.int64) + 128) // 257).astype(np.uint8)
    assert (got == expected[None]).all()  # all three channels, every pixel
    assert got[0, 0, :4].tolist() == [0, 0, 1, 255] and got[0, 1, :3].tolist() == [200, 17, 255]
    assert 100 < got.mean() < 155  # a gradient, not white


def test_rgba_is_composited_on_black_and_named(tmp_path: Path) -> None:
    """Issue 22: the alpha channel was dropped silently (transparent pixels kept their hidden colour)."""
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere, but...
    rgba[..., 3] = 255
    rgba[:4, :, 3] = 0  # ...the top half is transparent
    rgba[4, :, 3] = 128  # and one row half transparent
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(p)
    with pytest.warns(UserWarning, match=f"{p}.*composited on black"):
        ds = AnomalyDataset([ImageRecord(str(p), 0, "good", None)], image_size=8, train=False)
    img = ds.images[0].numpy()
    assert (img[:, :4] == 0).all()  # transparent: the stated background
    assert abs(int(img[0, 4, 0]) - 100) <= 1 and (img[0, 5:] == 200).all() and (img[1:, 4:] == 0).all()
    opaque = tmp_path / "opaque" / "rgba.png"
    opaque.parent.mkdir()
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(opaque)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fully opaque: nothing lost, nothing to say
        ds = AnomalyDataset([ImageRecord(str(opaque), 0, "good", None)], image_size=8, train=False)
    assert (ds.images[0, 0] == 200).all()


def test_mask_binarized_above_127(tmp_path: Path) -> None:
    img, mask = tmp_path / "a.png", tmp_path / "a_mask.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    m = np.zeros((8, 8), np.uint8)
    m[:4] = 127  # not anomalous
    m[4:] = 128  # anomalous
    Image.fromarray(m).save(mask)
    ds = AnomalyDataset([ImageRecord(str(img), 1, "x", str(mask))], image_size=8, train=False)
    assert ds.masks[0, 0, :4].sum() == 0 and ds.masks[0, 0, 4:].sum() == 32


# ------------------------------------------------------------------------------------------------ augmentation
def test_augment_without_rotation_is_exact_crop() -> None:
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (4, 3, 18, 18), dtype=torch.uint8)
    masks = (torch.rand(4, 1, 18, 18) > 0.5).to(torch.uint8)
    out, m = augment_batch(imgs, masks, 16, 0.0, generator=g)
    assert out.shape == (4, 3, 16, 16) and m.shape == (4, 1, 16, 16)
    for b in range(4):
        found = [(t, x) for t in range(3) for x in range(3)
                 if torch.allclose(out[b] * 255, imgs[b, :, t:t + 16, x:x + 16].float(), atol=1e-3)]
        assert len(found) == 1
        t, x = found[0]
        assert torch.equal(m[b], masks[b, :, t:t + 16, x:x + 16].float())


def test_augment_rotation_keeps_mask_on_image_and_is_seeded() -> None:
    masks = torch.zeros(8, 1, 36, 36, dtype=torch.uint8)
    masks[:, :, 10:22, 14:20] = 1
    imgs = (masks * 255).repeat(1, 3, 1, 1)  # the image is its mask: geometry must stay aligned
    a = augment_batch(imgs, masks, 32, 15.0, generator=torch.Generator().manual_seed(1))
    b = augment_batch(imgs, masks, 32, 15.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    out, m = a
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    agree = ((out[:, :1] > 0.5).float() == m).float().mean()
    assert agree > 0.98
    assert not torch.equal(m[0], m[1]) or not torch.equal(m[2], m[3])  # random per image


# ---------------------------------------------------------------------------------------------------- bad input
def test_truncated_image_names_file(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path)
    bad = root / "weave" / "train" / "good" / "003.png"
    bad.write_bytes(bad.read_bytes()[:200])
    s = make_splits(_cfg(root), "unsupervised")
    with pytest.raises(DataLayoutError, match="003.png") as e:
        AnomalyDataset(s.train + s.val, 32, True)
    assert "truncated" in str(e.value)


def test_unreadable_image_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "junk.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(DataLayoutError, match="junk.png"):
        AnomalyDataset([ImageRecord(str(bad), 0, "good", None)], 32, False)


def test_missing_mask_names_image_and_expected_mask(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path)
    (root / "weave" / "ground_truth" / "hole" / "001_mask.png").unlink()
    with pytest.raises(DataLayoutError) as e:
        make_splits(_cfg(root), "unsupervised")
    assert str(root / "weave" / "test" / "hole" / "001.png") in str(e.value)
    assert str(root / "weave" / "ground_truth" / "hole" / "001_mask.png") in str(e.value)


def test_mask_of_wrong_size_names_both_files(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path)
    mask = root / "weave" / "ground_truth" / "crack" / "000_mask.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(mask)
    s = make_splits(_cfg(root), "unsupervised")
    with pytest.raises(DataLayoutError) as e:
        AnomalyDataset(s.test, 32, False)
    assert str(mask) in str(e.value) and str(root / "weave" / "test" / "crack" / "000.png") in str(e.value)


def test_empty_category_folder(tmp_path: Path) -> None:
    (tmp_path / "bottle").mkdir()
    with pytest.raises(DataLayoutError, match="bottle.*empty"):
        make_splits(_cfg(tmp_path, "bottle"), "unsupervised")


def test_missing_category_folder_lists_available(tiny_dataset: Path) -> None:
    with pytest.raises(DataLayoutError) as e:
        make_splits(_cfg(tiny_dataset, "bottle"), "unsupervised")
    assert str(tiny_dataset / "bottle") in str(e.value) and "weave" in str(e.value)


def test_unknown_layout_no_train_good(tmp_path: Path) -> None:
    (tmp_path / "cat" / "images").mkdir(parents=True)
    (tmp_path / "cat" / "images" / "a.png").write_bytes(b"")
    with pytest.raises(DataLayoutError, match="unknown layout") as e:
        make_splits(_cfg(tmp_path, "cat"), "unsupervised")
    assert str(tmp_path / "cat" / "train" / "good") in str(e.value)


def test_unknown_layout_no_test(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path)
    shutil.rmtree(root / "weave" / "test")
    with pytest.raises(DataLayoutError, match="unknown layout") as e:
        make_splits(_cfg(root), "unsupervised")
    assert str(root / "weave" / "test") in str(e.value)


def test_category_without_test_good_is_a_clear_error(tiny_dataset: Path, tmp_path: Path) -> None:
    """Issue 22: no normal test images ran with exit 0 and an unexplained mean accuracy of 0.000."""
    root = _copy(tiny_dataset, tmp_path)
    good = root / "weave" / "test" / "good"
    shutil.rmtree(good)
    with pytest.raises(DataLayoutError, match="does not exist: the test set needs normal images") as e:
        make_splits(_cfg(root), "unsupervised")
    assert str(good) in str(e.value) and "Put normal test images in" in str(e.value)
    good.mkdir()  # present but empty: the same problem
    with pytest.raises(DataLayoutError, match=f"{good} is empty"):
        scan_category(root, "weave")


def test_no_ground_truth_is_image_level_only(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path)
    shutil.rmtree(root / "weave" / "ground_truth")
    with pytest.warns(UserWarning, match="no ground_truth"):
        s = make_splits(_cfg(root), "weak")
    assert s.has_masks is False and all(r.mask_path is None for r in s.test)
    assert sum(r.label for r in s.test) == 7  # labels still known: 8 anomalous, 1 moved to weak


def test_mtd_without_copy_or_source_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVAGA_PROJECT_ROOT", str(tmp_path / "project"))  # no data/mtd, no ../shared/data
    with pytest.raises(DataLayoutError, match="convert-mtd"):
        resolve_root(DataConfig(dataset="mtd"))
