"""A labelled CSV: image paths and labels, as one column per finding or one delimited column."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from datasets import DatasetDict

from .building import build_splits
from .files import read_csv
from .labels import (
    LABEL_SEPARATOR,
    check_label_separator,
    check_policy,
    check_separator_use,
    contradicts_no_finding,
    parse_label_rows,
    split_labels,
    warn_lookalike_names,
)
from .metadata import NON_METADATA, normalize_metadata
from .split_files import SPLIT_ALIASES, load_from_split_files, parse_split_files
from .splits import patient_split
from .validation import DataValidationError, Problem, csv_where, raise_or_skip

# CSV column names (any case) read as the normalised sex / age every source has.
_ALIASES = {
    **dict.fromkeys(("sex", "gender", "patient sex", "patient gender"), "sex"),
    **dict.fromkeys(("age", "patient age"), "age"),
}
# Names the loader's own records use (and ``view``, which has ``view_column``).
_RECORD_COLUMNS = {"where", "path", "split", "view"}


def _metadata_map(given: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``metadata_columns`` as (``{"sex" / "age": CSV column}``, other CSV columns kept as is)."""
    if isinstance(given, str):  # one name, not its letters
        given = [given]
    standard: dict[str, str] = {}
    extra: list[str] = []
    for entry in given:
        key, sep, column = entry.partition("=")
        if sep and key.strip().lower() not in ("sex", "age"):
            raise ValueError(
                f"metadata_columns entry {entry!r}: only 'sex=COLUMN' or 'age=COLUMN' map a "
                "column to another name; other columns are kept under their own names."
            )
        target = key.strip().lower() if sep else _ALIASES.get(entry.strip().lower())
        column = column.strip() if sep else entry
        if target is not None:
            if target in standard:
                raise ValueError(
                    f"metadata_columns names two {target} columns: {standard[target]!r} and "
                    f"{column!r}."
                )
            standard[target] = column
        elif column in NON_METADATA or column in _RECORD_COLUMNS:
            raise ValueError(
                f"metadata_columns entry {column!r} would replace the dataset's own {column!r} "
                "column; rename it in the CSV (the view has its own option, view_column)."
            )
        elif column not in extra:
            extra.append(column)
    return standard, extra


def _separator(separator: str, delimiter: str | None) -> str:
    """``label_separator``, or ``label_delimiter`` (its old name) when that is given instead."""
    if delimiter is not None:
        if separator not in (LABEL_SEPARATOR, delimiter):
            raise ValueError(
                f"label_delimiter={delimiter!r} and label_separator={separator!r} disagree; "
                "label_delimiter is the old name of label_separator: pass only label_separator."
            )
        separator = delimiter
    return check_label_separator(separator)


