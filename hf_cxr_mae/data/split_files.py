"""Explicit split lists: one text file per split, each line an image and, optionally, its labels.

Any source's own split (official lists, a split column, a carved validation set) can be replaced
by such files: ``split_files={"train": ..., "validation": ..., "test": ...}``. An image is named
as the source names it (a file name, a path relative to ``data_dir``, a DICOM id); labels, when a
line carries them, must agree with the source's label table. Files may be plain text or
``.gz`` / ``.xz`` compressed. The paper's NIH split ships with the package (``paper_split_files``).
"""

from __future__ import annotations

import gzip
import logging
import lzma
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path

import pandas as pd
from datasets import DatasetDict

from .building import build_splits
from .files import read_text
from .image_paths import IMAGE_SUFFIXES
from .splits import patient_split
from .validation import DataValidationError, Problem, format_problems, raise_or_skip

logger = logging.getLogger(__name__)

SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
}
_PAPER_NAMES = {
    "train": "train_official.txt.xz",
    "validation": "val_official.txt.xz",
    "test": "test_official.txt.xz",
}


# A comma followed by ``name=`` (any word, so a misspelt split is still named in the error).
_ITEM_START = re.compile(r",(?=\s*\w+\s*=)")


def paper_split_files() -> dict[str, Path]:
    """The paper's NIH ChestX-ray14 split files shipped in the package (see the README beside them)."""
    folder = resources.files("hf_cxr_mae.data") / "nih_paper_split"
    return {split: Path(str(folder / name)) for split, name in _PAPER_NAMES.items()}


def parse_split_files(
    split_files: Mapping[str, str | Path] | str, data_dir: Path | None = None
) -> dict[str, Path]:
    """``{"train": path, ...}`` from a mapping or the flag form ``"train=a.txt,validation=b.txt"``.

    Split names may be train, validation (val, valid) and test; train is required. In the flag
    form a comma starts a new item only when ``split=`` follows it, so paths may hold commas. A
    relative path not found from the working directory is looked up in ``data_dir``.
    """
    if isinstance(split_files, str):
        pairs = {}
        items = _ITEM_START.split(split_files.strip().rstrip(","))  # a trailing comma
        for item in filter(None, (p.strip() for p in items)):
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(
                    f"split_files: {item!r} is not split=path; write e.g. "
                    "'train=train.txt,validation=val.txt,test=test.txt'."
                )
            if key.strip() in pairs:
                raise ValueError(f"split_files names split {key.strip()!r} twice.")
            pairs[key.strip()] = value.strip()
        split_files = pairs
    out: dict[str, Path] = {}
    for key, value in split_files.items():
        split = SPLIT_ALIASES.get(str(key))
        if split is None:
            raise ValueError(
                f"split_files: unknown split {key!r}; use train, validation (or val) and test."
            )
        if split in out:
            raise ValueError(f"split_files names the {split} split twice (as {key!r}).")
        path = Path(value).expanduser()
        if not path.is_file() and not path.is_absolute() and data_dir is not None:
            path = data_dir / path if (data_dir / path).is_file() else path
        if not path.is_file():
            raise FileNotFoundError(
                f"Split file for {split!r} not found: {value}"
                + (f" (looked here and in {data_dir})" if data_dir is not None else "")
            )
        out[split] = path
    if "train" not in out:
        raise ValueError(f"split_files needs a train file; got splits {sorted(out)}.")
    return out


def _text(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".xz", ".gz"):
        opener = lzma.open if suffix == ".xz" else gzip.open
        try:
            with opener(path, "rb") as f:
                return f.read().decode("utf-8-sig")
        except (OSError, lzma.LZMAError, UnicodeDecodeError) as err:
            raise DataValidationError(
                f"{path} is not a readable {suffix} text file: {err}"
            ) from err
    return read_text(path)


def read_split_file(path: Path) -> list[tuple[str, str, list[str]]]:
    """(``"file line N"``, image, label tokens) per non-blank line. A line repeating an earlier
    one is kept once with a warning; the same image twice with other labels is an error."""
    entries: list[tuple[str, str, list[str]]] = []
    first: dict[str, tuple[str, list[str]]] = {}
    repeats: list[Problem] = []
    conflicts: list[Problem] = []
    for i, line in enumerate(_text(path).splitlines()):
        tokens = line.replace("\ufeff", "").split()
        if not tokens:
            continue
        where = f"{path} line {i + 1}"
        name, labels = tokens[0], tokens[1:]
        if name in first:
            seen_where, seen_labels = first[name]
            if seen_labels == labels:
                repeats.append(Problem(where, f"duplicate of {seen_where} ({name}); listed once"))
            else:
                conflicts.append(Problem(where, f"{name} is also {seen_where}, with other labels"))
            continue
        first[name] = (where, labels)
        entries.append((where, name, labels))
    if repeats:
        logger.warning("%s", format_problems(repeats, f"entries in {path}", kind="repeated"))
    if conflicts:
        raise DataValidationError(
            format_problems(conflicts, f"entries in {path}", kind="conflicting")
        )
    if not entries:
        raise DataValidationError(f"{path} lists no images.")
    return entries


