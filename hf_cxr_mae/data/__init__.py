"""Chest X-ray data with ``datasets``: loaders, image reading, transforms and the pixel cache.

The names load on first use (``hf_cxr_mae._lazy``): serving reads X-rays through ``data.images``
(numpy, Pillow, pydicom) without importing ``datasets`` and pandas (about 110 MiB).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "read_dicom": "images",
    "read_xray": "images",
    "to_grayscale": "images",
    "label_names": "label_stats",
    "CHEXPERT5_LABELS": "labels",
    "CHEXPERT14_LABELS": "labels",
    "NIH14_LABELS": "labels",
    "SOURCES": "loading",
    "load_cxr_dataset": "loading",
    "load_pretraining_dataset": "loading",
    "DataValidationError": "validation",
}

__all__ = [
    "CHEXPERT5_LABELS",
    "CHEXPERT14_LABELS",
    "NIH14_LABELS",
    "SOURCES",
    "DataValidationError",
    "label_names",
    "load_cxr_dataset",
    "load_pretraining_dataset",
    "read_dicom",
    "read_xray",
    "to_grayscale",
]

if TYPE_CHECKING:  # static tools see the names as before
    from .images import read_dicom, read_xray, to_grayscale
    from .label_stats import label_names
    from .labels import CHEXPERT5_LABELS, CHEXPERT14_LABELS, NIH14_LABELS
    from .loading import SOURCES, load_cxr_dataset, load_pretraining_dataset
    from .validation import DataValidationError

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
