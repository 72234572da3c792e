"""NIH ChestX-ray14 in its release format."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from datasets import DatasetDict

from .building import build_splits
from .duplicates import drop_duplicates
from .files import read_csv, read_list
from .labels import (
    LABEL_SEPARATOR,
    NIH14_LABELS,
    check_label_separator,
    check_separator_use,
    contradicts_no_finding,
    split_labels,
)
from .metadata import normalize_metadata, normalize_view
from .split_files import (
    load_from_split_files,
    paper_split_files,
    parse_split_files,
    read_split_file,
)
from .splits import patient_split
from .validation import DataValidationError, Problem, csv_where, raise_or_skip

NO_FINDING = "No Finding"


def _index_images(data_dir: Path, image_dir: str | None) -> dict[str, str]:
    """File name -> path relative to data_dir, for PNGs in any subfolder (images_001/images/...).

    A name found twice is ambiguous and refused, naming both copies (use ``image_dir``).
    """
    index: dict[str, str] = {}
    for root, dirs, files in os.walk(
        data_dir / image_dir if image_dir else data_dir, followlinks=True
    ):
        dirs.sort()
        for name in sorted(files):
            if not name.lower().endswith(".png"):
                continue
            rel = os.path.relpath(os.path.join(root, name), data_dir)
            if name in index:
                raise DataValidationError(
                    f"{name} is both {index[name]} and {rel} under {data_dir}; pass image_dir to "
                    "say which folder holds the images."
                )
            index[name] = rel
    return index


def _read_list(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"Official list file not found: {path}. NIH ChestX-ray14 ships train_val_list.txt and "
            "test_list.txt; point data_dir at the folder holding them."
        )
    return read_list(path)


def _partial_release(
    records: pd.DataFrame, split_files: Mapping[str, Path], csv_path: Path
) -> str | None:
    """Why the paper's split cannot be read here, when the label table lacks images it lists:
    on a partial copy the shipped files cannot be "fixed" line by line, so say what to do."""
    listed = {name for path in split_files.values() for _, name, _ in read_split_file(path)}
    absent = sorted(listed - set(records["name"]))
    if absent:
        return (
            f"protocol='paper' splits the full NIH ChestX-ray14 release, but {len(absent):,} of "
            f"the {len(listed):,} images its split files name are not among the usable rows of "
            f"{csv_path} ({len(records):,} rows), e.g. {', '.join(absent[:3])}. Use the full "
            "release's Data_Entry_2017.csv and images; on a subset, pass on_bad='skip' (recipes: "
            "--on_bad skip) to keep the listed images that are present, or give your own "
            "split_files."
        )
    return None


def load_nih14(
    data_dir: str | Path,
    label_file: str = "Data_Entry_2017.csv",
    train_list: str = "train_val_list.txt",
    test_list: str = "test_list.txt",
    validation_size: float | int = 0.1,
    seed: int = 0,
    views: list[str] | None = None,
    image_dir: str | None = None,
    check_images: str = "open",
    on_bad: str = "raise",
    protocol: str = "release",
    split_files: Mapping[str, str | Path] | str | None = None,
    label_separator: str = LABEL_SEPARATOR,
) -> DatasetDict:
    """NIH ChestX-ray14: 14 findings in the paper's order. Images are found in any subfolder
    (of ``image_dir`` if given). ``views`` keeps only those ``View Position`` values (e.g.
    ``["PA"]``). ``Patient Gender`` and ``Patient Age`` become ``sex`` and ``age`` where the
    file has them (the release's few ages over 120 are set to missing, with a warning naming them).
    ``label_separator`` splits ``Finding Labels`` (the release's ``|``); findings written with
    another separator (``Atelectasis;Effusion``) are refused, naming the rows and the separator.

    Splits: ``protocol="release"`` takes the official test list and carves a patient-disjoint
    validation set (``validation_size``) from the official train_val list; ``protocol="paper"``
    reads the paper's split files shipped with the package (train 75,312 / validation 11,212 /
    test 25,596 images, labels checked against ``label_file``); ``split_files`` gives your own
    (see ``split_files.assign_split_files``; a validation set is carved from train if absent).
    """
    check_label_separator(label_separator)
    if protocol not in ("release", "paper"):
        raise ValueError(f"protocol must be 'release' or 'paper', got {protocol!r}.")
    if protocol == "paper" and split_files is not None:
        raise ValueError(
            "protocol='paper' reads the paper's split files; pass split_files or protocol, not both."
        )
    data_dir = Path(data_dir)
    if protocol == "paper":
        split_files = paper_split_files()
    elif split_files is not None:
        split_files = parse_split_files(split_files, data_dir)
    csv_path = data_dir / label_file
    frame = read_csv(csv_path, dtype=str, keep_default_na=False)
    needed = {"Image Index", "Finding Labels", "Patient ID", "View Position"}
    if missing := needed - set(frame.columns):
        raise DataValidationError(
            f"{csv_path} lacks column(s) {sorted(missing)}; columns: {list(frame.columns)}."
        )
    check_separator_use(
        list(frame["Finding Labels"]),
        [csv_where(csv_path, i) for i in range(len(frame))],
        label_separator,
        f"column 'Finding Labels' of {csv_path}",
        known=[*NIH14_LABELS, NO_FINDING],
    )
    index = _index_images(data_dir, image_dir)
    problems: list[Problem] = []
    rows = []
    for i, row in frame.iterrows():
        where = csv_where(csv_path, i)
        findings = split_labels(row["Finding Labels"], label_separator)
        unknown = [f for f in findings if f not in NIH14_LABELS and f != NO_FINDING]
        if unknown or not findings:
            problems.append(
                Problem(
                    where,
                    f"unknown finding(s) {unknown or ['<empty>']}; valid: {[*NIH14_LABELS, NO_FINDING]}",
                )
            )
            continue
        if NO_FINDING in findings and len(set(findings)) > 1:
            problems.append(Problem(where, contradicts_no_finding(findings, NO_FINDING)))
            continue
        name = row["Image Index"]
        rel = index.get(name)
        if rel is None:
            problems.append(Problem(where, f"image {name} not found under {data_dir}"))
            continue
        rows.append(
            {
                "where": where,
                "name": name,
                "path": rel,
                "labels": [1.0 if f in findings else 0.0 for f in NIH14_LABELS],
                # Stripped: '75 ' and '75' are one patient (a leak across splits otherwise).
                "patient_id": row["Patient ID"].strip(),
                "view": normalize_view(row["View Position"]),
                "sex": row.get("Patient Gender"),
                "age": row.get("Patient Age"),
            }
        )
    skipped = raise_or_skip(problems, on_bad, f"rows in {csv_path}")
    if not rows:
        raise DataValidationError(
            f"no usable rows in {csv_path}: all {len(skipped)} were left out as bad (see the "
            "warnings above)."
        )
    records = pd.DataFrame(rows)
    given = [c for c, col in (("sex", "Patient Gender"), ("age", "Patient Age")) if col in frame]
    records = records.drop(columns=[c for c in ("sex", "age") if c not in given]).assign(
        **normalize_metadata(
            records["where"],
            names=records["name"],
            on_bad=on_bad,
            what=str(csv_path),
            **{c: records[c] for c in given},
        )
    )
    # The same Image Index twice: once is kept if the rows agree, else both lines are named.
    records = drop_duplicates(records, "name", on_bad, f"rows in {csv_path}")
    kwargs = {"label_names": NIH14_LABELS, "check_images": check_images, "on_bad": on_bad}
    if views is not None:
        views = [normalize_view(v) for v in views]
    if split_files is not None:
        keep = None
        if views is not None:
            keep = (f"view not in {views}", lambda part: part["view"].isin(views))
        try:
            return load_from_split_files(
                records,
                split_files,
                str(csv_path),
                data_dir,
                keys=("name", "path"),
                keep=keep,
                validation_size=validation_size,
                seed=seed,
                **kwargs,
            )
        except DataValidationError as err:
            if protocol == "paper" and (why := _partial_release(records, split_files, csv_path)):
                raise DataValidationError(f"{why}\nThe lines at fault: {err}") from err
            raise
    if views is not None:
        records = records[records["view"].isin(views)]
    # The official lists must name images that exist in the label file.
    by_name = {n: i for i, n in enumerate(records["name"])}
    known = set(frame["Image Index"])
    parts: dict[str, pd.DataFrame] = {}
    list_problems: list[Problem] = []
    for split, list_name in (("train_val", train_list), ("test", test_list)):
        picked, listed_at = [], []
        for where, name in _read_list(data_dir / list_name):
            if name in by_name:
                picked.append(by_name[name])
                listed_at.append(where)
            elif name not in known:
                list_problems.append(Problem(where, f"{name} is not in {label_file}"))
            elif name not in index:
                list_problems.append(Problem(where, f"{name} does not exist under {data_dir}"))
        part = records.iloc[picked]
        # Each list entry is its own row: an image in both lists is named by both lines.
        parts[split] = part.assign(
            where=[f"{w} ({at})" for w, at in zip(part["where"], listed_at, strict=True)]
        )
    raise_or_skip(list_problems, on_bad, "list entries")
    source = f"{csv_path} with {train_list} and {test_list}"
    built = build_splits(parts, data_dir, source, **kwargs)
    train, validation = patient_split(built["train_val"], validation_size, seed)
    return DatasetDict(train=train, validation=validation, test=built["test"])
