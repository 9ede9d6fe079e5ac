"""Atomic writes: a failing writer leaves the previous file intact and no temp files behind; files get the umask's
mode."""

from __future__ import annotations

import errno
import math
import os
import stat
import tempfile
from pathlib import Path

import pytest

from avaga_lib.io import atomic_write, current_umask, read_json, read_yaml_mapping, replace_dir, write_json


def test_failed_write_keeps_previous_file(tmp_path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"iou": 0.5})

    def broken(path):
        path.write_text("{half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert read_json(target) == {"iou": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_non_finite_numbers_become_null(tmp_path) -> None:
    write_json(tmp_path / "m.json", {"pixel_auroc": math.nan, "x": [1.0, math.inf]})
    assert read_json(tmp_path / "m.json") == {"pixel_auroc": None, "x": [1.0, None]}


def test_read_yaml_mapping_names_the_file_on_bad_input(tmp_path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("dataset: embedded\nseeds: [0, 1]\n")
    assert read_yaml_mapping(good, ValueError, "dataset") == {"dataset": "embedded", "seeds": [0, 1]}
    broken = tmp_path / "broken.yaml"
    broken.write_text("dataset: [unclosed\n")
    with pytest.raises(KeyError, match="broken.yaml: not valid YAML"):
        read_yaml_mapping(broken, KeyError, "dataset")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"list.yaml: expected a mapping with dataset, seeds"):
        read_yaml_mapping(listed, ValueError, "dataset, seeds")


def test_result_files_and_swapped_folders_honour_the_umask(tmp_path) -> None:
    """Issue 22: mkstemp's 0600 made every result file unreadable to the other users of a shared file system."""
    previous = os.umask(0o022)
    try:
        assert current_umask() == 0o022
        write_json(tmp_path / "metrics.json", {"iou": 0.5})
        assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644  # as open(path, "w") gives
        folder = Path(tempfile.mkdtemp(dir=tmp_path))  # how callers of replace_dir build the new folder (0700)
        write_json(folder / "a.json", {})
        replace_dir(folder, tmp_path / "reference")
        assert stat.S_IMODE((tmp_path / "reference").stat().st_mode) == 0o755
        os.umask(0o027)
        assert current_umask() == 0o027
        write_json(tmp_path / "metrics.json", {"iou": 0.6})
        assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o640
    finally:
        os.umask(previous)


def test_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path: Path) -> None:
    """Issue 22: a full disk said 'No space left on device' with no path."""
    target = tmp_path / "results" / "metrics.json"
    write_json(target, {"ok": 1})

    def full(tmp: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="no space left to write .*metrics.json .*MB free.*RESULTS="):
        atomic_write(target, full)
    assert read_json(target) == {"ok": 1} and not list(target.parent.glob(".*.tmp"))
