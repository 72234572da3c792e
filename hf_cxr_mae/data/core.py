"""Shared machinery of the loaders: checked records -> ``datasets.Dataset``.

Every source module turns its files into a table of records (``path``, labels, metadata, and a
``where`` string naming the file and row it came from). This module validates that table (paths
inside the data folder, files present and readable, no duplicates), then builds the dataset.
Problems raise one ``DataValidationError`` naming each offender, or with ``on_bad="skip"`` are
dropped and reported; nothing is dropped silently.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage

from .images import DICOM_SUFFIXES, read_xray

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)
_SHOWN = 20  # offenders listed in full in one message


class DataValidationError(ValueError):
    """Bad input data; the message names every offending file / row (first 20 in full)."""


@dataclass
class Problem:
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def report(problems: Sequence[Problem], what: str, hint: str = "") -> str:
    lines = [str(p) for p in problems[:_SHOWN]]
    if len(problems) > _SHOWN:
        lines.append(f"... and {len(problems) - _SHOWN} more")
    text = f"{len(problems)} bad {what}:\n  " + "\n  ".join(lines)
    return text + (f"\n{hint}" if hint else "")


def raise_or_skip(problems: list[Problem], on_bad: str, what: str) -> set[str]:
    """Raise on problems (default) or, with ``on_bad="skip"``, log them and return their ``where``."""
    if on_bad not in ("raise", "skip"):
        raise ValueError(f"on_bad must be 'raise' or 'skip', got {on_bad!r}.")
    if not problems:
        return set()
    if on_bad == "raise":
        raise DataValidationError(
            report(problems, what, "Fix them, or pass on_bad='skip' to leave them out.")
        )
    logger.warning("Skipping %s", report(problems, what))
    return {p.where for p in problems}


def read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` with clear errors for a missing or empty file."""
    if not path.is_file():
        raise FileNotFoundError(f"Label file not found: {path}")
    try:
        frame = pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as err:
        raise DataValidationError(f"{path} is empty (no header, no rows).") from err
    if frame.empty:
        raise DataValidationError(f"{path} has a header but no rows.")
    return frame


def csv_where(csv_path: Path, index: int) -> str:
    """'file.csv line N' for the data row at 0-based position ``index`` (the header is line 1)."""
    return f"{csv_path} line {index + 2}"


def check_image(path: Path, level: str) -> str | None:
    """None if the image is usable at this check level, else the reason.

    ``"open"`` reads the header (cheap; catches missing, non-image and wrong-format files),
    ``"decode"`` decodes every pixel (also catches truncated files), ``"exists"`` only checks
    the file is there.
    """
    if not path.is_file():
        return "file not found"
    if level == "exists":
        return None
    try:
        if path.suffix.lower() in DICOM_SUFFIXES:
            if level == "decode":
                read_xray(path)
            else:
                import pydicom

                pydicom.dcmread(path, stop_before_pixels=True)
            return None
        with PILImage.open(path) as image:
            if level == "decode":
                image.load()
            else:
                image.size  # noqa: B018 - forces the header parse
    except Exception as err:
        return f"unreadable image ({type(err).__name__}: {err})"
    return None


