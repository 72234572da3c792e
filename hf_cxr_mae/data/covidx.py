"""COVIDx: text split files ``patient_id filename label source``; single-label classes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from datasets import DatasetDict

from .building import build_splits
from .files import read_text
from .labels import warn_lookalike_names
from .split_files import load_from_split_files, parse_split_files
from .splits import patient_split
from .validation import DataValidationError, Problem, raise_or_skip

_SPLIT_FILES = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}


def _read_split_file(path: Path, image_dir: str) -> tuple[pd.DataFrame, list[Problem]]:
    rows, problems = [], []
    for i, line in enumerate(read_text(path).splitlines()):
        if not line.strip():
            continue
        parts = line.split()
        where = f"{path} line {i + 1}"
        if len(parts) < 3:
            problems.append(
                Problem(where, f"expected 'patient_id filename label [source]', got {line!r}")
            )
            continue
        rows.append(
            {
                "where": where,
                "patient_id": parts[0],
                "path": f"{image_dir}/{parts[1]}",
                "class": parts[2],
            }
        )
    if not rows and not problems:
        raise DataValidationError(f"{path} is empty.")
    return pd.DataFrame(rows, columns=["where", "patient_id", "path", "class"]), problems


def load_covidx(
    data_dir: str | Path,
    class_names: list[str] | None = None,
    validation_size: float | int = 0.1,
    seed: int = 0,
    check_images: str = "open",
    on_bad: str = "raise",
    split_files: Mapping[str, str | Path] | str | None = None,
) -> DatasetDict:
    """COVIDx from ``train.txt`` / ``test.txt`` (and ``val.txt`` if present), images in
    ``train/`` and ``test/``. Class names default to the sorted labels found in the files; a
    label outside ``class_names`` is an error naming the line.

    ``split_files`` (``{"train": ..., "validation": ..., "test": ...}``) regroups the images of
    those files: each line names an image by file name or by ``train/name`` / ``test/name``,
    optionally followed by its class name, checked against the COVIDx files."""
    data_dir = Path(data_dir)
    frames, problems = {}, []
    for split, name in _SPLIT_FILES.items():
        path = data_dir / name
        if path.is_file():
            image_dir = "test" if split == "test" else "train"
            frames[split], found = _read_split_file(path, image_dir)
            problems += found
    if "train" not in frames or "test" not in frames:
        raise FileNotFoundError(f"COVIDx needs train.txt and test.txt in {data_dir}.")
    raise_or_skip(problems, on_bad, "split-file lines")
    found = Counter(c for f in frames.values() for c in f["class"])
    if class_names is None:
        warn_lookalike_names(found, f"the labels of {data_dir}")
    names = list(class_names) if class_names is not None else sorted(found)
    bad = [
        Problem(w, f"label {c!r} not in {names}")
        for f in frames.values()
        for w, c in zip(f["where"], f["class"], strict=True)
        if c not in names
    ]
    skipped = raise_or_skip(bad, on_bad, "labels")
    parts = {}
    for split, frame in frames.items():
        frame = frame[~frame["where"].isin(skipped)]
        parts[split] = frame.assign(label=[names.index(c) for c in frame["class"]])
    source = " and ".join(str(data_dir / _SPLIT_FILES[s]) for s in frames)
    if split_files is not None:
        records = pd.concat(parts.values(), ignore_index=True)
        return load_from_split_files(
            records.assign(name=[Path(p).name for p in records["path"]]),
            parse_split_files(split_files, data_dir),
            source,
            data_dir,
            keys=("path", "name"),
            validation_size=validation_size,
            seed=seed,
            class_names=names,
            check_images=check_images,
            on_bad=on_bad,
        )
    out = build_splits(
        parts, data_dir, source, class_names=names, check_images=check_images, on_bad=on_bad
    )
    if "validation" not in out:
        out["train"], out["validation"] = patient_split(out["train"], validation_size, seed)
    return DatasetDict(out)
