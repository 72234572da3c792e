"""Splits without leaks: no image or patient in two splits, and a patient-disjoint validation split."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict, concatenate_datasets

from .duplicates import comparable, content_digests
from .validation import Problem, raise_or_skip

# A leak is charged to the less held-out split: with on_bad="skip" the test set stays whole.
_HELD_OUT_FIRST = {"test": 0, "validation": 1, "train": 2}


def held_out_first(splits: Iterable[str]) -> list[str]:
    """Split names in the order leaks are charged: test, validation, train, then any other."""
    return sorted(splits, key=lambda s: _HELD_OUT_FIRST.get(s, len(_HELD_OUT_FIRST)))


def patient_key(patient: object) -> str | None:
    """The form patient ids are compared in: trimmed, and a number without its leading zeros
    (one table's ``00075`` and another's ``75`` are the same NIH patient); None when missing."""
    if comparable(patient) is None:
        return None
    if isinstance(patient, float) and patient.is_integer():  # 75.0 from a numeric column
        patient = int(patient)
    text = str(patient).strip()
    if not text:
        return None
    return str(int(text)) if text.isascii() and text.isdigit() else text


def _split_owners(parts: Mapping[str, pd.DataFrame]) -> dict[str, set[str]]:
    """The splits each path is listed in."""
    splits_of: dict[str, set[str]] = {}
    for split, frame in parts.items():
        for path in frame["path"]:
            splits_of.setdefault(path, set()).add(split)
    return splits_of


def check_split_overlap(parts: Mapping[str, pd.DataFrame], on_bad: str) -> dict[str, pd.DataFrame]:
    """Refuse any image in two splits (same resolved path, or the same bytes under another
    name) and any patient in two splits (where patient ids exist), naming both rows.

    Only files whose size equals that of a file in another split are read (see
    ``content_digests``), so the usual cost is one ``stat`` per image. A re-encoded or resized
    copy has other bytes: those are found when the pixel cache is built (``near_duplicates``).
    """
    order = held_out_first(parts)
    content = content_digests(_split_owners(parts))
    owners: dict[tuple[str, object], tuple[str, str, str]] = {}
    problems: list[Problem] = []
    for split in order:
        frame = parts[split]
        patients = frame["patient_id"] if "patient_id" in frame else [None] * len(frame)
        for where, path, patient in zip(frame["where"], frame["path"], patients, strict=True):
            keys = [("image", path)]
            if path in content:
                keys.append(("bytes", content[path]))
            if (key := patient_key(patient)) is not None:
                keys.append(("patient", key))
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


def patient_split(
    dataset: Dataset, validation_size: float | int, seed: int
) -> tuple[Dataset, Dataset]:
    """Split off a validation set by patient: no patient is in both parts.

    ``validation_size`` is a fraction of images (< 1) or a number of images; whole patients are
    taken in a seeded random order until it is reached. Rows with no patient id count as their
    own patient.
    """
    keys = [patient_key(p) for p in dataset["patient_id"]]
    patients = [k if k is not None else f"__row{i}" for i, k in enumerate(keys)]
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
    if not train_rows:  # whole patients can overshoot a target just below every image
        raise ValueError(
            f"validation_size={validation_size} leaves no training data: whole patients up to "
            f"{target:g} images take all {len(by_patient)} patients ({len(patients)} images)."
        )
    return dataset.select(train_rows), dataset.select(sorted(val_rows))


ALL_SPLITS = "all"


def split_or_all(data: DatasetDict, split: str) -> Dataset:
    """One split of ``data``, or with ``"all"`` every image of every split, in ``image_id``
    order: the whole of a dataset without a split of its own (a hospital's folder, whose
    loader carves a validation set from it), for external evaluation. Refuses an absent split."""
    if split == ALL_SPLITS and ALL_SPLITS not in data:
        everything = concatenate_datasets(list(data.values()))
        ids = everything.select_columns(["image_id"]).with_format("arrow")[:]["image_id"]
        return everything.select(sorted(range(len(ids)), key=ids.to_pylist().__getitem__))
    if split not in data:
        raise ValueError(
            f"Split {split!r} not in the dataset; it has {list(data)} (or 'all': every image)."
        )
    return data[split]
