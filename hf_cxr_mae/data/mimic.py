"""MIMIC-CXR-JPG: split file + CheXpert- or NegBio-style labels + metadata view filter."""

from __future__ import annotations

from pathlib import Path

from datasets import DatasetDict

from .chexpert import label_set
from .core import DataValidationError, raise_or_skip, read_csv, to_dataset
from .labels import check_policy, parse_label_rows

_SPLITS = {"train": "train", "validate": "validation", "test": "test"}


def load_mimic_cxr(
    data_dir: str | Path,
    labeler: str = "chexpert",
    findings: str | list[str] = "all",
    uncertainty: str = "ignore",
    views: tuple[str, ...] | list[str] = ("PA", "AP"),
    prefix: str = "mimic-cxr-2.0.0",
    check_images: str = "open",
    on_bad: str = "raise",
) -> DatasetDict:
    """Splits from ``{prefix}-split.csv``, study labels from ``{prefix}-{labeler}.csv``, views from
    ``{prefix}-metadata.csv``; images at ``files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg``."""
    if labeler not in ("chexpert", "negbio"):
        raise ValueError(f"labeler must be 'chexpert' or 'negbio', got {labeler!r}.")
    check_policy(uncertainty)
    data_dir = Path(data_dir)
    names = label_set(findings)
    split = read_csv(data_dir / f"{prefix}-split.csv", dtype=str)
    meta = read_csv(data_dir / f"{prefix}-metadata.csv", dtype=str)
    label_path = data_dir / f"{prefix}-{labeler}.csv"
    labels = read_csv(label_path, dtype=str, keep_default_na=False)
    for frame, cols, path in (
        (split, {"dicom_id", "subject_id", "study_id", "split"}, f"{prefix}-split.csv"),
        (meta, {"dicom_id", "ViewPosition"}, f"{prefix}-metadata.csv"),
        (labels, {"subject_id", "study_id"}, label_path.name),
    ):
        if missing := cols - set(frame.columns):
            raise DataValidationError(f"{data_dir / path} lacks column(s) {sorted(missing)}.")
    targets, problems = parse_label_rows(labels, label_path, names, uncertainty)
    raise_or_skip(problems, on_bad, f"label cells in {label_path}")
    labels = labels.assign(
        labels=targets, where=[f"{label_path} line {i + 2}" for i in range(len(labels))]
    )
    merged = split.merge(meta[["dicom_id", "ViewPosition"]], on="dicom_id", how="left")
    merged = merged.merge(
        labels[["subject_id", "study_id", "labels"]], on=["subject_id", "study_id"], how="left"
    )
    # Studies without a label row have no findings mentioned: all targets 0 (as a blank row).
    merged["labels"] = [v if isinstance(v, list) else [0.0] * len(names) for v in merged["labels"]]
    merged = merged[merged["ViewPosition"].isin(list(views))]
    merged["path"] = [
        f"files/p{s[:2]}/p{s}/s{st}/{d}.jpg"
        for s, st, d in zip(
            merged["subject_id"], merged["study_id"], merged["dicom_id"], strict=True
        )
    ]
    merged["where"] = [f"{prefix}-split.csv dicom_id {d}" for d in merged["dicom_id"]]
    merged = merged.rename(columns={"subject_id": "patient_id", "ViewPosition": "view"})
    kwargs = {"label_names": names, "check_images": check_images, "on_bad": on_bad}
    out = {}
    for raw, name in _SPLITS.items():
        part = merged[merged["split"] == raw]
        if len(part):
            out[name] = to_dataset(part.reset_index(drop=True), data_dir, **kwargs)
    return DatasetDict(out)
