"""Shared fixtures: a tiny embedded dataset generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from avaga_lib.data.synthetic import generate_dataset

TINY_CATEGORIES = ("weave", "washer")  # one texture, one object


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root (MVTec layout) of a tiny embedded dataset: categories weave and washer, 64 px each,
    12 train/good, 4 test/good and 8 anomalous test images (2 per defect type) with masks.

    Read-only for tests: copy it (shutil.copytree) before changing anything.
    """
    root = tmp_path_factory.mktemp("tiny_dataset") / "embedded"
    return generate_dataset(root, seed=0, categories=TINY_CATEGORIES, n_train=12, n_test_good=4, n_test_bad=8,
                            size=64)


@pytest.fixture(scope="session")
def tiny_root(tiny_dataset: Path) -> Path:
    """Alias of :func:`tiny_dataset`."""
    return tiny_dataset