def _label_problem(
    tokens: list[str],
    target: object,
    label_names: Sequence[str] | None,
    class_names: Sequence[str] | None,
) -> str | None:
    """Why the label tokens of a line disagree with the label table's ``target`` (a class index
    or a list of targets), or None."""
    if not tokens:
        return None
    if class_names is not None:
        want = class_names[int(target)]
        if len(tokens) != 1:
            return f"expected one class name after the image, got {len(tokens)} values"
        return (
            None if tokens[0] == want else f"class {tokens[0]!r} here, {want!r} in the label table"
        )
    if label_names is None:
        return f"has {len(tokens)} label values but this source has no labels"
    if len(tokens) != len(label_names):
        return (
            f"{len(tokens)} label values, expected {len(label_names)} "
            f"(in this order: {', '.join(label_names)})"
        )
    try:
        given = [float(t) for t in tokens]
    except ValueError:
        return f"label values {tokens} are not numbers"
    differ = [
        f"{n} {g:g} here, {float(t):g} in the label table"
        for n, g, t in zip(label_names, given, target, strict=True)
        if g != float(t)
    ]
    return "labels disagree: " + "; ".join(differ) if differ else None


def assign_split_files(
    records: pd.DataFrame,
    split_files: Mapping[str, Path],
    table: str,
    *,
    keys: Sequence[str] = ("path",),
    label_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    on_bad: str = "raise",
) -> dict[str, pd.DataFrame]:
    """The records of each split file, in file order; records listed in no file are left out.

    ``records`` is a source's whole label table (``where``, ``path``, ``labels`` or ``label``);
    an image may be named by any of its ``keys`` columns. A line naming an image not in the
    table, naming it ambiguously, or with labels that disagree with it is a problem naming the
    file and line (raised, or skipped with ``on_bad="skip"``). The usual no-image-or-patient-
    in-two-splits check is left to ``build_splits``.
    """
    lookup: dict[str, int] = {}
    ambiguous: dict[str, set[int]] = {}
    for key in keys:
        if key not in records:
            continue
        for row, value in enumerate(records[key]):
            if value is None or (isinstance(value, float) and pd.isna(value)):
                continue
            value = str(value)
            if lookup.setdefault(value, row) != row:
                ambiguous.setdefault(value, {lookup[value]}).add(row)
    # Plain lists: one lookup per line stays cheap for the 112,120 lines of the paper's split.
    wheres = list(records["where"])
    column = "label" if class_names is not None else "labels"
    targets = list(records[column]) if column in records else [None] * len(records)
    problems: list[Problem] = []
    picked: dict[str, list[tuple[int, str]]] = {}
    for split, path in split_files.items():
        picked[split] = []
        for number, (where, name, tokens) in enumerate(read_split_file(path)):
            if name in ambiguous:
                paths = sorted(str(records["path"].iloc[r]) for r in ambiguous[name])
                problems.append(Problem(where, f"{name} names {len(paths)} images {paths}"))
                continue
            row = lookup.get(name)
            if row is None:
                left_out = (
                    " (or its row was left out as bad, see above)" if on_bad == "skip" else ""
                )
                header = (
                    "; it looks like a header line: split files have none, delete it"
                    if number == 0
                    and not any(c.isdigit() for c in name)
                    and not name.lower().endswith(IMAGE_SUFFIXES)
                    else ""
                )
                problems.append(Problem(where, f"{name} is not in {table}{left_out}{header}"))
                continue
            if (why := _label_problem(tokens, targets[row], label_names, class_names)) is not None:
                problems.append(Problem(where, f"{name}: {why} ({wheres[row]})"))
                continue
            picked[split].append((row, where))
    raise_or_skip(problems, on_bad, "split-file lines")
    parts = {}
    for split, rows in picked.items():
        part = records.iloc[[r for r, _ in rows]]
        parts[split] = part.assign(
            where=[f"{w} ({at})" for w, (_, at) in zip(part["where"], rows, strict=True)]
        )
    listed = {r for rows in picked.values() for r, _ in rows}
    if unlisted := len(records) - len(listed):
        logger.warning("%d images of %s are in no split file and are left out.", unlisted, table)
    return parts


def load_from_split_files(
    records: pd.DataFrame,
    split_files: Mapping[str, Path],
    table: str,
    data_dir: Path,
    *,
    keys: Sequence[str] = ("path",),
    keep: tuple[str, Callable[[pd.DataFrame], pd.Series]] | None = None,
    validation_size: float | int = 0.1,
    seed: int = 0,
    label_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    check_images: str = "open",
    on_bad: str = "raise",
    metadata_columns: Sequence[str] = (),
) -> DatasetDict:
    """A ``DatasetDict`` whose splits are exactly the files' images (``assign_split_files``),
    checked by ``build_splits`` (no image or patient in two splits). ``keep`` is a source's own
    filter (description, row mask), e.g. frontal views only; the listed images it removes are
    counted in a warning. Without a validation file, one is carved from train by patient.
    Records' metadata (``sex``, ``age``, ``metadata_columns``) is kept as ``build_splits`` does."""
    labels = {"label_names": label_names, "class_names": class_names}
    parts = assign_split_files(records, split_files, table, keys=keys, on_bad=on_bad, **labels)
    if keep is not None:
        what, mask = keep
        kept = {s: p[mask(p)] for s, p in parts.items()}
        if dropped := sum(len(parts[s]) - len(kept[s]) for s in parts):
            logger.warning("%d images listed in the split files are left out: %s.", dropped, what)
        parts = kept
    source = f"{table} with " + ", ".join(str(p) for p in split_files.values())
    built = build_splits(
        parts,
        data_dir,
        source,
        check_images=check_images,
        on_bad=on_bad,
        metadata_columns=metadata_columns,
        **labels,
    )
    if "validation" not in built:
        built["train"], built["validation"] = patient_split(built["train"], validation_size, seed)
    return DatasetDict({s: built[s] for s in ("train", "validation", "test") if s in built})
