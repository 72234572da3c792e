"""Label sets of the public chest X-ray datasets and CheXpert-style uncertainty policies."""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..constants import IGNORE_LABEL
from .validation import DataValidationError, Problem, csv_where

logger = logging.getLogger(__name__)

# The paper's order (its code's order).
NIH14_LABELS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]  # fmt: skip
# CheXpert / MIMIC-CXR label-file column order.
CHEXPERT14_LABELS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
]  # fmt: skip
# The CheXpert competition findings.
CHEXPERT5_LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]

POLICIES = ("ones", "zeros", "ignore", "paper")
# The paper's code: uncertain Edema / Atelectasis are positives, the other competition
# findings negatives (the CheXpert paper's best per-finding choice). Others default to 0.
_PAPER_UNCERTAIN_ONES = {"Edema", "Atelectasis"}

ALLOWED_VALUES = "1, 0, -1 or blank"


def parse_value(raw: object) -> float | None:
    """A label cell as 1.0 / 0.0 / -1.0, None for blank; ValueError for anything else."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    text = str(raw).strip()
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{raw!r} is not {ALLOWED_VALUES}") from None
    if value not in (1.0, 0.0, -1.0):
        raise ValueError(f"{raw!r} is not {ALLOWED_VALUES}")
    return value


def apply_policy(value: float | None, name: str, policy: str) -> float:
    """Map a parsed cell to a training target under an uncertainty policy (blank -> 0)."""
    if value is None:
        return 0.0
    if value != -1.0:
        return value
    if policy == "ones":
        return 1.0
    if policy == "zeros":
        return 0.0
    if policy == "ignore":
        return IGNORE_LABEL
    if policy == "paper":
        return 1.0 if name in _PAPER_UNCERTAIN_ONES else 0.0
    raise ValueError(f"Unknown uncertainty policy {policy!r}; choose one of {POLICIES}.")


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(
            f"Unknown uncertainty policy {policy!r}; choose one of {', '.join(POLICIES)}."
        )


def parse_label_rows(
    frame: pd.DataFrame, csv_path: Path, names: list[str], policy: str
) -> tuple[list[list[float]], list[Problem]]:
    """Targets per row under ``policy``; a problem per cell outside {1, 0, -1, blank}."""
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{csv_path} lacks label column(s) {missing}; columns: {list(frame.columns)}."
        )
    targets, problems = [], []
    for i, row in enumerate(frame[names].itertuples(index=False)):
        vector = []
        for name, raw in zip(names, row, strict=True):
            try:
                vector.append(apply_policy(parse_value(raw), name, policy))
            except ValueError as err:
                problems.append(Problem(csv_where(csv_path, i), f"column {name!r}: {err}"))
        targets.append(vector)
    return targets, problems


def warn_lookalike_names(counts: Mapping[str, int], source: str, cutoff: float = 0.85) -> None:
    """Warn about label names found in ``source`` that look like typos of one another.

    Names are compared case-blind with ``difflib`` (``Efusion`` ~ ``Effusion``, ``Normal`` ~
    ``normal``); ``counts`` (images per name) go in the message, so the rare spelling stands out.
    """
    by_lower: dict[str, list[str]] = {}
    for name in counts:
        by_lower.setdefault(name.lower(), []).append(name)
    pairs: set[tuple[str, str]] = set()
    for name in counts:
        others = [o for o in by_lower if o != name.lower()]
        for match in difflib.get_close_matches(name.lower(), others, n=3, cutoff=cutoff):
            for other in by_lower[match]:
                pairs.add(tuple(sorted((name, other))))
        pairs.update(tuple(sorted((name, o))) for o in by_lower[name.lower()] if o != name)
    if pairs:
        text = "; ".join(
            f"{a!r} ({counts[a]} images) ~ {b!r} ({counts[b]} images)" for a, b in sorted(pairs)
        )
        logger.warning(
            "Label names in %s that look like typos of each other: %s. Each is its own class now; "
            "fix the file, or pass label_names to fix the set of classes.",
            source,
            text,
        )
