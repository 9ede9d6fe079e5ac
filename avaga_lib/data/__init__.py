"""Data layer: MVTec-layout reader, splits, augmentation, download, embedded generator, Magnetic Tile adapter.

See docs/ARCHITECTURE.md (Data contract). Any folder in MVTec layout works ("bring your own images"):
``<root>/<category>/train/good``, ``<root>/<category>/test/<good|defect>``, optionally
``<root>/<category>/ground_truth/<defect>/<stem>_mask.png``.
"""

from avaga_lib.data.dataset import (
    AnomalyDataset,
    DataLayoutError,
    ImageRecord,
    Splits,
    augment_batch,
    make_splits,
    resolve_root,
    save_splits,
    scan_category,
    split_counts,
)
from avaga_lib.data.synthetic import generate_dataset

__all__ = [
    "AnomalyDataset",
    "DataLayoutError",
    "ImageRecord",
    "Splits",
    "augment_batch",
    "generate_dataset",
    "make_splits",
    "resolve_root",
    "save_splits",
    "scan_category",
    "split_counts",
]
