"""Any labelled folder: a CSV of image paths and labels, class subfolders, or an existing dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset
from datasets import Sequence as HFSequence

from .core import (
    IMAGE_SUFFIXES,
    DataValidationError,
    Problem,
    csv_where,
    labels_feature,
    patient_split,
    raise_or_skip,
    read_csv,
    to_dataset,
)
from .labels import check_policy, parse_label_rows


def load_csv(
    data_dir: str | Path,
    csv_file: str = "labels.csv",
    image_column: str = "path",
    label_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    label_delimiter: str = "|",
    label_names: Sequence[str] | None = None,
    no_finding: str | None = "No Finding",
    uncertainty: str = "ignore",
    patient_column: str | None = None,
    view_column: str | None = None,
    split_column: str | None = None,
    validation_size: float | int = 0.1,
    seed: int = 0,
    check_images: str = "open",
    on_bad: str = "raise",
) -> DatasetDict:
    """A CSV with an image-path column (relative to ``data_dir``) and labels given either as one
    1/0/-1/blank column per finding (``label_columns``; default: every column not otherwise
    named) or as one delimited column (``label_column``, e.g. ``"A|B"``, names from
    ``label_names`` or the sorted values found). ``split_column`` values train/validation/test
    define splits; otherwise all rows are train and a patient-disjoint validation is split off."""
    check_policy(uncertainty)
    data_dir = Path(data_dir)
    csv_path = data_dir / csv_file
    frame = read_csv(csv_path, dtype=str, keep_default_na=False)
    named = [
        c for c in (image_column, patient_column, view_column, split_column, label_column) if c
    ]
    if missing := [c for c in named if c not in frame.columns]:
        raise DataValidationError(
            f"{csv_path} has no column(s) {missing}; columns: {list(frame.columns)}."
        )
    problems: list[Problem] = []
    targets: list[list[float]] = []
    if label_column is not None:
        cells = [
            [t.strip() for t in v.split(label_delimiter) if t.strip()] for v in frame[label_column]
        ]
        found = sorted({t for c in cells for t in c} - {no_finding})
        names = list(label_names) if label_names is not None else found
        for i, tokens in enumerate(cells):
            unknown = [t for t in tokens if t not in names and t != no_finding]
            if unknown:
                problems.append(
                    Problem(csv_where(csv_path, i), f"unknown label(s) {unknown}; valid: {names}")
                )
            targets.append([1.0 if n in tokens else 0.0 for n in names])
    else:
        names = (
            list(label_columns)
            if label_columns is not None
            else [c for c in frame.columns if c not in named]
        )
        if missing := [c for c in names if c not in frame.columns]:
            raise DataValidationError(
                f"{csv_path} has no label column(s) {missing}; columns: {list(frame.columns)}."
            )
        if not names:
            raise DataValidationError(f"{csv_path} has no label columns.")
        targets, problems = parse_label_rows(frame, csv_path, names, uncertainty)
    records = pd.DataFrame(
        {
            "where": [csv_where(csv_path, i) for i in range(len(frame))],
            "path": frame[image_column],
            "labels": targets,
            "patient_id": frame[patient_column] if patient_column else None,
            "view": frame[view_column] if view_column else None,
            "split": frame[split_column] if split_column else "train",
        }
    )
    skipped = raise_or_skip(problems, on_bad, f"label cells in {csv_path}")
    records = records[~records["where"].isin(skipped)]
    kwargs = {"label_names": names, "check_images": check_images, "on_bad": on_bad}
    aliases = {
        "train": "train",
        "validation": "validation",
        "val": "validation",
        "valid": "validation",
        "test": "test",
    }
    if bad_splits := sorted(set(records["split"]) - set(aliases)):
        raise DataValidationError(
            f"{csv_path}: unknown split value(s) {bad_splits} in {split_column!r}; use train/validation/test."
        )
    records["split"] = records["split"].map(aliases)
    out = {
        s: to_dataset(records[records["split"] == s], data_dir, **kwargs)
        for s in ("train", "validation", "test")
        if (records["split"] == s).any()
    }
    if "train" in out and "validation" not in out:
        out["train"], out["validation"] = patient_split(out["train"], validation_size, seed)
    return DatasetDict(out)


def load_imagefolder(
    data_dir: str | Path,
    labelled: bool | None = None,
    validation_size: float | int = 0.1,
    seed: int = 0,
    check_images: str = "open",
    on_bad: str = "raise",
) -> DatasetDict:
    """Class subfolders (``data_dir/<class>/*.png``, single-label) or, for pre-training, a folder
    of images without labels (any depth). ``labelled=None`` decides from the layout."""
    data_dir = Path(data_dir)
    files = sorted(
        p for p in data_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise DataValidationError(f"No PNG, JPEG or DICOM images under {data_dir}.")
    top_level = [p for p in files if p.parent == data_dir]
    if labelled is None:
        labelled = not top_level and all(len(p.relative_to(data_dir).parts) == 2 for p in files)
    rel = [str(p.relative_to(data_dir)) for p in files]
    records = pd.DataFrame({"where": [str(p) for p in files], "path": rel})
    if not labelled:
        return DatasetDict(
            train=to_dataset(records, data_dir, check_images=check_images, on_bad=on_bad)
        )
    if top_level:
        raise DataValidationError(f"{top_level[0]} is not in a class subfolder of {data_dir}.")
    classes = sorted({Path(r).parts[0] for r in rel})
    records["label"] = [classes.index(Path(r).parts[0]) for r in rel]
    dataset = to_dataset(
        records, data_dir, class_names=classes, check_images=check_images, on_bad=on_bad
    )
    train, validation = patient_split(dataset, validation_size, seed)
    return DatasetDict(train=train, validation=validation)


def from_hf_dataset(
    source: str | Dataset | DatasetDict,
    image_column: str = "image",
    labels_column: str = "labels",
    label_names: Sequence[str] | None = None,
    split: str | None = None,
) -> DatasetDict:
    """A Hub dataset id or a ``Dataset`` / ``DatasetDict`` whose rows hold an image and labels.

    ``labels_column`` may be a ``ClassLabel`` (single-label), a list of ``ClassLabel`` indices
    (positive findings) or a multi-hot list (then ``label_names`` gives the order).
    """
    if isinstance(source, str):
        source = load_dataset(source, split=split)
    dd = source if isinstance(source, DatasetDict) else DatasetDict(train=source)
    out = {}
    for name, ds in dd.items():
        if image_column not in ds.column_names or labels_column not in ds.column_names:
            raise DataValidationError(
                f"Split {name!r} needs columns {image_column!r} and {labels_column!r}; it has {ds.column_names}."
            )
        feature = ds.features[labels_column]
        ds = ds.rename_column(image_column, "image") if image_column != "image" else ds
        if isinstance(feature, ClassLabel):
            ds = ds.rename_column(labels_column, "label") if labels_column != "label" else ds
        else:
            inner = getattr(feature, "feature", None)
            if isinstance(feature, (HFSequence, list)) and isinstance(inner, ClassLabel):
                names = list(inner.names)

                def to_multi_hot(batch, names=names, col=labels_column):
                    return {
                        "labels": [
                            {n: float(i in pos) for i, n in enumerate(names)} for pos in batch[col]
                        ]
                    }
            else:
                if label_names is None:
                    raise ValueError(
                        f"{labels_column!r} is a multi-hot list: pass label_names to name its entries."
                    )
                names = list(label_names)

                def to_multi_hot(batch, names=names, col=labels_column):
                    for vec in batch[col]:
                        if len(vec) != len(names):
                            raise DataValidationError(
                                f"A {col!r} vector has {len(vec)} entries, expected {len(names)} ({names})."
                            )
                    return {
                        "labels": [
                            dict(zip(names, map(float, vec), strict=True)) for vec in batch[col]
                        ]
                    }

            features = ds.features.copy()
            features["labels"] = labels_feature(names)
            if labels_column != "labels":
                del features[labels_column]
            ds = ds.map(
                to_multi_hot,
                batched=True,
                features=features,
                remove_columns=[labels_column] if labels_column != "labels" else None,
            )
        out[name] = ds
    return DatasetDict(out)
