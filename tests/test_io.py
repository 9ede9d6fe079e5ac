"""Atomic writes: a failing writer leaves the previous file intact and no temp files behind."""

from __future__ import annotations

import math

import pytest

from avaga_lib.io import atomic_write, read_json, write_json


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
