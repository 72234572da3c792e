"""Label sets of the public chest X-ray datasets and CheXpert-style uncertainty policies."""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..constants import IGNORE_LABEL
from .validation import DataValidationError, Problem, csv_where, format_problems

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


# Between the findings of one label cell: NIH writes "Atelectasis|Effusion"; files re-exported by
# hand often use ";" or ",", which must not turn into one invented class "Atelectasis;Effusion".
LABEL_SEPARATOR = "|"
_COMMON_SEPARATORS = ("|", ";", ",")
# Written by hand ("Effusion / Mass", "Effusion + Mass", "Effusion and Mass"): taken as a
# separator only where every part is a known label, as these may sit inside a real class name.
_LOOSE_SEPARATORS = ("/", "+", " and ", "&")


def _other_separator(
    token: str, separator: str, seen: Collection[str]
) -> tuple[str, list[str]] | None:
    """``(other separator, parts)`` where ``token`` reads as several findings joined by another
    separator than ``separator``; None otherwise."""
    for other in _COMMON_SEPARATORS + _LOOSE_SEPARATORS:
        if other == separator or len(parts := split_labels(token, other)) < 2:
            continue
        known = [p in seen for p in parts]
        if all(known) if other in _LOOSE_SEPARATORS else any(known):
            return other, parts
    return None


def split_labels(cell: str, separator: str = LABEL_SEPARATOR) -> list[str]:
    """The findings of one label cell, stripped, empty pieces dropped."""
    return [t.strip() for t in str(cell).split(separator) if t.strip()]


def contradicts_no_finding(findings: Sequence[str], no_finding: str) -> str:
    """The problem text of a label cell naming ``no_finding`` together with findings."""
    others = [f for f in findings if f != no_finding]
    return (
        f"{no_finding!r} together with the finding(s) {others}: contradictory (NIH's release "
        f"never combines them); write either {no_finding!r} or the findings"
    )


def check_label_separator(separator: object, option: str = "label_separator") -> str:
    """``separator`` if it is a non-empty string, else a ``ValueError`` naming the option."""
    if not isinstance(separator, str) or not separator:
        raise ValueError(
            f"{option} must be a non-empty string such as '|' or ';', got {separator!r}."
        )
    return separator


def check_separator_use(
    cells: Sequence[str],
    wheres: Sequence[str],
    separator: str,
    what: str,
    known: Collection[str] | None = None,
    hint: str = "",
) -> None:
    """Refuse label cells whose findings are written with another common separator than
    ``separator`` (``;``, ``,`` or ``|``): a token that splits on one of them into two or more
    parts, one of them a known label, names every such row, its value and the separator to pass.
    ``/``, ``+``, ``&`` and `` and `` count too where every part is a known label.

    ``known``: the valid label names (a token that is one of them is never split); None takes
    every token found in ``cells`` as known, so ``"A;B"`` is refused where ``"A"`` or ``"B"``
    stands alone in another row. Raised whatever ``on_bad`` says: skipping those rows would
    silently drop every image with several findings.
    """
    tokens = [split_labels(cell, separator) for cell in cells]
    valid = set(known) if known is not None else set()
    seen = valid or {t for row in tokens for t in row}
    problems: list[Problem] = []
    for where, cell, row in zip(wheres, cells, tokens, strict=True):
        for token in row:
            if token in valid:
                continue
            found = _other_separator(token, separator, seen)
            if found is not None:
                other, parts = found
                problems.append(
                    Problem(
                        where,
                        f"{cell!r} looks like the findings {parts} separated by {other!r}, not "
                        f"{separator!r}: pass label_separator={other!r}",
                    )
                )
                break
    if problems:
        raise DataValidationError(
            format_problems(
                problems,
                what,
                "Findings in one cell are split on label_separator (recipes and the CLI: "
                "--label_separator); pass the file's separator, or write the file with "
                f"{separator!r}.{hint}",
                kind="label cells with another separator in",
            )
        )
