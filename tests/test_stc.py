"""Modified ShanghaiTech Campus: extraction of a tiny release-layout fixture into the MVTec-layout cache."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from avaga_lib.cli import main as cli_main
from avaga_lib.data import stc
from avaga_lib.data.stc import DataLayoutError, ensure_stc_cache, extract_stc
from avaga_lib.training import demo

W, H = 64, 48  # fixture frame size (the release is 856 x 480)
N_FRAMES = 12  # per training video and per test clip
ANOMALOUS = range(4, 10)  # test frames 4..9 of every clip carry an anomaly


def _frame(i: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth scene with noise; brightness drifts with the frame index so frames differ."""
    yy, xx = np.mgrid[0:H, 0:W]
    base = (60 + 80 * xx / W + 40 * yy / H + 3 * i).astype(np.float32)
    img = np.stack([base, base * 0.9, base * 0.8], axis=-1) + rng.normal(0, 4, (H, W, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _box(i: int) -> tuple[slice, slice]:
    x0 = 8 + 3 * i  # the "anomaly" walks across the scene
    return slice(12, 28), slice(x0, x0 + 12)


def make_release(root: Path, scenes: tuple[str, ...] = ("01", "02"), clips: int = 2) -> Path:
    """Write a release-layout fixture: MJPG .avi training videos, jpg test frames, .npy frame and pixel masks."""
    rng = np.random.default_rng(0)
    videos = root / "training" / "videos"
    videos.mkdir(parents=True)
    for scene in scenes:
        for c in range(1, clips + 1):
            writer = cv2.VideoWriter(str(videos / f"{scene}_{c:03d}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 24, (W, H))
            assert writer.isOpened()
            for i in range(N_FRAMES):
                writer.write(_frame(i, rng))
            writer.release()
            name = f"{scene}_{c:04d}"
            frames = root / "testing" / "frames" / name
            frames.mkdir(parents=True)
            labels = np.zeros(N_FRAMES, dtype=np.int64)
            masks = np.zeros((N_FRAMES, H, W), dtype=np.uint8)
            for i in range(N_FRAMES):
                img = _frame(i, rng)
                if i in ANOMALOUS:
                    labels[i] = 1
                    masks[i][_box(i)] = 1
                    img[_box(i)] = (20, 20, 230)
                cv2.imwrite(str(frames / f"{i:03d}.jpg"), img)
            for sub, arr in (("test_frame_mask", labels), ("test_pixel_mask", masks)):
                (root / "testing" / sub).mkdir(parents=True, exist_ok=True)
                np.save(root / "testing" / sub / f"{name}.npy", arr)
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_release(tmp_path_factory.mktemp("stc_release"))


@pytest.fixture(scope="module")
def cache(release: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("stc_cache")
    return root, extract_stc(release, root, progress=False)


def _copy_release(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------------ extraction


def test_extract_layout_and_counts(cache: tuple[Path, dict]) -> None:
    root, counts = cache
    n_train = len(range(0, N_FRAMES, 5))  # frames 0, 5, 10
    n_anom = len(ANOMALOUS)
    assert set(counts) == {"01", "02"}
    for scene in ("01", "02"):
        c = counts[scene]
        assert (c["train"], c["test_good"], c["test_anomalous"]) == (2 * n_train, 2 * (N_FRAMES - n_anom), 2 * n_anom)
        assert (c["train_videos"], c["test_clips"], c["empty_masks"]) == (2, 2, 0)
        train = sorted(p.name for p in (root / scene / "train" / "good").iterdir())
        assert train == [f"{scene}_{c:03d}_{i:05d}.png" for c in (1, 2) for i in (0, 5, 10)]
        anom = sorted(p.stem for p in (root / scene / "test" / "anomalous").iterdir())
        masks = sorted(p.stem for p in (root / scene / "ground_truth" / "anomalous").iterdir())
        assert masks == [f"{s}_mask" for s in anom]
        assert len(list((root / scene / "test" / "good").glob("*.png"))) == c["test_good"]
    assert not (root / ".partial").exists()
    assert json.loads((root / "stc_counts.json").read_text()) == counts


def test_extracted_pixels_and_masks(cache: tuple[Path, dict], release: Path) -> None:
    root, _ = cache
    # training frame 5 of video 01_002: same content as decoding the video directly
    cap = cv2.VideoCapture(str(release / "training" / "videos" / "01_002.avi"))
    for _ in range(6):
        ok, frame = cap.read()
        assert ok
    cap.release()
    cached = cv2.imread(str(root / "01" / "train" / "good" / "01_002_00005.png"))
    np.testing.assert_array_equal(cached, frame)  # PNG is lossless: exactly the decoded frame
    # anomalous test frame 6 of clip 02_0001: mask is 0/255 at the box, image is the jpg
    mask = cv2.imread(str(root / "02" / "ground_truth" / "anomalous" / "02_0001_00006_mask.png"), cv2.IMREAD_GRAYSCALE)
    expected = np.zeros((H, W), np.uint8)
    expected[_box(6)] = 255
    np.testing.assert_array_equal(mask, expected)
    img = cv2.imread(str(root / "02" / "test" / "anomalous" / "02_0001_00006.png"))
    np.testing.assert_array_equal(img, cv2.imread(str(release / "testing" / "frames" / "02_0001" / "006.jpg")))
    assert (root / "02" / "test" / "good" / "02_0001_00003.png").is_file()


def test_size_downscales_frames_and_masks(release: Path, tmp_path: Path) -> None:
    counts = extract_stc(release, tmp_path, scenes=["01"], size=24, progress=False)
    assert set(counts) == {"01"}
    img = cv2.imread(str(tmp_path / "01" / "train" / "good" / "01_001_00000.png"))
    assert img.shape[:2] == (24, 32)  # shorter side 24, aspect 4:3 kept
    mask = cv2.imread(str(tmp_path / "01" / "ground_truth" / "anomalous" / "01_0001_00004_mask.png"), 0)
    assert mask.shape == (24, 32) and set(np.unique(mask)) == {0, 255}  # nearest: still binary
    with pytest.raises(DataLayoutError, match="different parameters"):
        extract_stc(release, tmp_path, scenes=["01"], size=None, progress=False)


def test_resume_skips_finished_clips(release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = extract_stc(release, tmp_path, scenes=["01"], progress=False)
    decoded: list[str] = []
    real = stc.iter_video_frames

    def spy(video: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        decoded.append(Path(video).name)
        return real(video, *args, **kwargs)

    monkeypatch.setattr(stc, "iter_video_frames", spy)
    assert extract_stc(release, tmp_path, scenes=["01"], progress=False) == first
    assert decoded == []  # everything was done: nothing decoded again
    (tmp_path / ".done" / "train" / "01_002.json").unlink()  # as if interrupted during that clip
    (tmp_path / ".partial" / "train_01_002" / "train" / "good").mkdir(parents=True)  # with a leftover stage
    assert extract_stc(release, tmp_path, scenes=["01"], progress=False) == first
    assert decoded == ["01_002.avi"]
    assert not (tmp_path / ".partial").exists()


def test_default_scenes_and_train_only_scene(tmp_path: Path) -> None:
    release = make_release(tmp_path / "rel", scenes=("03",), clips=1)
    # a scene with training videos only (as scene 13 may be): extracted for training, with a warning
    writer = cv2.VideoWriter(
        str(release / "training" / "videos" / "13_001.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 24, (W, H)
    )
    for i in range(6):
        writer.write(_frame(i, np.random.default_rng(i)))
    writer.release()
    with pytest.warns(UserWarning, match="scene 13 has no test clips"):
        counts = extract_stc(release, tmp_path / "cache", progress=False)
    assert list(counts) == ["03", "13"]
    assert counts["13"]["train"] == 2 and counts["13"]["test_clips"] == 0


# ------------------------------------------------------------------------------------------------ bad input


def test_truncated_video_is_named(release: Path, tmp_path: Path) -> None:
    rel = _copy_release(release, tmp_path / "rel")
    video = rel / "training" / "videos" / "02_001.avi"
    data = video.read_bytes()
    video.write_bytes(data[: int(len(data) * 0.9)])  # cut the tail: header still announces 12 frames
    out = tmp_path / "cache"
    with pytest.raises(DataLayoutError, match=r"02_001\.avi.*truncated"):
        extract_stc(rel, out, progress=False)
    assert not (out / ".done" / "train" / "02_001.json").exists()
    assert not list((out / "02" / "train" / "good").glob("02_001_*"))  # nothing of the failed clip in the cache
    assert not list((out / ".partial").glob("*"))


def test_unreadable_video_is_named(release: Path, tmp_path: Path) -> None:
    rel = _copy_release(release, tmp_path / "rel")
    (rel / "training" / "videos" / "01_001.avi").write_bytes(b"not a video" * 10)
    with pytest.raises(DataLayoutError, match=r"01_001\.avi"):
        extract_stc(rel, tmp_path / "cache", scenes=["01"], progress=False)


@pytest.mark.parametrize("sub", ["test_frame_mask", "test_pixel_mask"])
def test_missing_mask_names_expected_file(release: Path, tmp_path: Path, sub: str) -> None:
    rel = _copy_release(release, tmp_path / "rel")
    (rel / "testing" / sub / "02_0002.npy").unlink()
    out = tmp_path / "cache"
    with pytest.raises(DataLayoutError, match=rf"{sub}/02_0002\.npy: missing"):
        extract_stc(rel, out, progress=False)
    assert not (out / "01").exists()  # layout errors surface before any decoding


@pytest.mark.parametrize("sub", ["test_frame_mask", "test_pixel_mask"])
def test_mask_length_mismatch(release: Path, tmp_path: Path, sub: str) -> None:
    rel = _copy_release(release, tmp_path / "rel")
    path = rel / "testing" / sub / "01_0001.npy"
    np.save(path, np.load(path)[:-1])
    with pytest.raises(DataLayoutError, match=rf"01_0001\.npy: shape .* holds {N_FRAMES} frames"):
        extract_stc(rel, tmp_path / "cache", progress=False)


def test_missing_release_folders(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match="training/videos"):
        extract_stc(tmp_path, tmp_path / "cache", progress=False)
    with pytest.raises(DataLayoutError, match="neither"):
        ensure_stc_cache(tmp_path)


# ------------------------------------------------------------------------------------------------ ensure / reader


def test_ensure_stc_cache(release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVAGA_PROJECT_ROOT", str(tmp_path))
    cache_root = ensure_stc_cache(release, scenes=["02"], progress=False)
    assert cache_root == tmp_path / "data" / "stc_cache"
    assert (cache_root / "02" / "train" / "good").is_dir() and not (cache_root / "01").exists()  # only 02 asked
    ensure_stc_cache(release, scenes=["01"], progress=False)  # a second scene joins the same cache
    assert list(json.loads((cache_root / "stc_counts.json").read_text())) == ["01", "02"]
    assert ensure_stc_cache(cache_root, scenes=["02"]) == cache_root  # a cache is used as is
    assert ensure_stc_cache("") == cache_root  # "" = the default cache
    with pytest.raises(DataLayoutError, match="scene 03 is not in this STC cache"):
        ensure_stc_cache(cache_root, scenes=["03"])


def test_cli_main(release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["stc", "--release", str(release), "--cache", str(tmp_path), "--scenes", "01"]) == 0
    assert "01" in capsys.readouterr().out and (tmp_path / "01" / "test" / "anomalous").is_dir()


def test_mvtec_reader_reads_a_scene(cache: tuple[Path, dict], tmp_path: Path) -> None:
    from avaga_lib.config import DataConfig
    from avaga_lib.data import AnomalyDataset, make_splits

    root, counts = cache
    cfg = DataConfig(dataset="stc", root=str(root), category="01", image_size=32)
    unsup = make_splits(cfg, "unsupervised", save_dir=tmp_path)
    assert (tmp_path / "splits.json").is_file() and unsup.has_masks
    assert len(unsup.train) + len(unsup.val) == counts["01"]["train"] and unsup.weak == []
    assert sorted(r.defect for r in unsup.test) == sorted(["good"] * 12 + ["anomalous"] * 12)
    weak = make_splits(cfg, "weak")
    assert len(weak.weak) == 1 and len(weak.test) == len(unsup.test) - 1  # ceil(2% of 12) = 1 (PN 12)
    ds = AnomalyDataset(unsup.test, image_size=32, train=False)
    anomalous = ds.labels == 1
    assert ds.images.shape == (24, 3, 32, 32)
    assert bool((ds.masks[anomalous].flatten(1).sum(1) > 0).all())  # every anomalous frame has its mask
    assert int(ds.masks[~anomalous].sum()) == 0


def test_resolve_root_extracts_a_release(release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from avaga_lib.config import DataConfig
    from avaga_lib.data import resolve_root

    monkeypatch.setenv("AVAGA_PROJECT_ROOT", str(tmp_path))
    root = resolve_root(DataConfig(dataset="stc", root=str(release), category="02"))
    assert root == tmp_path / "data" / "stc_cache"
    assert (root / "02" / "test" / "anomalous").is_dir() and not (root / "01").exists()  # only the scene asked for


# ------------------------------------------------------------------------------------------------ end to end


def _tiny_run_config(root: Path, results: Path, setting: str):  # type: ignore[no-untyped-def]
    from avaga_lib.config import make_config

    return make_config(
        "smoke",
        {
            "data.dataset": "stc",
            "data.root": str(root),
            "data.category": "01",
            "data.image_size": 64,
            "data.val_fraction": 0.2,
            "model.pretrained": "none",  # never download in tests
            "train.setting": setting,
            "train.epochs": 1,
            "train.batch_size": 4,  # 4 training frames after the validation split: one step per epoch
            "results_dir": str(results),
        },
    )


def _check_metrics(run_dir: Path, n_test: int, n_anomalous: int) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_test"] == n_test and metrics["n_anomalous"] == n_anomalous
    assert metrics["pixel_metrics_available"] is True  # the STC cache carries pixel masks
    for key in ("iou", "mean_accuracy", "image_auroc", "pixel_auroc", "aupro"):
        assert metrics[key] is not None and 0.0 <= metrics[key] <= 1.0, key
    return metrics


def test_pipeline_run_from_the_release(release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end with data.root = the *release*: resolve_root extracts the scene, then make_splits -> train_run ->
    evaluate_run -> save_run (demo.run_inline, the library path the notebooks take), 1 epoch at 64 px."""
    monkeypatch.setenv("AVAGA_PROJECT_ROOT", str(tmp_path))
    cfg = _tiny_run_config(release, tmp_path / "results", "unsupervised")
    run_dir = demo.run_inline(cfg, figures=False)
    assert (tmp_path / "data" / "stc_cache" / "01" / "train" / "good").is_dir()
    metrics = _check_metrics(run_dir, 2 * N_FRAMES, 2 * len(ANOMALOUS))
    assert metrics["run_id"] == "AVAGA-R_u-seed0"
    splits = json.loads((run_dir / "splits.json").read_text())
    assert splits["root"] == str(tmp_path / "data" / "stc_cache")  # the splits name the cache, not the release
