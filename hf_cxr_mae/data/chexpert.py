"""CheXpert (and the CheXpert-style label files of MIMIC-CXR)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from datasets import DatasetDict

from .building import build_splits
from .files import read_csv
from .labels import CHEXPERT5_LABELS, CHEXPERT14_LABELS, check_policy, parse_label_rows
from .metadata import normalize_metadata, normalize_view
from .split_files import load_from_split_files, parse_split_files
from .splits import patient_split
from .validation import DataValidationError, csv_where, raise_or_skip


def label_set(findings: str | list[str]) -> list[str]:
    """``"competition"`` (5 findings), ``"all"`` (14) or an explicit list."""
    if findings == "competition":
        return list(CHEXPERT5_LABELS)
    if findings == "all":
        return list(CHEXPERT14_LABELS)
    if isinstance(findings, str):
        raise ValueError(
            f"findings must be 'competition', 'all' or a list of names, got {findings!r}."
        )
    unknown = [f for f in findings if f not in CHEXPERT14_LABELS]
    if unknown:
        raise ValueError(f"Unknown CheXpert finding(s) {unknown}; valid: {CHEXPERT14_LABELS}.")
    return list(findings)


def _strip_release_prefix(path: str, data_dir: Path) -> str:
    """Paths start with 'CheXpert-v1.0-small/'; accept data_dir either above or at that folder."""
    first, _, rest = path.partition("/")
    if first.startswith("CheXpert-v1.0") and not (data_dir / first).is_dir():
        return rest
    return path


def _views(frame: pd.DataFrame) -> list[str | None]:
    """``AP/PA`` (AP, PA, LL, ...) where given, else ``LATERAL`` for a lateral image."""
    blank = pd.Series([""] * len(frame), index=frame.index)
    return [
        normalize_view(position) or ("LATERAL" if side.strip().lower() == "lateral" else None)
        for position, side in zip(
            frame.get("AP/PA", blank), frame.get("Frontal/Lateral", blank), strict=True
        )
    ]


def _read_split(
    csv_path: Path, data_dir: Path, names: list[str], policy: str, frontal_only: bool, on_bad: str
) -> pd.DataFrame:
    frame = read_csv(csv_path, dtype=str, keep_default_na=False)
    if "Path" not in frame.columns:
        raise DataValidationError(
            f"{csv_path} has no 'Path' column; columns: {list(frame.columns)}."
        )
    targets, problems = parse_label_rows(frame, csv_path, names, policy)
    bad = raise_or_skip(problems, on_bad, f"label cells in {csv_path}")
    paths = [_strip_release_prefix(p, data_dir) for p in frame["Path"]]
    wheres = [csv_where(csv_path, i) for i in range(len(frame))]
    metadata = normalize_metadata(
        wheres,
        names=list(frame["Path"]),
        on_bad=on_bad,
        what=str(csv_path),
        **{c.lower(): frame[c] for c in ("Sex", "Age") if c in frame},
    )
    records = pd.DataFrame(
        {
            "where": wheres,
            "path": paths,
            "csv_path": frame["Path"],  # as written in the file: split files may name it so
            "labels": targets,
            "patient_id": [
                next((part for part in p.split("/") if part.startswith("patient")), None)
                for p in paths
            ],
            "view": _views(frame),
            "frontal": frame.get("Frontal/Lateral", pd.Series(["Frontal"] * len(frame))),
            **metadata,
        }
    )
    records = records[~records["where"].isin(bad)]
    if frontal_only:
        records = records[records["frontal"] == "Frontal"]
    return records


def load_chexpert(
    data_dir: str | Path,
    findings: str | list[str] = "competition",
    uncertainty: str = "paper",
    frontal_only: bool = True,
    train_file: str = "train.csv",
    test_file: str | None = "valid.csv",
    validation_size: float | int = 0.1,
    seed: int = 0,
    check_images: str = "open",
    on_bad: str = "raise",
    split_files: Mapping[str, str | Path] | str | None = None,
) -> DatasetDict:
    """CheXpert: ``train.csv`` -> train + patient-disjoint validation, the official ``valid.csv``
    -> test (the hidden test set is not public). Uncertain (-1) cells follow ``uncertainty``:
    ``ones``, ``zeros``, ``ignore`` (left out of loss and metric) or ``paper``.

    ``split_files`` (``{"train": ..., "validation": ..., "test": ...}``) replaces that split:
    each line names an image by its ``Path`` (with or without the release folder) from either
    CSV, optionally followed by its targets in ``findings`` order, checked against the CSV."""
    check_policy(uncertainty)
    data_dir = Path(data_dir)
    if not (data_dir / train_file).is_file():
        # Accept the folder above the release folder too.
        inner = sorted(p for p in data_dir.glob("CheXpert-v1.0*") if (p / train_file).is_file())
        data_dir = inner[0] if inner else data_dir
    names = label_set(findings)
    kwargs = {"label_names": names, "check_images": check_images, "on_bad": on_bad}
    if split_files is not None:
        files = parse_split_files(split_files, data_dir)
        tables = [data_dir / f for f in (train_file, test_file) if f and (data_dir / f).is_file()]
        records = pd.concat(
            [_read_split(t, data_dir, names, uncertainty, False, on_bad) for t in tables],
            ignore_index=True,
        )
        keep = ("lateral views (frontal_only=True)", lambda p: p["frontal"] == "Frontal")
        return load_from_split_files(
            records,
            files,
            " and ".join(map(str, tables)),
            data_dir,
            keys=("path", "csv_path"),
            keep=keep if frontal_only else None,
            validation_size=validation_size,
            seed=seed,
            **kwargs,
        )
    parts = {
        "train": _read_split(
            data_dir / train_file, data_dir, names, uncertainty, frontal_only, on_bad
        )
    }
    source = str(data_dir / train_file)
    if test_file is not None and (data_dir / test_file).is_file():
        parts["test"] = _read_split(
            data_dir / test_file, data_dir, names, uncertainty, frontal_only, on_bad
        )
        source += f" and {data_dir / test_file}"
    # The official valid.csv patients are not in train.csv; a copy that mixes them is refused.
    splits = build_splits(parts, data_dir, source, **kwargs)
    train, validation = patient_split(splits.pop("train"), validation_size, seed)
    return DatasetDict({"train": train, "validation": validation, **splits})
