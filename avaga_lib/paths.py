"""Central paths of the study (cookiecutter-data-science style): every other module asks here.

The project root is the folder holding ``pyproject.toml``; ``AVAGA_PROJECT_ROOT`` overrides it (tests use this to
write into a temporary folder).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR: Path = Path(__file__).resolve().parent
PAPER_TABLES_DIR: Path = PACKAGE_DIR / "paper_tables"  # the paper's tables transcribed as CSV (package data)


def project_root() -> Path:
    """Return the project root (``AVAGA_PROJECT_ROOT`` or the parent of the package)."""
    env = os.environ.get("AVAGA_PROJECT_ROOT")
    return Path(env).resolve() if env else PACKAGE_DIR.parent


def absolute(path: Path | str) -> Path:
    """``path`` itself when absolute, else relative to the project root (where papermill runs the notebooks)."""
    p = Path(path)
    return p if p.is_absolute() else project_root() / p


def data_dir() -> Path:
    """Folder for datasets (git-ignored): generated, downloaded or converted."""
    return project_root() / "data"


def embedded_root() -> Path:
    """Root of the embedded default dataset that ``make data`` generates (MVTec layout)."""
    return data_dir() / "embedded"


def mtd_converted_root() -> Path:
    """Root of the Magnetic Tile Defect set converted to the MVTec layout."""
    return data_dir() / "mtd"


def shared_magnetic_tile() -> Path | None:
    """The development copy of Magnetic Tile Defect beside the project, or None when absent."""
    candidate = project_root().parent / "shared" / "data" / "magnetic_tile"
    return candidate if candidate.is_dir() else None


def results_dir() -> Path:
    """Top of the results tree: ``results/<dataset>/<category>/<setting>/``."""
    return project_root() / "results"


def reference_dir() -> Path:
    """The committed reference results (``results/reference``): read only as a reference, never as runs."""
    return results_dir() / "reference"


def reference_for(results_tree: Path | str) -> Path:
    """Where the reference of a results tree lives: ``results/reference`` for the default tree (the embedded smoke
    study), ``<tree>/reference`` for any other (``results/cpu/reference`` for ``make reproduce PROFILE=cpu``), so
    two profiles never overwrite each other's runs or reference."""
    tree = Path(results_tree)
    tree = tree if tree.is_absolute() else project_root() / tree
    return reference_dir() if tree.resolve() == results_dir().resolve() else tree / "reference"
