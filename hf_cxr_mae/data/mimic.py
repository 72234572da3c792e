"""MIMIC-CXR-JPG: split file + CheXpert- or NegBio-style labels + metadata view filter."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from datasets import DatasetDict

from .building import build_splits
from .chexpert import label_set
from .duplicates import drop_duplicates
from .files import read_csv
from .labels import check_policy, parse_label_rows
from .metadata import normalize_metadata, normalize_view
from .split_files import load_from_split_files, parse_split_files
from .validation import DataValidationError, Problem, csv_where, raise_or_skip

_SPLITS = {"train": "train", "validate": "validation", "test": "test"}


def _with_lines(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    return frame.assign(where=[csv_where(path, i) for i in range(len(frame))])


def _study_age(anchor_age: str, anchor_year: str, study_date: object) -> str:
    """The age at the study (``anchor_age`` + study year - ``anchor_year``) where both years are
    known, else ``anchor_age`` as written (an unreadable one is reported by the caller)."""
    try:
        return str(float(anchor_age) + int(str(study_date)[:4]) - int(anchor_year))
    except (TypeError, ValueError):
        return anchor_age


def _with_patients(merged: pd.DataFrame, path: Path, on_bad: str) -> pd.DataFrame:
    """``sex`` and ``age`` columns from MIMIC-IV's ``patients.csv``, joined by ``subject_id``."""
    patients = read_csv(path, dtype=str, keep_default_na=False)
    if missing := {"subject_id", "gender", "anchor_age"} - set(patients.columns):
        raise DataValidationError(
            f"{path} lacks column(s) {sorted(missing)}; columns: {list(patients.columns)}."
        )
    if "anchor_year" not in patients:
        patients["anchor_year"] = ""
    columns = ["subject_id", "gender", "anchor_age", "anchor_year"]
    patients = drop_duplicates(
        _with_lines(patients, path)[["where", *columns]], "subject_id", on_bad, f"rows in {path}"
    ).rename(columns={"where": "patient_where"})
    joined = merged.merge(patients, on="subject_id", how="left")
    dates = joined["StudyDate"] if "StudyDate" in joined else [None] * len(joined)
    ages = [
        "" if pd.isna(a) else _study_age(a, y, d)
        for a, y, d in zip(joined["anchor_age"], joined["anchor_year"], dates, strict=True)
    ]
    # A problem is named by the patients-file line that holds the value.
    wheres = [
        w if isinstance(w, str) else f"{path} (no row for subject {s})"
        for w, s in zip(joined["patient_where"], joined["subject_id"], strict=True)
    ]
    metadata = normalize_metadata(
        wheres,
        sex=joined["gender"],
        age=ages,
        names=[f"dicom_id {d}" for d in joined["dicom_id"]],
        on_bad=on_bad,
        what=str(path),
    )
    return joined.drop(columns=["gender", "anchor_age", "anchor_year", "patient_where"]).assign(
        **metadata
    )


