"""Bottom of the data layer: its error type and the records every other data module exchanges.

Nothing here imports another module of ``avaga_lib.data``, so the readers (``dataset``), the converters (``mtd``,
``stc``, ``synthetic``, ``download``) and the source registry (``sources``) can all import from it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class DataLayoutError(ValueError):
    """Every bad-input error of the data layer; the message names the file/folder and what was expected."""


@dataclass(frozen=True)
class ImageRecord:
    """One image: absolute path, label (0 normal / 1 anomalous), defect type ("good" for normal), mask path.

    Absolute in memory only: run records (``splits.json``, ``predictions.csv``) store the path relative to the
    dataset root (``avaga_lib.data.dataset.relative_to_root``), so they read the same on another machine.
    """

    path: str
    label: int
    defect: str
    mask_path: str | None


@dataclass
class Splits:
    """The four splits of one category (see docs/ARCHITECTURE.md, Data contract)."""

    train: list[ImageRecord]  # normal training images (train/good minus validation)
    val: list[ImageRecord]  # normal-only calibration split (PN 8)
    test: list[ImageRecord]  # test images (weak images removed in the weak setting)
    weak: list[ImageRecord]  # anomalous images moved to training (weak setting; [] otherwise), label only
    has_masks: bool  # False: image-level only dataset; pixel metrics "unavailable"
    info: dict[str, Any] = field(default_factory=dict)  # root, category, seed, fractions (what splits.json records)
