"""Any labelled folder: a CSV of image paths and labels, class subfolders, or an existing dataset."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset
from datasets import Sequence as HFSequence

from .core import (
    IMAGE_SUFFIXES,
    DataValidationError,
    Problem,
    build_splits,
    csv_where,
    labels_feature,
    patient_split,
    raise_or_skip,
)
from .files import read_csv
from .labels import check_policy, parse_label_rows, warn_lookalike_names
from .split_files import load_from_split_files, parse_split_files

logger = logging.getLogger(__name__)


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
    split_files: Mapping[str, str | Path] | str | None = None,
) -> DatasetDict:
    """A CSV with an image-path column (relative to ``data_dir``) and labels given either as one
    1/0/-1/blank column per finding (``label_columns``; default: every column not otherwise
    named) or as one delimited column (``label_column``, e.g. ``"A|B"``, names from
    ``label_names`` or the sorted values found). ``split_column`` values train/validation/test
    define splits; otherwise all rows are train and a patient-disjoint validation is split off.
    ``split_files`` (``{"train": ..., "validation": ..., "test": ...}``) overrides both: each line
    names an image as the image column does, optionally followed by its targets in label order."""
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
            # A blank patient cell is no patient id, not one patient shared by every blank row.
            "patient_id": frame[patient_column].str.strip().replace("", None)
            if patient_column
            else None,
            "view": frame[view_column] if view_column else None,
            "split": frame[split_column] if split_column else "train",
        }
    )
    skipped = raise_or_skip(problems, on_bad, f"label cells in {csv_path}")
    records = records[~records["where"].isin(skipped)]
    kwargs = {"label_names": names, "check_images": check_images, "on_bad": on_bad}
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
    parts = {
        s: records[records["split"] == s]
        for s in ("train", "validation", "test")
        if (records["split"] == s).any()
    }
    out = build_splits(parts, data_dir, str(csv_path), **kwargs)
    if "train" in out and "validation" not in out:
        out["train"], out["validation"] = patient_split(out["train"], validation_size, seed)
    return DatasetDict(out)


# Split folder names, as ``datasets``' imagefolder reads them, in any case: public sets ship
# ``Train/``, ``Val/``, ``Test/`` too, which must not become classes or an unlabelled set.
_SPLIT_FOLDERS = {
    "train": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
}
# Folders and files operating systems and tools leave behind; every hidden one (".*") too.
_JUNK_FOLDERS = {"__MACOSX", "__pycache__"}
_JUNK_FILES = {"thumbs.db", "desktop.ini"}  # Windows Explorer's, compared case-blind


def _visible_images(root: Path) -> tuple[list[Path], int, list[Path]]:
    """Images under ``root`` (relative paths, sorted), the number of junk entries ignored
    (hidden folders such as ``.ipynb_checkpoints``, ``__MACOSX``, hidden files such as
    ``.DS_Store`` and the AppleDouble ``._name.png`` copies macOS puts beside every file on a
    foreign disk, ``Thumbs.db``, ``desktop.ini``), and the other files, which are not used."""
    images: list[Path] = []
    others: list[Path] = []
    junk = 0
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back into the tree (``up -> ..``): its images again, forever
            logger.warning("Skipped %s: a link to %s, which is read already.", folder, real)
            dirs[:] = []
            continue
        seen.add(real)
        kept = sorted(d for d in dirs if not d.startswith(".") and d not in _JUNK_FOLDERS)
        junk += len(dirs) - len(kept)
        dirs[:] = kept
        for name in sorted(files):
            if name.startswith(".") or name.lower() in _JUNK_FILES:
                junk += 1
            elif name.lower().endswith(IMAGE_SUFFIXES):
                images.append(Path(folder, name).relative_to(root))
            else:
                others.append(Path(folder, name).relative_to(root))
    return images, junk, others


def _is_labelled(files: list[Path], folder: Path, labelled: bool | None) -> bool:
    """Whether ``files`` (relative to ``folder``) are ``<class>/<image>``; a mix is refused."""
    if labelled is False:
        return False
    in_classes = [f for f in files if len(f.parts) == 2]
    if labelled is None and not in_classes:
        return False  # no class folder at all: an unlabelled set, at any depth
    if strays := [str(f) for f in files if len(f.parts) != 2]:
        shown = ", ".join(strays[:10]) + (
            f" and {len(strays) - 10} more" if len(strays) > 10 else ""
        )
        if not in_classes:  # labels asked for, none found: often data_dir one level too high
            raise DataValidationError(
                f"{folder} has no class folders (<class>/<image>, or train/<class>/<image>): "
                f"labels are needed, but the images are {shown}. Point data_dir at the folder "
                "that holds the class (or train/, val/, test/) folders."
            )
        raise DataValidationError(
            f"{folder} mixes layouts: {len(in_classes)} images are in class folders "
            f"(<class>/<image>) but {len(strays)} are not: {shown}. Move them into a class folder "
            "or out of the data folder, or pass labelled=False to use every image, at any depth, "
            "without labels."
        )
    return True


def _split_folders(files: list[Path], data_dir: Path) -> dict[str, str] | None:
    """``{folder: split}`` when the top level holds split folders (train/, val/, test/), else None."""
    top = {f.parts[0] for f in files if len(f.parts) > 1}
    splits = {t: _SPLIT_FOLDERS[t.lower()] for t in top if t.lower() in _SPLIT_FOLDERS}
    if not splits:
        return None
    strays = sorted(str(f) for f in files if len(f.parts) == 1 or f.parts[0] not in splits)
    if strays or "train" not in splits.values() or len(set(splits.values())) != len(splits):
        raise DataValidationError(
            f"{data_dir} has split folders {sorted(splits)} but "
            + (
                f"also images outside them: {', '.join(strays[:10])}"
                if strays
                else "no train/ folder, or two folders for one split (val/ and validation/?)"
            )
            + ". Use train/ with val/ or validation/ and test/ beside it, each holding class folders."
        )
    return splits


def load_imagefolder(
    data_dir: str | Path,
    labelled: bool | None = None,
    validation_size: float | int = 0.1,
    seed: int = 0,
    check_images: str = "open",
    on_bad: str = "raise",
) -> DatasetDict:
    """Class subfolders (``data_dir/<class>/<image>``, single-label), optionally inside split
    folders (``train/``, ``val/`` or ``validation/``, ``test/``, the same classes in each), or,
    for pre-training, images without labels (any depth). ``labelled=None`` decides from the
    layout and refuses a mix of the two, naming the stray files. Hidden files and folders and
    ``__MACOSX`` are ignored. Without a validation folder, one is split off the training images."""
    data_dir = Path(data_dir)
    files, junk, others = _visible_images(data_dir)
    if junk:
        logger.info("Ignored %d hidden or OS/tool files and folders under %s.", junk, data_dir)
    if others:  # a .tif or extensionless DICOM is an X-ray left out: say so, name them
        logger.warning(
            "Left out %d files under %s that are not PNG, JPEG or DICOM (%s): %s%s",
            len(others),
            data_dir,
            "/".join(IMAGE_SUFFIXES),
            ", ".join(map(str, others[:10])),
            f" and {len(others) - 10} more" if len(others) > 10 else "",
        )
    if not files:
        raise DataValidationError(f"No PNG, JPEG or DICOM images under {data_dir}.")
    folders = _split_folders(files, data_dir) or {"": "train"}
    order = ["train", "validation", "test"]
    folders = dict(sorted(folders.items(), key=lambda item: order.index(item[1])))
    by_split: dict[str, list[Path]] = {}
    for folder, split in folders.items():
        root = data_dir / folder
        by_split[split] = [f.relative_to(folder) for f in files if root in (data_dir / f).parents]
    layouts = {
        s: _is_labelled(fs, data_dir / f, labelled)
        for (f, s), fs in zip(folders.items(), by_split.values(), strict=True)
    }
    if len(set(layouts.values())) > 1:
        raise DataValidationError(
            f"{data_dir}: split folders {sorted(s for s, v in layouts.items() if v)} hold class "
            f"folders, {sorted(s for s, v in layouts.items() if not v)} do not."
        )
    is_labelled = next(iter(layouts.values()))
    class_sets = {s: sorted({f.parts[0] for f in fs}) for s, fs in by_split.items()}
    classes = sorted(set().union(*class_sets.values())) if is_labelled else None
    if is_labelled and (differ := {s: c for s, c in class_sets.items() if c != classes}):
        raise DataValidationError(
            f"{data_dir}: the splits must have the same class folders ({classes}); "
            + "; ".join(f"{s} lacks {sorted(set(classes) - set(c))}" for s, c in differ.items())
            + "."
        )
    parts = {}
    for (folder, split), fs in zip(folders.items(), by_split.values(), strict=True):
        rel = [str(Path(folder) / f) for f in fs]
        records = pd.DataFrame({"where": [str(data_dir / r) for r in rel], "path": rel})
        if classes is not None:
            records["label"] = [classes.index(f.parts[0]) for f in fs]
        parts[split] = records
    if classes is not None:
        counts = Counter(f.parts[0] for fs in by_split.values() for f in fs)
        warn_lookalike_names(counts, f"the class folders of {data_dir}")
    out = build_splits(
        parts,
        data_dir,
        str(data_dir),
        class_names=classes,
        check_images=check_images,
        on_bad=on_bad,
    )
    if classes is not None and "validation" not in out:
        out["train"], out["validation"] = patient_split(out["train"], validation_size, seed)
    return DatasetDict(out)


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