def load_csv(
    data_dir: str | Path,
    csv_file: str = "labels.csv",
    image_column: str = "path",
    label_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    label_separator: str = LABEL_SEPARATOR,
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
    split_files: Mapping[str, str | Path] | str | None = None,
    metadata_columns: Sequence[str] | None = None,
    label_delimiter: str | None = None,
) -> DatasetDict:
    """A CSV with an image-path column (relative to ``data_dir``) and labels given either as one
    1/0/-1/blank column per finding (``label_columns``; default: every column not otherwise
    named) or as one delimited column (``label_column``, e.g. ``"A|B"``, split on
    ``label_separator``, names from ``label_names`` or the sorted values found; findings written
    with another common separator, ``"A;B"`` where ``A`` is a label, are refused naming the rows
    and the separator to pass; ``label_delimiter`` is its old name, still accepted). ``split_column`` values train/validation/test
    define splits; otherwise all rows are train and a patient-disjoint validation is split off.
    ``split_files`` (``{"train": ..., "validation": ..., "test": ...}``) overrides both: each line
    names an image as the image column does, optionally followed by its targets in label order.

    ``metadata_columns`` keeps more columns for subgroup analysis, as strings under their own
    names; a column named ``sex`` / ``gender`` or ``age`` (any case, ``Patient`` before it too,
    as in NIH's file), or given as
    ``"sex=COLUMN"`` / ``"age=COLUMN"``, becomes the normalised ``sex`` ("M" / "F") or ``age``
    (years) every source has (see ``metadata``)."""
    check_policy(uncertainty)
    label_separator = _separator(label_separator, label_delimiter)
    data_dir = Path(data_dir)
    csv_path = data_dir / csv_file
    frame = read_csv(csv_path, dtype=str, keep_default_na=False)
    standard, extra = _metadata_map(metadata_columns or [])
    named = [
        c for c in (image_column, patient_column, view_column, split_column, label_column) if c
    ] + [*standard.values(), *extra]
    if missing := [c for c in named if c not in frame.columns]:
        raise DataValidationError(
            f"{csv_path} has no column(s) {missing}; columns: {list(frame.columns)}."
        )
    problems: list[Problem] = []
    targets: list[list[float]] = []
    if label_column is not None:
        check_separator_use(
            list(frame[label_column]),
            [csv_where(csv_path, i) for i in range(len(frame))],
            label_separator,
            f"column {label_column!r} of {csv_path}",
            known=None if label_names is None else [*label_names, *filter(None, [no_finding])],
            hint=" A label name that holds the separator: list the classes with label_names."
            if label_names is None
            else "",
        )
        cells = [split_labels(v, label_separator) for v in frame[label_column]]
        found = Counter(t for c in cells for t in set(c) if t != no_finding)
        if label_names is None:
            warn_lookalike_names(found, f"{csv_path} column {label_column!r}")
        names = list(label_names) if label_names is not None else sorted(found)
        for i, tokens in enumerate(cells):
            unknown = [t for t in tokens if t not in names and t != no_finding]
            if unknown:
                problems.append(
                    Problem(csv_where(csv_path, i), f"unknown label(s) {unknown}; valid: {names}")
                )
            elif no_finding in tokens and len(set(tokens)) > 1:
                problems.append(
                    Problem(csv_where(csv_path, i), contradicts_no_finding(tokens, no_finding))
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
    wheres = [csv_where(csv_path, i) for i in range(len(frame))]
    metadata = normalize_metadata(
        wheres,
        names=list(frame[image_column]),
        on_bad=on_bad,
        what=str(csv_path),
        **{key: frame[column] for key, column in standard.items()},
    )
    records = pd.DataFrame(
        {
            "where": wheres,
            "path": frame[image_column],
            "labels": targets,
            # A blank patient cell is no patient id, not one patient shared by every blank row.
            "patient_id": frame[patient_column].str.strip().replace("", None)
            if patient_column
            else None,
            "view": frame[view_column] if view_column else None,
            "split": frame[split_column] if split_column else "train",
            **metadata,
            # Blank is missing, as in the standard columns; the rest is kept as written.
            **{c: frame[c].str.strip().replace("", None) for c in extra},
        }
    )
    skipped = raise_or_skip(problems, on_bad, f"label cells in {csv_path}")
    records = records[~records["where"].isin(skipped)]
    kwargs = {
        "label_names": names,
        "check_images": check_images,
        "on_bad": on_bad,
        "metadata_columns": extra,
    }
    if split_files is not None:
        return load_from_split_files(
            records.drop(columns="split").reset_index(drop=True),
            parse_split_files(split_files, data_dir),
            str(csv_path),
            data_dir,
            validation_size=validation_size,
            seed=seed,
            **kwargs,
        )
    if bad_splits := sorted(set(records["split"]) - set(SPLIT_ALIASES)):
        raise DataValidationError(
            f"{csv_path}: unknown split value(s) {bad_splits} in {split_column!r}; use train/validation/test."
        )
    records["split"] = records["split"].map(SPLIT_ALIASES)
    parts = {
        s: records[records["split"] == s]
        for s in ("train", "validation", "test")
        if (records["split"] == s).any()
    }
    out = build_splits(parts, data_dir, str(csv_path), **kwargs)
    if "train" in out and "validation" not in out:
        out["train"], out["validation"] = patient_split(out["train"], validation_size, seed)
    return DatasetDict(out)
