"""Patient metadata kept beside the images for subgroup analysis: sex, age, view, user columns.

Every source names these the same way in its datasets: ``sex`` ("M" / "F", None when unknown),
``age`` (float years, None when unknown or implausible), ``view`` ("PA", "AP", "LATERAL", "LL",
others upper-cased as given) and, for a CSV source, the user's own ``metadata_columns`` (strings,
under their own names). Values are normalised here, and values that cannot be read are reported
naming their file and row, never used silently:

- an age that is not a number ("abc") is an error (``DataValidationError``); with
  ``on_bad="skip"`` it is set to missing with a warning (the image and its labels are fine, only
  its subgroup is unknown, so the row is kept);
- an age outside 0-120 years (the NIH release has a few over 150) is set to missing with a
  warning naming the rows and their count: a real release must load, but such an age is no age;
- a sex other than male / female (or a known spelling of unknown) is set to missing with a
  warning; unknown sex ("Unknown", "U", blank) is simply missing.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence

import pandas as pd
from datasets import Dataset, DatasetDict

from .validation import DataValidationError, Problem, format_problems

logger = logging.getLogger(__name__)

# The oldest documented human lived 122 years: anything beyond 120 is a data error.
MAX_AGE = 120.0

# Columns that are not metadata: the image, its identity, its targets, and what the pipeline adds.
NON_METADATA = frozenset(
    {
        "image",
        "image_id",
        "patient_id",
        "labels",
        "label",
        "pixels",
        "height",
        "width",
        "perceptual_hash",
        "row_id",
        "aug_seed",
        "pixel_values",
        "source",
    }
)
STANDARD = ("sex", "age", "view")

_SEX = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}
# Spellings of "not recorded", read as missing (not as bad values) in any metadata column.
_MISSING = {"unknown", "unk", "na", "n/a", "nan", "none", "null", "?", "-"}
_UNKNOWN_SEX = {"u", *_MISSING}
# DICOM Age String (as NIH's older files write it): 058Y, 006M, 002W, 010D.
_AGE_STRING = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([YMWD])\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
_VIEWS = {"LAT": "LATERAL", "LATERAL": "LATERAL"}


def _blank(value: object) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or bool(pd.isna(value))


def normalize_sex(value: object) -> str | None:
    """Sex as "M" / "F" from M, F, Male, Female (any case); None for blank or unknown.

    Raises ``ValueError`` for any other value (the caller names the row)."""
    if _blank(value):
        return None
    text = str(value).strip().lower()
    if text in _SEX:
        return _SEX[text]
    if text in _UNKNOWN_SEX:
        return None
    raise ValueError(f"sex {value!r} is not M, F, Male, Female or Unknown")


def normalize_age(value: object) -> float | None:
    """Age in years from a number ("61", "61.5") or a DICOM age string ("061Y", "006M"); None
    for blank or a "not recorded" spelling (NA, Unknown, ...). Raises ``ValueError`` for text that is no age and ``OverflowError`` for an age
    outside 0-``MAX_AGE`` years (the caller names the row)."""
    if _blank(value) or str(value).strip().lower() in _MISSING:
        return None
    text = str(value).strip()
    match = _AGE_STRING.match(text)
    try:
        years = float(match[1]) * _AGE_UNIT_YEARS[match[2].upper()] if match else float(text)
    except ValueError:
        raise ValueError(f"age {value!r} is not a number of years") from None
    if not math.isfinite(years) or not 0 <= years <= MAX_AGE:
        raise OverflowError(f"age {value!r} is outside 0-{MAX_AGE:g} years")
    return years


def normalize_view(value: object) -> str | None:
    """The view position upper-cased ("PA", "AP", "LL", ...), "LAT" / "Lateral" as "LATERAL",
    None for blank."""
    if _blank(value):
        return None
    text = str(value).strip().upper()
    return _VIEWS.get(text, text) or None


def normalize_metadata(
    wheres: Sequence[str],
    *,
    sex: Sequence[object] | None = None,
    age: Sequence[object] | None = None,
    names: Sequence[str] | None = None,
    on_bad: str = "raise",
    what: str = "rows",
) -> dict[str, list]:
    """``sex`` and ``age`` columns (those given) of one table, normalised, each bad value
    reported naming its row (``wheres``) and image (``names``, optional).

    An unreadable age raises a ``DataValidationError`` listing every such row (with
    ``on_bad="skip"``: set to missing, with a warning); an out-of-range age and an unknown sex
    spelling are set to missing with a warning naming the rows and their count."""
    if on_bad not in ("raise", "skip"):
        raise ValueError(f"on_bad must be 'raise' or 'skip', got {on_bad!r}.")
    labels = [
        f"{w} ({n})" if n is not None else w
        for w, n in zip(wheres, names if names is not None else [None] * len(wheres), strict=True)
    ]
    out: dict[str, list] = {}
    if sex is not None:
        values, odd = [], []
        for where, value in zip(labels, sex, strict=True):
            try:
                values.append(normalize_sex(value))
            except ValueError as err:
                values.append(None)
                odd.append(Problem(where, f"{err}; set to unknown"))
        if odd:
            logger.warning("%s", format_problems(odd, f"sex values in {what}", kind="unreadable"))
        out["sex"] = values
    if age is not None:
        values, unreadable, implausible = [], [], []
        for where, value in zip(labels, age, strict=True):
            try:
                values.append(normalize_age(value))
            except OverflowError as err:
                values.append(None)
                implausible.append(Problem(where, f"{err}; set to missing"))
            except ValueError as err:
                values.append(None)
                unreadable.append(Problem(where, str(err)))
        if implausible:
            logger.warning(
                "%s", format_problems(implausible, f"ages in {what}", kind="out-of-range")
            )
        if unreadable:
            if on_bad == "raise":
                raise DataValidationError(
                    format_problems(
                        unreadable,
                        f"ages in {what}",
                        "Fix them, or pass on_bad='skip' to keep those rows with no age.",
                        kind="unreadable",
                    )
                )
            logger.warning(
                "Setting to missing %s",
                format_problems(unreadable, f"ages in {what}", kind="unreadable"),
            )
        out["age"] = values
    return out


def subgroup_columns(dataset: Dataset | DatasetDict) -> list[str]:
    """The metadata columns present (sex, age, view, then user columns, in dataset order):
    every column except the image, its ids, its targets and the pipeline's own. A column with no
    value at all (``view`` of an image folder) is left out: it has no subgroups."""
    if isinstance(dataset, DatasetDict):  # a column with values in any split
        found = [c for split in dataset.values() for c in subgroup_columns(split)]
        return list(dict.fromkeys(found))
    columns = [c for c in dataset.column_names if c not in NON_METADATA and _has_values(dataset, c)]
    return [c for c in STANDARD if c in columns] + [c for c in columns if c not in STANDARD]


def _has_values(dataset: Dataset, column: str) -> bool:
    # One column as Arrow: no image is read or decoded.
    values = dataset.select_columns([column]).with_format("arrow")[:][column]
    return values.null_count < len(values)
