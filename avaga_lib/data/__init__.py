"""Data layer: MVTec-layout reader, splits, augmentation, download, embedded generator, Magnetic Tile adapter.

See docs/ARCHITECTURE.md (Data contract). Any folder in MVTec layout works ("bring your own images"):
``<root>/<category>/train/good``, ``<root>/<category>/test/<good|defect>``, optionally
``<root>/<category>/ground_truth/<defect>/<stem>_mask.png``.

Modules, bottom up (each imports only those above it in this list): ``records`` (error, records), ``geometry``
(squash / letterbox / reflect to the square input and back) ->
``synthetic``, ``mtd``, ``stc``, ``download`` (generators / converters) -> ``sources`` (the registry of data sources
and :func:`resolve_root`) -> ``dataset`` (reader, splits, tensors, augmentation).
"""

from avaga_lib.data.dataset import (
    AnomalyDataset,
    augment_batch,
    make_splits,
    save_splits,
    scan_category,
    split_counts,
)
from avaga_lib.data.geometry import PAD_VALUE, PADDED, content_box, to_image_size, to_square, valid_mask
from avaga_lib.data.records import DataLayoutError, ImageRecord, Splits
from avaga_lib.data.sources import SOURCES, DataSource, preparation_key, prepare_datasets, resolve_root
from avaga_lib.data.synthetic import generate_dataset

__all__ = [
    "PADDED",
    "PAD_VALUE",
    "SOURCES",
    "AnomalyDataset",
    "DataLayoutError",
    "DataSource",
    "ImageRecord",
    "Splits",
    "augment_batch",
    "content_box",
    "generate_dataset",
    "make_splits",
    "preparation_key",
    "prepare_datasets",
    "resolve_root",
    "save_splits",
    "scan_category",
    "split_counts",
    "to_image_size",
    "to_square",
    "valid_mask",
]