def resolve_paths(
    records: pd.DataFrame, data_dir: Path, check_images: str, on_bad: str
) -> pd.DataFrame:
    """Resolve ``records.path`` under ``data_dir`` and validate each row; returns the good rows."""
    if check_images not in ("exists", "open", "decode"):
        raise ValueError(
            f"check_images must be 'exists', 'open' or 'decode', got {check_images!r}."
        )
    # Lexical check: '../' tricks are refused, but symlinks the user placed inside are followed.
    root = Path(os.path.normpath(data_dir.absolute()))
    problems: list[Problem] = []
    resolved: list[str] = []
    for where, rel in zip(records["where"], records["path"], strict=True):
        full = Path(os.path.normpath(root / str(rel)))
        if not full.is_relative_to(root):
            problems.append(Problem(where, f"path {rel!r} escapes the data folder {root}"))
        elif full.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(Problem(where, f"{rel!r} is not a PNG, JPEG or DICOM file"))
        elif (reason := check_image(full, check_images)) is not None:
            problems.append(Problem(where, f"{full}: {reason}"))
        resolved.append(str(full))
    records = records.assign(path=resolved)
    duplicated = records["path"].duplicated(keep="first")
    for where, path in zip(records["where"][duplicated], records["path"][duplicated], strict=True):
        first = records["where"][records["path"] == path].iloc[0]
        problems.append(Problem(where, f"duplicate of {first} ({path})"))
    skipped = raise_or_skip(problems, on_bad, "image rows")
    return records[~records["where"].isin(skipped)].reset_index(drop=True)


def _image_value(path: str) -> dict:
    # DICOM is decoded now, to PNG pixels only: no tag can travel further.
    if path.lower().endswith(DICOM_SUFFIXES):
        buffer = io.BytesIO()
        read_xray(path).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}
    return {"bytes": None, "path": path}


def labels_feature(names: Sequence[str]) -> dict[str, Value]:
    """Multi-label targets as a struct of float32 fields, in a fixed, named order."""
    return {name: Value("float32") for name in names}


def label_names(dataset: Dataset) -> list[str]:
    """The label names of a dataset built here, in order (multi-label struct or ClassLabel)."""
    features = dataset.features
    if "labels" in features:
        return list(features["labels"])
    if "label" in features and isinstance(features["label"], ClassLabel):
        return list(features["label"].names)
    raise ValueError(f"Dataset has no 'labels' or 'label' column (columns: {list(features)}).")


def to_dataset(
    records: pd.DataFrame,
    data_dir: Path,
    *,
    label_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    check_images: str = "open",
    on_bad: str = "raise",
) -> Dataset:
    """Build a dataset from records with ``path`` and ``where`` (+ ``labels`` / ``label`` / metadata)."""
    records = resolve_paths(records, data_dir, check_images, on_bad)
    root = os.path.normpath(data_dir.absolute()) + os.sep
    columns: dict[str, list] = {
        "image": [_image_value(p) for p in records["path"]],
        "image_id": [p.removeprefix(root) for p in records["path"]],
        "patient_id": [
            None if pd.isna(v) else str(v) for v in records.get("patient_id", [None] * len(records))
        ],
        "view": [
            None if pd.isna(v) else str(v) for v in records.get("view", [None] * len(records))
        ],
    }
    features = {
        "image": Image(),
        "image_id": Value("string"),
        "patient_id": Value("string"),
        "view": Value("string"),
    }
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


def patient_split(
    dataset: Dataset, validation_size: float | int, seed: int
) -> tuple[Dataset, Dataset]:
    """Split off a validation set by patient: no patient is in both parts.

    ``validation_size`` is a fraction of images (< 1) or a number of images; whole patients are
    taken in a seeded random order until it is reached. Rows with no patient id count as their
    own patient.
    """
    patients = [p if p is not None else f"__row{i}" for i, p in enumerate(dataset["patient_id"])]
    target = validation_size * len(patients) if validation_size < 1 else validation_size
    if not 0 < target < len(patients):
        raise ValueError(
            f"validation_size={validation_size} leaves no training or no validation data."
        )
    by_patient: dict[str, list[int]] = {}
    for i, p in enumerate(patients):
        by_patient.setdefault(p, []).append(i)
    order = sorted(by_patient)
    np.random.default_rng(seed).shuffle(order)
    val_rows: list[int] = []
    for p in order:
        if len(val_rows) >= target:
            break
        val_rows.extend(by_patient[p])
    val_set = set(val_rows)
    train_rows = [i for i in range(len(patients)) if i not in val_set]
    return dataset.select(train_rows), dataset.select(sorted(val_rows))
