"""Chest X-ray data with ``datasets``: loaders, image reading, transforms and the pixel cache."""

from .images import read_dicom, read_xray, to_grayscale
from .label_stats import label_names
from .labels import CHEXPERT5_LABELS, CHEXPERT14_LABELS, NIH14_LABELS
from .loading import SOURCES, load_cxr_dataset, load_pretraining_dataset
from .validation import DataValidationError

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
