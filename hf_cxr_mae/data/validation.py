"""How bad input is reported: one ``DataValidationError`` naming every offending file and row.

Loaders collect a ``Problem`` per bad row (``where`` names the file and line), then either raise
them all at once (the default) or, with ``on_bad="skip"``, log them and leave those rows out.
Nothing is dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_SHOWN = 20  # offenders listed in full in one message


class DataValidationError(ValueError):
    """Bad input data; the message names every offending file / row (first 20 in full)."""


@dataclass
class Problem:
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def format_problems(
    problems: Sequence[Problem], what: str, hint: str = "", kind: str = "bad"
) -> str:
    lines = [str(p) for p in problems[:_SHOWN]]
    if len(problems) > _SHOWN:
        lines.append(f"... and {len(problems) - _SHOWN} more")
    text = f"{len(problems)} {kind} {what}:\n  " + "\n  ".join(lines)
    return text + (f"\n{hint}" if hint else "")


def raise_or_skip(problems: list[Problem], on_bad: str, what: str) -> set[str]:
    """Raise on problems (default) or, with ``on_bad="skip"``, log them and return their ``where``."""
    if on_bad not in ("raise", "skip"):
        raise ValueError(f"on_bad must be 'raise' or 'skip', got {on_bad!r}.")
    if not problems:
        return set()
    if on_bad == "raise":
        raise DataValidationError(
            format_problems(problems, what, "Fix them, or pass on_bad='skip' to leave them out.")
        )
    logger.warning("Skipping %s", format_problems(problems, what))
    return {p.where for p in problems}


def csv_where(csv_path: Path, index: int) -> str:
    """'file.csv line N' for the data row at 0-based position ``index`` (the header is line 1)."""
    return f"{csv_path} line {index + 2}"
