"""Shared machinery of the loaders: checked records -> ``datasets.Dataset``.

Every source module turns its files into a table of records (``path``, labels, metadata, and a
``where`` string naming the file and row it came from). This module validates that table (paths
inside the data folder, files present and readable, no conflicting duplicates, no image or
patient in two splits), then builds the datasets. Problems raise one ``DataValidationError``
naming each offender, or with ``on_bad="skip"`` are dropped and reported; nothing is dropped
silently. Label and list files are read by ``files``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage

from .images import DICOM_SUFFIXES, read_xray, verify_dicom

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


def report(problems: Sequence[Problem], what: str, hint: str = "", kind: str = "bad") -> str:
    lines = [str(p) for p in problems[:_SHOWN]]
    if len(problems) > _SHOWN:
        lines.append(f"... and {len(problems) - _SHOWN} more")
    text = f"{len(problems)} {kind} {what}:\n  " + "\n  ".join(lines)
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


def csv_where(csv_path: Path, index: int) -> str:
    """'file.csv line N' for the data row at 0-based position ``index`` (the header is line 1)."""
    return f"{csv_path} line {index + 2}"


def check_image(path: Path, level: str) -> str | None:
    """None if the image is usable at this check level, else the reason.

    ``"open"`` reads the header (cheap; catches missing, non-image and wrong-format files),
    ``"decode"`` decodes every pixel (also catches truncated files), ``"exists"`` only checks
    the file is there. DICOM pixels are decoded at ``"open"`` too: its header cannot tell a
    missing, short or broken pixel stream, and building the dataset decodes them anyway.
    """
    if not path.is_file():
        return "file not found"
    if level == "exists":
        return None
    if path.suffix.lower() in DICOM_SUFFIXES:
        try:
            verify_dicom(path)
        except ImportError:
            raise
        except Exception as err:
            return f"unreadable DICOM: {err}"
        return None
    try:
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
    skipped = raise_or_skip(problems, on_bad, "image rows")
    records = records[~records["where"].isin(skipped)].reset_index(drop=True)
    records = drop_duplicates(records, "path", on_bad, "image rows")
    # The same file under another name (a symlink, a hard link, a copy) is the same image too:
    # kept twice, its copies could land on both sides of a validation split, or disagree.
    paths = list(records["path"])
    same = _content_keys({p: {p} for p in paths})
    first: dict[str, str] = {}
    image = [f"same bytes as {first.setdefault(same[p], p)}" if p in same else p for p in paths]
    records = drop_duplicates(records.assign(image=image), "image", on_bad, "image rows", ["path"])
    return records.drop(columns="image")


def _cell(value: object) -> object:
    """A comparable form of a record cell: sequences as float tuples, missing as None."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(float(v) for v in value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def drop_duplicates(
    records: pd.DataFrame,
    key: str | Sequence[str],
    on_bad: str,
    what: str,
    ignore: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per ``key``. A row repeating an earlier one exactly (``ignore`` columns aside)
    is dropped with a warning naming both rows; one that disagrees with it (labels, patient,
    view, split, ...) is an error naming both rows, or with ``on_bad="skip"`` every copy is left
    out (which is right is unknown)."""
    keys = [key] if isinstance(key, str) else list(key)
    if not records.duplicated(keys).any():  # the usual case, without a loop over rows
        return records.reset_index(drop=True)
    left_out = {"where", *keys, *ignore}
    compared = [c for c in records.columns if c not in left_out]
    first: dict[tuple, tuple[str, tuple]] = {}
    repeats: list[Problem] = []
    conflicts: list[Problem] = []
    conflicting: set[tuple] = set()
    keep: list[bool] = []
    for where, key_row, row in zip(
        records["where"],
        records[keys].itertuples(index=False),
        records[compared].itertuples(index=False),
        strict=True,
    ):
        k = tuple(_cell(v) for v in key_row)
        content = tuple(_cell(v) for v in row)
        keep.append(k not in first)
        if k not in first:
            first[k] = (where, content)
            continue
        name = ", ".join(map(str, k))
        first_where, first_content = first[k]
        differ = [
            f"{c} {b!r} there, {a!r} here"
            for c, a, b in zip(compared, content, first_content, strict=True)
            if a != b
        ]
        if differ:
            conflicts.append(
                Problem(
                    where, f"duplicate of {first_where} ({name}) with different {'; '.join(differ)}"
                )
            )
            conflicting.add(k)
        else:
            repeats.append(Problem(where, f"exact duplicate of {first_where} ({name}); kept once"))
    if repeats:
        logger.warning("%s", report(repeats, what, kind="repeated"))
    raise_or_skip(conflicts, on_bad, f"{what} (conflicting duplicates)")
    records = records.loc[np.asarray(keep, dtype=bool)]
    if conflicting:
        in_conflict = [
            tuple(_cell(v) for v in r) in conflicting for r in records[keys].itertuples(index=False)
        ]
        records = records.loc[~np.asarray(in_conflict, dtype=bool)]
    return records.reset_index(drop=True)


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
    return _build(records, data_dir, label_names, class_names)


# A leak is charged to the less held-out split: with on_bad="skip" the test set stays whole.
_HELD_OUT_FIRST = {"test": 0, "validation": 1, "train": 2}


def _head_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(16384)).hexdigest()


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()


def _split_owners(parts: Mapping[str, pd.DataFrame]) -> dict[str, set[str]]:
    """The splits each path is listed in."""
    splits_of: dict[str, set[str]] = {}
    for split, frame in parts.items():
        for path in frame["path"]:
            splits_of.setdefault(path, set()).add(split)
    return splits_of


def _content_keys(splits_of: Mapping[str, set[str]]) -> dict[str, str]:
    """A full-content digest for each file whose bytes may equal a file's of another owner
    (``splits_of``: path -> owners, e.g. the splits listing it, or the path itself).

    Narrowed in stages, each only among files that still collide across owners: size, then a
    digest of the first 16 KiB, then the whole file. Distinct images differ early (image
    headers, compressed data), so whole files are read only for true copies.
    """
    keys: dict[str, object] = {p: os.path.getsize(p) for p in splits_of if os.path.isfile(p)}
    for stage in (_head_digest, _digest):
        spread: dict[object, set[str]] = {}
        for path, key in keys.items():
            spread.setdefault(key, set()).update(splits_of[path])
        keys = {p: (k, stage(p)) for p, k in keys.items() if len(spread[k]) > 1}
    return {p: str(k) for p, k in keys.items()}


def check_split_overlap(parts: Mapping[str, pd.DataFrame], on_bad: str) -> dict[str, pd.DataFrame]:
    """Refuse any image in two splits (same resolved path, or the same bytes under another
    name) and any patient in two splits (where patient ids exist), naming both rows.

    Only files whose size equals that of a file in another split are read (see
    ``_content_keys``), so the usual cost is one ``stat`` per image.
    """
    order = sorted(parts, key=lambda s: _HELD_OUT_FIRST.get(s, len(_HELD_OUT_FIRST)))
    content = _content_keys(_split_owners(parts))
    owners: dict[tuple[str, object], tuple[str, str, str]] = {}
    problems: list[Problem] = []
    for split in order:
        frame = parts[split]
        patients = frame["patient_id"] if "patient_id" in frame else [None] * len(frame)
        for where, path, patient in zip(frame["where"], frame["path"], patients, strict=True):
            keys = [("image", path)]
            if path in content:
                keys.append(("bytes", content[path]))
            if _cell(patient) is not None:
                keys.append(("patient", str(patient)))
            for kind, value in keys:
                other, other_where, other_path = owners.setdefault(
                    (kind, value), (split, where, path)
                )
                if other == split:
                    continue
                what = {
                    "image": f"image {path} is also",
                    "bytes": f"{path} has the same bytes as {other_path},",
                    "patient": f"patient {value!r} is also",
                }[kind]
                problems.append(Problem(where, f"{what} in split {other!r} ({other_where})"))
                break
    skipped = raise_or_skip(problems, on_bad, "rows shared between splits")
    return {s: f[~f["where"].isin(skipped)].reset_index(drop=True) for s, f in parts.items()}


def build_splits(
    parts: Mapping[str, pd.DataFrame],
    data_dir: Path,
    source: str,
    *,
    label_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    check_images: str = "open",
    on_bad: str = "raise",
) -> dict[str, Dataset]:
    """A dataset per split from its records, each checked as in ``to_dataset``, and no image
    or patient in two splits. ``source`` names the file(s) the records came from."""
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
    return {s: _build(r, data_dir, label_names, class_names) for s, r in resolved.items()}


def _build(
    records: pd.DataFrame,
    data_dir: Path,
    label_names: Sequence[str] | None,
    class_names: Sequence[str] | None,
) -> Dataset:
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
