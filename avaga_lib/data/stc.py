"""Modified ShanghaiTech Campus (STC): the official video release turned into an MVTec-layout image cache.

The paper (Sec. 4, A.1, PROTOCOL_NOTES 15) trains per scene on "every 5th frame of a video ... without using any
temporal information" and tests on the test frames with their pixel masks. This module converts the official
release once into an on-disk cache in the MVTec layout, one scene per "category", so that the ordinary MVTec reader,
the splits (validation, weak 2%) and the whole pipeline work unchanged::

    release (read only)                                  cache (written here)
    training/videos/<scene>_<clip>.avi          ->  <cache>/<scene>/train/good/<scene>_<clip>_<frame:05d>.png
    testing/frames/<scene>_<clip>/<n>.jpg       ->  <cache>/<scene>/test/good/<scene>_<clip>_<n:05d>.png      (label 0)
    testing/test_frame_mask/<scene>_<clip>.npy  ->  <cache>/<scene>/test/anomalous/<scene>_<clip>_<n:05d>.png (label 1)
    testing/test_pixel_mask/<scene>_<clip>.npy  ->  <cache>/<scene>/ground_truth/anomalous/<stem>_mask.png (0/255)

Extraction streams: videos are decoded frame by frame with OpenCV, pixel masks are memory-mapped, so neither a video
nor the release is ever held in memory. It is resumable: each clip is written into ``<cache>/.partial/<clip>`` and
moved into place only when complete, then a done-marker ``<cache>/.done/<split>/<clip>.json`` is written; a rerun
skips clips that have a marker. ``<cache>/stc_manifest.json`` records the extraction parameters so that a rerun with
different ones is refused instead of mixing two geometries in one cache.

Scenes: Table 1 of the paper says 13 scenes, Tables 4 and 5 list 01-12. Scenes default to 01-13 *as present in the
release*; a scene with training videos but no test clips is extracted for training only, with a warning (it cannot
be evaluated), which is what the release gives for scene 13 if it holds no test clips.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm.auto import tqdm

from avaga_lib import paths
from avaga_lib.data.records import DataLayoutError
from avaga_lib.io import atomic_write, read_json, write_json

DEFAULT_SCENES: tuple[str, ...] = tuple(f"{i:02d}" for i in range(1, 14))  # Table 1: 13 scenes (Tables 4/5: 01-12)
FRAME_STEP: int = 5  # A.1: "every 5th frame of a video from each scene"
MANIFEST_NAME: str = "stc_manifest.json"
COUNTS_NAME: str = "stc_counts.json"  # per-scene image counts of the whole cache (compare with Table 1)
CACHE_DIRNAME: str = "stc_cache"  # under paths.data_dir() when a release root is given (ensure_stc_cache)
_TEST_IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png")


@dataclass
class _Clip:
    """One unit of work: a training video or a test clip (frame folder + its two masks)."""

    split: str  # "train" | "test"
    scene: str
    name: str  # "<scene>_<clip>"
    video: Path | None = None  # train
    frames: list[Path] = field(default_factory=list)  # test, ordered by frame number
    frame_mask: Path | None = None  # test
    pixel_mask: Path | None = None  # test


# --------------------------------------------------------------------------------------------------- release scan


def _scene_of(name: str, where: Path) -> str:
    scene, sep, _ = name.partition("_")
    if not sep or not scene:
        raise DataLayoutError(f"{where / name}: expected a name '<scene>_<clip>' (e.g. 01_001), got '{name}'")
    return scene


def _frame_number(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError as exc:
        raise DataLayoutError(f"{path}: test frames must be named by their frame number (<n>.jpg)") from exc


def is_stc_release(root: Path | str) -> bool:
    """True when ``root`` looks like the official release (it holds ``training/videos``)."""
    return (Path(root) / "training" / "videos").is_dir()


def _scan_release(release_root: Path, scenes: Sequence[str] | None) -> tuple[list[_Clip], list[str]]:
    """List the clips to extract and check the test masks' presence and lengths (cheap: headers only)."""
    videos_dir = release_root / "training" / "videos"
    frames_dir = release_root / "testing" / "frames"
    fmask_dir = release_root / "testing" / "test_frame_mask"
    pmask_dir = release_root / "testing" / "test_pixel_mask"
    if not videos_dir.is_dir():
        raise DataLayoutError(
            f"{videos_dir}: not found; the ShanghaiTech Campus release root must hold training/videos/*.avi "
            "and testing/{frames,test_frame_mask,test_pixel_mask}"
        )
    if not frames_dir.is_dir():
        raise DataLayoutError(f"{frames_dir}: not found; expected testing/frames/<scene>_<clip>/<n>.jpg")

    videos = sorted(p for p in videos_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    test_dirs = sorted(p for p in frames_dir.iterdir() if p.is_dir())
    present = sorted(
        {_scene_of(p.stem, videos_dir) for p in videos} | {_scene_of(p.name, frames_dir) for p in test_dirs}
    )
    if scenes is None:
        wanted = [s for s in DEFAULT_SCENES if s in present]
        extra = sorted(set(present) - set(DEFAULT_SCENES))
        if extra:
            warnings.warn(f"{release_root}: scenes {extra} are outside 01-13 and were not requested", stacklevel=3)
    else:
        wanted = [str(s) for s in scenes]
    if not wanted:
        raise DataLayoutError(f"{release_root}: no scene of {list(DEFAULT_SCENES)} found in training/videos")

    clips: list[_Clip] = []
    for scene in wanted:
        scene_videos = [p for p in videos if _scene_of(p.stem, videos_dir) == scene]
        scene_tests = [p for p in test_dirs if _scene_of(p.name, frames_dir) == scene]
        if not scene_videos:
            raise DataLayoutError(f"{videos_dir}: no training video '{scene}_*.avi' for requested scene {scene}")
        if not scene_tests:
            warnings.warn(
                f"{frames_dir}: scene {scene} has no test clips ('{scene}_*'); it is extracted for training only and "
                "cannot be evaluated (the paper's Tables 4/5 list scenes 01-12)",
                stacklevel=3,
            )
        clips += [_Clip("train", scene, p.stem, video=p) for p in scene_videos]
        for clip_dir in scene_tests:
            clips.append(_scan_test_clip(clip_dir, fmask_dir, pmask_dir, scene))
    return clips, wanted


def _scan_test_clip(clip_dir: Path, fmask_dir: Path, pmask_dir: Path, scene: str) -> _Clip:
    frames = sorted(
        (p for p in clip_dir.iterdir() if p.suffix.lower() in _TEST_IMAGE_EXTS),
        key=_frame_number,
    )
    if not frames:
        raise DataLayoutError(f"{clip_dir}: no test frames (<n>.jpg)")
    fmask = fmask_dir / f"{clip_dir.name}.npy"
    pmask = pmask_dir / f"{clip_dir.name}.npy"
    for expected, what in ((fmask, "per-frame 0/1 labels"), (pmask, "T x H x W pixel masks")):
        if not expected.is_file():
            raise DataLayoutError(f"{expected}: missing; expected the {what} of test clip {clip_dir}")
    labels = _load_npy(fmask)
    masks = _load_npy(pmask)
    if labels.ndim != 1 or len(labels) != len(frames):
        raise DataLayoutError(
            f"{fmask}: shape {labels.shape} but {clip_dir} holds {len(frames)} frames; expected one label per frame"
        )
    if masks.ndim != 3 or masks.shape[0] != len(frames):
        raise DataLayoutError(
            f"{pmask}: shape {masks.shape} but {clip_dir} holds {len(frames)} frames; expected (T, H, W) with "
            f"T = {len(frames)}"
        )
    return _Clip("test", scene, clip_dir.name, frames=frames, frame_mask=fmask, pixel_mask=pmask)


def _load_npy(path: Path) -> np.ndarray:
    """Memory-mapped load: a clip's pixel masks (T x 480 x 856) are never read into RAM at once."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataLayoutError(f"{path}: unreadable .npy ({exc})") from exc


# --------------------------------------------------------------------------------------------------- decoding


def _resize(image: np.ndarray, size: int | None, nearest: bool = False) -> np.ndarray:
    """Scale so that the shorter side equals ``size`` (aspect kept); None keeps the release resolution."""
    if size is None:
        return image
    h, w = image.shape[:2]
    scale = size / min(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) == (w, h):
        return image
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return cv2.resize(image, (new_w, new_h), interpolation=interp)


def iter_video_frames(
    video: Path | str, frame_step: int = FRAME_STEP, tolerance: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, bgr_frame)`` for every ``frame_step``-th frame, decoding one frame at a time.

    Args:
        video: path of an ``.avi`` (any container/codec OpenCV's FFmpeg backend reads).
        frame_step: keep frames 0, step, 2*step, ... (A.1: 5).
        tolerance: frames the decoder may deliver fewer than the header's ``CAP_PROP_FRAME_COUNT`` (0 = strict).

    Raises:
        DataLayoutError: the file cannot be opened, yields no frame, or ends before its announced frame count
            (a truncated download), naming the file.
    """
    video = Path(video)
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            raise DataLayoutError(f"{video}: OpenCV cannot open this video (corrupt or unsupported); re-download it")
        announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % frame_step == 0:
                yield index, frame
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise DataLayoutError(f"{video}: no frame could be decoded; the file is corrupt or truncated")
    if announced > 0 and index < announced - tolerance:
        raise DataLayoutError(
            f"{video}: decoded {index} frames but the header announces {announced}; the file is truncated or "
            "corrupt (re-download it, or pass frame_count_tolerance if the header is known to be off)"
        )


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - encoding a decoded uint8 frame does not fail
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write(path, lambda p: p.write_bytes(buf.tobytes()))


def _extract_train(clip: _Clip, stage: Path, frame_step: int, size: int | None, tolerance: int) -> dict[str, int]:
    assert clip.video is not None
    n = 0
    for index, frame in iter_video_frames(clip.video, frame_step, tolerance):
        _write_png(stage / "train" / "good" / f"{clip.name}_{index:05d}.png", _resize(frame, size))
        n += 1
    return {"train": n}


def _extract_test(clip: _Clip, stage: Path, frame_step: int, size: int | None) -> dict[str, int]:
    assert clip.frame_mask is not None and clip.pixel_mask is not None
    labels = _load_npy(clip.frame_mask)
    masks = _load_npy(clip.pixel_mask)
    counts = {"test_good": 0, "test_anomalous": 0, "empty_masks": 0}
    for pos in range(0, len(clip.frames), frame_step):
        path = clip.frames[pos]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataLayoutError(f"{path}: unreadable test frame (corrupt image)")
        if masks.shape[1:] != image.shape[:2]:
            raise DataLayoutError(
                f"{clip.pixel_mask}: masks are {masks.shape[1]}x{masks.shape[2]} but frame {path} is "
                f"{image.shape[0]}x{image.shape[1]} (H x W); expected the same size"
            )
        stem = f"{clip.name}_{_frame_number(path):05d}"
        if int(labels[pos]) == 0:  # the frame label decides normal / anomalous (Liu et al. 2018 release)
            _write_png(stage / "test" / "good" / f"{stem}.png", _resize(image, size))
            counts["test_good"] += 1
            continue
        mask = (np.asarray(masks[pos]) > 0).astype(np.uint8) * 255  # MVTec convention: 0 / 255
        counts["empty_masks"] += int(not mask.any())  # anomalous frame without pixels: kept, counted
        _write_png(stage / "test" / "anomalous" / f"{stem}.png", _resize(image, size))
        _write_png(stage / "ground_truth" / "anomalous" / f"{stem}_mask.png", _resize(mask, size, nearest=True))
        counts["test_anomalous"] += 1
    return counts


def _commit_stage(stage: Path, scene_dir: Path) -> None:
    """Move every staged file into the scene folder (renames on one filesystem), then drop the stage."""
    for src in sorted(p for p in stage.rglob("*") if p.is_file()):
        dst = scene_dir / src.relative_to(stage)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    shutil.rmtree(stage)


# --------------------------------------------------------------------------------------------------- public API


def _check_manifest(cache_root: Path, params: dict[str, Any]) -> None:
    path = cache_root / MANIFEST_NAME
    if path.is_file():
        old = read_json(path)
        mismatch = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
        if mismatch:
            raise DataLayoutError(
                f"{path}: this cache was extracted with different parameters {mismatch} (cached, requested); "
                "use another cache_root or delete this one"
            )
    else:
        write_json(path, params)


def extract_stc(
    release_root: Path | str,
    cache_root: Path | str,
    scenes: Sequence[str] | None = None,
    frame_step: int = FRAME_STEP,
    size: int | None = None,
    progress: bool = True,
    test_frame_step: int = 1,
    frame_count_tolerance: int = 0,
) -> dict[str, dict[str, int]]:
    """Convert the official ShanghaiTech Campus release into the MVTec-layout cache, resumably.

    Args:
        release_root: folder holding ``training/videos`` and ``testing/{frames,test_frame_mask,test_pixel_mask}``.
        cache_root: output folder; ``<cache_root>/<scene>`` is an MVTec category (``DataConfig(dataset="stc",
            root=cache_root, category="01")``).
        scenes: scene ids ("01".."13"); None = every scene of 01-13 present in the release.
        frame_step: keep every ``frame_step``-th training frame (A.1: 5).
        size: shorter side of the cached frames and masks (aspect kept); None keeps the release's 856x480.
            The pipeline resizes to ``image_size`` anyway; 288 (= 256 x 1.125, PN 13) loses nothing at the paper
            profile and divides the disk use by about three.
        progress: show a tqdm bar over clips.
        test_frame_step: keep every n-th test frame (1 = all; the paper does not subsample the test set).
        frame_count_tolerance: frames a video may decode fewer than its header announces (0 = strict).

    Returns:
        ``{scene: {"train": n, "test_good": n, "test_anomalous": n, "empty_masks": n, "train_videos": k,
        "test_clips": k}}`` over the whole cache (finished clips included), where ``empty_masks`` counts anomalous
        frames whose pixel mask is empty. The counts of every scene in the cache are also merged into
        ``<cache_root>/stc_counts.json``.

    Raises:
        DataLayoutError: missing folder, missing mask ``.npy`` (named), mask length != frame count, a truncated or
            unreadable video (named), or a cache extracted with other parameters.
    """
    release_root, cache_root = Path(release_root), Path(cache_root)
    if frame_step < 1 or test_frame_step < 1:
        raise ValueError(f"frame_step={frame_step} and test_frame_step={test_frame_step} must be >= 1")
    if size is not None and size < 8:
        raise ValueError(f"size={size} is too small; give the shorter side in pixels (e.g. 288) or None")
    clips, wanted = _scan_release(release_root, scenes)  # every layout error surfaces before any decoding
    cache_root.mkdir(parents=True, exist_ok=True)
    _check_manifest(
        cache_root,
        {"format": "stc-mvtec-1", "frame_step": frame_step, "test_frame_step": test_frame_step, "size": size},
    )
    keys = ("train", "test_good", "test_anomalous", "empty_masks", "train_videos", "test_clips")
    totals: dict[str, dict[str, int]] = {s: dict.fromkeys(keys, 0) for s in wanted}
    bar = tqdm(clips, desc="STC extraction", unit="clip", disable=not progress)
    for clip in bar:
        bar.set_postfix_str(clip.name)
        counts = _extract_clip(clip, cache_root, frame_step, test_frame_step, size, frame_count_tolerance)
        for key, value in counts.items():
            totals[clip.scene][key] = totals[clip.scene].get(key, 0) + int(value)
        totals[clip.scene]["train_videos" if clip.split == "train" else "test_clips"] += 1
    bar.close()
    _finish_cache(cache_root, totals)
    return totals


def _extract_clip(
    clip: _Clip, cache_root: Path, frame_step: int, test_frame_step: int, size: int | None, tolerance: int
) -> dict[str, int]:
    """Extract one clip through its stage folder (or read the counts of a finished one from its done-marker)."""
    marker = cache_root / ".done" / clip.split / f"{clip.name}.json"
    if marker.is_file():
        return read_json(marker)
    stage = cache_root / ".partial" / f"{clip.split}_{clip.name}"
    if stage.exists():  # left over by an interrupted run: start the clip again
        shutil.rmtree(stage)
    try:
        if clip.split == "train":
            counts = _extract_train(clip, stage, frame_step, size, tolerance)
        else:
            counts = _extract_test(clip, stage, test_frame_step, size)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)  # nothing of a failed clip reaches the cache
        raise
    _commit_stage(stage, cache_root / clip.scene)
    write_json(marker, counts)
    return counts


