"""Checked records -> ``datasets.Dataset``.

Every source module turns its files into a table of records (``path``, labels, metadata, and a
``where`` string naming the file and row it came from). ``build_splits`` checks that table
(``image_paths``, ``splits``) and builds one dataset per split with the same columns for every
source: ``image``, ``image_id``, ``patient_id``, ``view`` and ``labels`` or ``label``, plus the
metadata the source has (``sex``, ``age`` and a CSV's own columns, see ``metadata``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, Features, Image, Value

from .image_paths import resolve_paths
from .images import DICOM_SUFFIXES, read_xray
from .metadata import normalize_view
from .splits import check_split_overlap
from .validation import DataValidationError


def _image_value(path: str) -> dict:
    # DICOM is decoded now, to PNG pixels only: no tag can travel further.
    if path.lower().endswith(DICOM_SUFFIXES):
        buffer = io.BytesIO()
        read_xray(path).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}
    return {"bytes": None, "path": path}


def _missing(value: object) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def labels_feature(names: Sequence[str]) -> dict[str, Value]:
    """Multi-label targets as a struct of float32 fields, in a fixed, named order."""
    return {name: Value("float32") for name in names}


def build_splits(
    parts: Mapping[str, pd.DataFrame],
    data_dir: Path,
    source: str,
    *,
    label_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    check_images: str = "open",
    on_bad: str = "raise",
    metadata_columns: Sequence[str] = (),
) -> dict[str, Dataset]:
    """A dataset per split from its records, each checked by ``resolve_paths``, and no image
    or patient in two splits. ``source`` names the file(s) the records came from; records'
    ``sex`` / ``age`` (normalised already) and ``metadata_columns`` become columns."""
    resolved = {s: resolve_paths(r, data_dir, check_images, on_bad) for s, r in parts.items()}
    resolved = check_split_overlap(resolved, on_bad)
    if not any(len(r) for r in resolved.values()):
        given = sum(len(r) for r in parts.values())
        raise DataValidationError(
            f"no usable rows in {source}: "
            + (
                f"all {given} were left out as bad (see the warnings above)."
                if given
                else "it lists no images."
            )
        )
    return {
        s: build_dataset(r, data_dir, label_names, class_names, metadata_columns)
        for s, r in resolved.items()
    }


def build_dataset(
    records: pd.DataFrame,
    data_dir: Path,
    label_names: Sequence[str] | None,
    class_names: Sequence[str] | None,
    metadata_columns: Sequence[str] = (),
) -> Dataset:
    """One split's dataset from its checked records (see ``build_splits``)."""
    root = os.path.normpath(data_dir.absolute()) + os.sep
    columns: dict[str, list] = {
        "image": [_image_value(p) for p in records["path"]],
        "image_id": [p.removeprefix(root) for p in records["path"]],
        "patient_id": [
            None if pd.isna(v) else str(v) for v in records.get("patient_id", [None] * len(records))
        ],
        "view": [normalize_view(v) for v in records.get("view", [None] * len(records))],
    }
    features = {
        "image": Image(),
        "image_id": Value("string"),
        "patient_id": Value("string"),
        "view": Value("string"),
    }
    # Only where the source has them: a source without ages gets no column of None ages.
    if "sex" in records:
        columns["sex"] = [None if _missing(v) else str(v) for v in records["sex"]]
        features["sex"] = Value("string")
    if "age" in records:
        columns["age"] = [None if _missing(v) else float(v) for v in records["age"]]
        features["age"] = Value("float32")
    for name in metadata_columns:
        columns[name] = [None if _missing(v) else str(v) for v in records[name]]
        features[name] = Value("string")
    if label_names is not None:
        matrix = np.asarray(list(records["labels"]), dtype=np.float32).reshape(
            len(records), len(label_names)
        )
        columns["labels"] = [dict(zip(label_names, row.tolist(), strict=True)) for row in matrix]
        features["labels"] = labels_feature(label_names)
    if class_names is not None:
        columns["label"] = [int(v) for v in records["label"]]
        features["label"] = ClassLabel(names=list(class_names))
    return Dataset.from_dict(columns, features=Features(features))
