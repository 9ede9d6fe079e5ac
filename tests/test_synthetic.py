"""Embedded dataset generator: determinism, layout, masks, defect sizes and placement (no position bias), speed,
atomic / skip behaviour."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avaga_lib.cli import main as cli_main
from avaga_lib.data.synthetic import (
    CATEGORIES,
    MARKER,
    anomalous_test_image,
    defects_of,
    generate_dataset,
    make_image,
)
from avaga_lib.pixel_metrics import PixelMetricAccumulator, validation_edges
from avaga_lib.priors import center_gaussian


def _arr(p: Path) -> np.ndarray:
    return np.asarray(Image.open(p))


def test_layout_and_masks(tiny_dataset: Path) -> None:
    for cat in ("weave", "washer"):
        d = tiny_dataset / cat
        assert len(list((d / "train" / "good").glob("*.png"))) == 12
        assert len(list((d / "test" / "good").glob("*.png"))) == 4
        for defect in defects_of(cat):
            imgs = sorted((d / "test" / defect).glob("*.png"))
            assert len(imgs) == 2
            for p in imgs:
                m = _arr(d / "ground_truth" / defect / f"{p.stem}_mask.png")
                assert m.shape == _arr(p).shape[:2] and set(np.unique(m)) == {0, 255}
    assert (tiny_dataset / MARKER).is_file()


def test_mask_is_exactly_the_changed_pixels() -> None:
    for cat in CATEGORIES:
        for defect in defects_of(cat):
            clean, _ = make_image(cat, 64, np.random.default_rng(7))
            bad, mask = make_image(cat, 64, np.random.default_rng(7), defect=defect)
            changed = (bad != clean).any(-1)
            assert mask is not None and np.array_equal(changed, mask > 0), (cat, defect)


def test_normals_vary_and_defect_sizes_span_small_to_large() -> None:
    a, _ = make_image("washer", 64, np.random.default_rng(1))
    b, _ = make_image("washer", 64, np.random.default_rng(2))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 3  # shift / rotation / lighting differ
    areas = [(make_image(c, 128, np.random.default_rng(i), defect=defects_of(c)[i % 4])[1] > 0).mean()
             for c in CATEGORIES for i in range(12)]
    assert min(areas) < 0.01 and max(areas) > 0.02


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    kw = dict(categories=["granite"], n_train=2, n_test_good=1, n_test_bad=2, size=32)
    a = generate_dataset(tmp_path / "a", seed=3, **kw)
    b = generate_dataset(tmp_path / "b", seed=3, **kw)
    c = generate_dataset(tmp_path / "c", seed=4, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.png")) and len(files) == 7
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_skip_when_complete_and_refuse_foreign_folder(tmp_path: Path) -> None:
    kw = dict(categories=["weave"], n_train=2, n_test_good=1, n_test_bad=1, size=32)
    root = generate_dataset(tmp_path / "e", **kw)
    stamp = (root / MARKER).stat().st_mtime_ns
    generate_dataset(root, **kw)
    assert (root / MARKER).stat().st_mtime_ns == stamp  # skipped
    generate_dataset(root, **{**kw, "n_train": 3})  # other parameters: regenerated in place
    assert len(list((root / "weave" / "train" / "good").iterdir())) == 3
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "photo.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="mine"):
        generate_dataset(foreign, **kw)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary folder left behind


def test_default_category_is_fast_and_cli_make_data(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    assert cli_main(["make-data", "--root", str(tmp_path / "emb"), "--categories", "washer"]) == 0
    assert time.perf_counter() - t0 < 8.0  # one of 3 categories ~1.5 s alone; slack for a busy 2-core machine
    assert len(list((tmp_path / "emb" / "washer" / "train" / "good").iterdir())) == 80
    assert len(list((tmp_path / "emb" / "washer" / "ground_truth").rglob("*_mask.png"))) == 24


@pytest.fixture(scope="module")
def defect_masks() -> dict[str, np.ndarray]:
    """The anomalous test masks of the default embedded set (seed 0, 24 per category, 128 px), per category."""
    return {c: np.stack([anomalous_test_image(c, 0, i, 128)[1] > 0 for i in range(24)]) for c in CATEGORIES}


def test_defect_centroids_cover_the_image(defect_masks: dict[str, np.ndarray]) -> None:
    for cat, masks in defect_masks.items():
        ys, xs = np.nonzero(masks.any(0))
        cy = np.array([np.nonzero(m)[0].mean() for m in masks])
        cx = np.array([np.nonzero(m)[1].mean() for m in masks])
        quadrant = (cx >= 63.5).astype(int) + 2 * (cy >= 63.5)
        assert np.bincount(quadrant, minlength=4).min() >= 3, cat  # each quadrant gets a share of the 24
        assert cx.min() < 32 and cx.max() > 96 and cy.min() < 32 and cy.max() > 96, cat  # near every border


def test_a_centred_prior_cannot_find_the_defects(defect_masks: dict[str, np.ndarray]) -> None:
    # issue 13: a centred Gaussian (sigma = side/4) scored like a method over normal + anomalous test images
    prior = center_gaussian(128, 128)
    edges = validation_edges(prior, 1000, 1.0)  # a prior's validation maps are the prior itself
    for cat, masks in defect_masks.items():
        gt = np.concatenate([np.zeros((16, 128, 128), bool), masks])
        acc = PixelMetricAccumulator(edges=edges)
        acc.update(np.broadcast_to(prior, gt.shape), gt)
        assert acc.compute()["pixel_auroc"] <= 0.6, cat


def test_written_anomalies_are_the_generator_function(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "g", categories=["washer"], n_train=1, n_test_good=1, n_test_bad=4, size=32)
    for i in range(4):
        img, mask, defect = anomalous_test_image("washer", 0, i, 32)
        np.testing.assert_array_equal(_arr(root / "washer" / "test" / defect / "000.png"), img)
        np.testing.assert_array_equal(_arr(root / "washer" / "ground_truth" / defect / "000_mask.png"), mask)


def test_a_copy_from_an_older_generator_is_regenerated(tmp_path, monkeypatch) -> None:
    """The pipeline's embedded source must not reuse images of an older generator version (v1 centred its defects)."""
    import json

    import pytest

    from avaga_lib.config import DataConfig
    from avaga_lib.data import sources, synthetic

    root = tmp_path / "embedded"
    root.mkdir()
    (root / synthetic.MARKER).write_text(json.dumps({"generator_version": synthetic.GENERATOR_VERSION - 1}))
    calls = []
    monkeypatch.setattr(synthetic, "generate_dataset", lambda r: calls.append(r) or r)
    with pytest.warns(UserWarning, match="older embedded generator"):
        sources._prepare_embedded(root, DataConfig())
    assert calls == [root]
    (root / synthetic.MARKER).write_text(json.dumps({"generator_version": synthetic.GENERATOR_VERSION}))
    sources._prepare_embedded(root, DataConfig())
    assert calls == [root]  # a current copy is used as it is