def _finish_cache(cache_root: Path, totals: dict[str, dict[str, int]]) -> None:
    """Drop the empty stage folder and merge this call's per-scene counts into ``stc_counts.json``."""
    partial = cache_root / ".partial"
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()
    counts_path = cache_root / COUNTS_NAME
    merged = read_json(counts_path) if counts_path.is_file() else {}  # scenes extracted by earlier calls stay listed
    merged.update(totals)
    write_json(counts_path, dict(sorted(merged.items())))


def is_stc_cache(root: Path | str) -> bool:
    """True when ``root`` holds an extraction manifest (a cache written by :func:`extract_stc`)."""
    return (Path(root) / MANIFEST_NAME).is_file()


def ensure_stc_cache(
    release_or_cache_root: Path | str,
    scenes: Sequence[str] | None = None,
    size: int | None = None,
    progress: bool = True,
) -> Path:
    """Return an MVTec-layout STC root, extracting the release into ``paths.data_dir()/stc_cache`` when needed.

    Args:
        release_or_cache_root: the official release (holds ``training/videos``), or a cache made by
            :func:`extract_stc`, or "" for the default cache ``paths.data_dir()/stc_cache``.
        scenes: scenes to make sure of (e.g. ``[cfg.category]``); None = all present in the release.
        size: shorter side when a new cache is started; None reuses the existing cache's size (full resolution
            for a new cache).
        progress: tqdm bar during extraction.

    Raises:
        DataLayoutError: the folder is neither a release nor a cache, or a requested scene is missing.
    """
    default_cache = paths.data_dir() / CACHE_DIRNAME
    root = Path(release_or_cache_root).expanduser() if str(release_or_cache_root) else default_cache
    if is_stc_release(root):
        if size is None and is_stc_cache(default_cache):
            size = read_json(default_cache / MANIFEST_NAME).get("size")
        extract_stc(root, default_cache, scenes=scenes, size=size, progress=progress)  # resumable: cheap when done
        return default_cache
    if is_stc_cache(root):
        for scene in scenes or ():
            if not (root / str(scene) / "train" / "good").is_dir():
                raise DataLayoutError(
                    f"{root / str(scene)}: scene {scene} is not in this STC cache; extract it with "
                    f"extract_stc(<release>, '{root}', scenes=['{scene}'])"
                )
        return root
    raise DataLayoutError(
        f"{root}: neither the ShanghaiTech Campus release (training/videos/*.avi, testing/...) nor an STC cache "
        f"({MANIFEST_NAME}); set data.root to the release folder"
    )


def count_summary(totals: dict[str, dict[str, int]]) -> str:
    """Per-scene image counts of :func:`extract_stc` as a text table (compare with Table 1)."""
    lines = [f"{'scene':>5} {'train':>8} {'test_good':>10} {'test_anom':>10} {'videos':>7} {'clips':>6}"]
    for scene, c in totals.items():
        lines.append(
            f"{scene:>5} {c['train']:>8} {c['test_good']:>10} {c['test_anomalous']:>10} "
            f"{c['train_videos']:>7} {c['test_clips']:>6}"
        )
    return "\n".join(lines)
