"""The label names of a built dataset, and how many images carry each label."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from datasets import ClassLabel, Dataset

logger = logging.getLogger(__name__)


def label_names(dataset: Dataset) -> list[str]:
    """The label names of a dataset built here, in order (multi-label struct or ClassLabel)."""
    features = dataset.features
    if "labels" in features:
        return list(features["labels"])
    if "label" in features and isinstance(features["label"], ClassLabel):
        return list(features["label"].names)
    raise ValueError(f"Dataset has no 'labels' or 'label' column (columns: {list(features)}).")


def label_counts(dataset: Dataset) -> dict[str, int]:
    """Positives per finding (multi-label ``labels``) or images per class (``label``)."""
    names = label_names(dataset)
    column = "labels" if "labels" in dataset.features else "label"
    # Arrow keeps this cheap on large sets: no image is decoded, no row dict built.
    table = dataset.select_columns([column]).with_format("arrow")[:]
    values = table.column(column).combine_chunks()
    if column == "labels":
        return {n: int((values.field(n).to_numpy(zero_copy_only=False) == 1).sum()) for n in names}
    counts = np.bincount(values.to_numpy(zero_copy_only=False), minlength=len(names))
    return {n: int(c) for n, c in zip(names, counts, strict=True)}


def log_label_counts(
    data: Mapping[str, Dataset], level: int = logging.INFO
) -> dict[str, dict[str, int]]:
    """Log (at ``level``), per split, positives per finding or images per class, and warn about a
    class with none in training. Returns the counts; splits without labels are left out."""
    counts: dict[str, dict[str, int]] = {}
    for split, ds in data.items():
        if "labels" not in ds.features and "label" not in ds.features:
            continue
        counts[split] = label_counts(ds)
        logger.log(
            level,
            "%s: %d images; positives per class: %s",
            split,
            len(ds),
            ", ".join(f"{n} {c}" for n, c in counts[split].items()),
        )
    if none := [n for n, c in counts.get("train", {}).items() if c == 0]:
        logger.warning("No positive training image for %s: the model cannot learn them.", none)
    return counts