def load_mimic_cxr(
    data_dir: str | Path,
    labeler: str = "chexpert",
    findings: str | list[str] = "all",
    uncertainty: str = "ignore",
    views: tuple[str, ...] | list[str] = ("PA", "AP"),
    prefix: str = "mimic-cxr-2.0.0",
    check_images: str = "open",
    on_bad: str = "raise",
    split_files: Mapping[str, str | Path] | str | None = None,
    validation_size: float | int = 0.1,
    seed: int = 0,
    patients_file: str | None = None,
) -> DatasetDict:
    """Splits from ``{prefix}-split.csv``, study labels from ``{prefix}-{labeler}.csv``, views from
    ``{prefix}-metadata.csv``; images at ``files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg``. A row
    repeated in any of the three files is kept once if the copies agree, else refused.

    ``split_files`` (``{"train": ..., "validation": ..., "test": ...}``) replaces the split file:
    each line names an image by ``dicom_id`` or its path under ``data_dir``, optionally followed
    by its targets in ``findings`` order. Without a validation file, ``validation_size`` of train
    is split off by patient (``seed``).

    Metadata: ``view`` from ``ViewPosition``. MIMIC-CXR-JPG itself holds no sex or age; with
    ``patients_file`` (MIMIC-IV's ``patients.csv``: ``subject_id``, ``gender``, ``anchor_age``
    and optionally ``anchor_year``) they become ``sex`` and ``age``, the age at the study where
    the metadata has ``StudyDate`` and the patients file ``anchor_year`` (both shifted alike),
    else ``anchor_age``."""
    if labeler not in ("chexpert", "negbio"):
        raise ValueError(f"labeler must be 'chexpert' or 'negbio', got {labeler!r}.")
    check_policy(uncertainty)
    data_dir = Path(data_dir)
    names = label_set(findings)
    split_path = data_dir / f"{prefix}-split.csv"
    meta_path = data_dir / f"{prefix}-metadata.csv"
    label_path = data_dir / f"{prefix}-{labeler}.csv"
    split = read_csv(split_path, dtype=str)
    meta = read_csv(meta_path, dtype=str)
    labels = read_csv(label_path, dtype=str, keep_default_na=False)
    for frame, cols, path in (
        (split, {"dicom_id", "subject_id", "study_id", "split"}, split_path),
        (meta, {"dicom_id", "ViewPosition"}, meta_path),
        (labels, {"subject_id", "study_id"}, label_path),
    ):
        if missing := cols - set(frame.columns):
            raise DataValidationError(f"{path} lacks column(s) {sorted(missing)}.")
    targets, problems = parse_label_rows(labels, label_path, names, uncertainty)
    bad = raise_or_skip(problems, on_bad, f"label cells in {label_path}")
    labels = _with_lines(labels, label_path).assign(labels=targets)
    studies = labels[["where", "subject_id", "study_id", "labels"]]
    good = drop_duplicates(
        studies[~studies["where"].isin(bad)],
        ["subject_id", "study_id"],
        on_bad,
        f"label rows in {label_path}",
    )
    # A study whose label row was skipped is left out, not read as "nothing mentioned".
    left_out = set(zip(studies["subject_id"], studies["study_id"], strict=True)) - set(
        zip(good["subject_id"], good["study_id"], strict=True)
    )
    split = drop_duplicates(
        _with_lines(split, split_path)[["where", "dicom_id", "subject_id", "study_id", "split"]],
        "dicom_id",
        on_bad,
        f"rows in {split_path}",
    )
    # A split value we do not know would silently drop its images: name the rows instead.
    unknown = [
        Problem(w, f"split {v!r} is not one of {sorted(_SPLITS)}")
        for w, v in zip(split["where"], split["split"], strict=True)
        if v not in _SPLITS
    ]
    split = split[~split["where"].isin(raise_or_skip(unknown, on_bad, f"rows in {split_path}"))]
    meta_columns = ["dicom_id", "ViewPosition", *(["StudyDate"] if "StudyDate" in meta else [])]
    meta = drop_duplicates(
        _with_lines(meta, meta_path)[["where", *meta_columns]],
        "dicom_id",
        on_bad,
        f"rows in {meta_path}",
    )
    merged = split.merge(meta[meta_columns], on="dicom_id", how="left")
    merged = merged.merge(
        good[["subject_id", "study_id", "labels"]], on=["subject_id", "study_id"], how="left"
    )
    keys = zip(merged["subject_id"], merged["study_id"], strict=True)
    merged = merged[[k not in left_out for k in keys]]
    # Studies without a label row have no findings mentioned: all targets 0 (as a blank row).
    merged["labels"] = [v if isinstance(v, list) else [0.0] * len(names) for v in merged["labels"]]
    merged["path"] = [
        f"files/p{s[:2]}/p{s}/s{st}/{d}.jpg"
        for s, st, d in zip(
            merged["subject_id"], merged["study_id"], merged["dicom_id"], strict=True
        )
    ]
    merged["where"] = [
        f"{w} (dicom_id {d})" for w, d in zip(merged["where"], merged["dicom_id"], strict=True)
    ]
    if patients_file is not None:
        merged = _with_patients(merged, data_dir / patients_file, on_bad)
    merged = merged.rename(columns={"subject_id": "patient_id", "ViewPosition": "view"})
    views = [normalize_view(v) for v in views]
    merged["view"] = [normalize_view(v) for v in merged["view"]]
    kwargs = {"label_names": names, "check_images": check_images, "on_bad": on_bad}
    if split_files is not None:
        return load_from_split_files(
            merged.drop(columns="split").reset_index(drop=True),
            parse_split_files(split_files, data_dir),
            f"{label_path} and {meta_path}",
            data_dir,
            keys=("path", "dicom_id"),
            keep=(f"view not in {views}", lambda p: p["view"].isin(views)),
            validation_size=validation_size,
            seed=seed,
            **kwargs,
        )
    merged = merged[merged["view"].isin(views)]
    parts = {
        name: merged[merged["split"] == raw].reset_index(drop=True)
        for raw, name in _SPLITS.items()
        if (merged["split"] == raw).any()
    }
    return DatasetDict(build_splits(parts, data_dir, str(split_path), **kwargs))
