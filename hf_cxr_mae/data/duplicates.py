"""Repeated rows and repeated files: exact repeats kept once, conflicting ones refused."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .validation import Problem, format_problems, raise_or_skip

logger = logging.getLogger(__name__)


def comparable(value: object) -> object:
    """A comparable form of a record cell: sequences as float tuples, missing as None."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(float(v) for v in value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def drop_duplicates(
    records: pd.DataFrame,
    key: str | Sequence[str],
    on_bad: str,
    what: str,
    ignore: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per ``key``. A row repeating an earlier one exactly (``ignore`` columns aside)
    is dropped with a warning naming both rows; one that disagrees with it (labels, patient,
    view, split, ...) is an error naming both rows, or with ``on_bad="skip"`` every copy is left
    out (which is right is unknown)."""
    keys = [key] if isinstance(key, str) else list(key)
    if not records.duplicated(keys).any():  # the usual case, without a loop over rows
        return records.reset_index(drop=True)
    left_out = {"where", *keys, *ignore}
    compared = [c for c in records.columns if c not in left_out]
    first: dict[tuple, tuple[str, tuple]] = {}
    repeats: list[Problem] = []
    conflicts: list[Problem] = []
    conflicting: set[tuple] = set()
    keep: list[bool] = []
    for where, key_row, row in zip(
        records["where"],
        records[keys].itertuples(index=False),
        records[compared].itertuples(index=False),
        strict=True,
    ):
        k = tuple(comparable(v) for v in key_row)
        content = tuple(comparable(v) for v in row)
        keep.append(k not in first)
        if k not in first:
            first[k] = (where, content)
            continue
        name = ", ".join(map(str, k))
        first_where, first_content = first[k]
        differ = [
            f"{c} {b!r} there, {a!r} here"
            for c, a, b in zip(compared, content, first_content, strict=True)
            if a != b
        ]
        if differ:
            conflicts.append(
                Problem(
                    where, f"duplicate of {first_where} ({name}) with different {'; '.join(differ)}"
                )
            )
            conflicting.add(k)
        else:
            repeats.append(Problem(where, f"exact duplicate of {first_where} ({name}); kept once"))
    if repeats:
        logger.warning("%s", format_problems(repeats, what, kind="repeated"))
    raise_or_skip(conflicts, on_bad, f"{what} (conflicting duplicates)")
    records = records.loc[np.asarray(keep, dtype=bool)]
    if conflicting:
        in_conflict = [
            tuple(comparable(v) for v in r) in conflicting
            for r in records[keys].itertuples(index=False)
        ]
        records = records.loc[~np.asarray(in_conflict, dtype=bool)]
    return records.reset_index(drop=True)


def _head_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(16384)).hexdigest()


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()


def content_digests(splits_of: Mapping[str, set[str]]) -> dict[str, str]:
    """A full-content digest for each file whose bytes may equal a file's of another owner
    (``splits_of``: path -> owners, e.g. the splits listing it, or the path itself).

    Narrowed in stages, each only among files that still collide across owners: size, then a
    digest of the first 16 KiB, then the whole file. Distinct images differ early (image
    headers, compressed data), so whole files are read only for true copies.
    """
    keys: dict[str, object] = {p: os.path.getsize(p) for p in splits_of if os.path.isfile(p)}
    for stage in (_head_digest, _digest):
        spread: dict[object, set[str]] = {}
        for path, key in keys.items():
            spread.setdefault(key, set()).update(splits_of[path])
        keys = {p: (k, stage(p)) for p, k in keys.items() if len(spread[k]) > 1}
    return {p: str(k) for p, k in keys.items()}
