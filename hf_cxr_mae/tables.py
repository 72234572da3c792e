"""Numbers and markdown tables, one of each: the formatter every report, comparison and model
card writes its numbers with, the markdown table renderer, and the rows of the tables that both
report.md and the model card show (calibration, operating points, subgroups), built once.

Plain Python (no torch, no NumPy needed): top level, so the model card may use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

RATES = ("sensitivity", "specificity", "ppv", "npv")
COUNTS = ("tp", "fp", "tn", "fn")
NO_THRESHOLD = "none (one class on validation)"


def number(value: float | None, digits: int = 3, missing: str = "undefined") -> str:
    """``value`` with ``digits`` decimals; ``missing`` for None (an undefined metric)."""
    return missing if value is None else f"{value:.{digits}f}"


def signed(value: float | None, missing: str = "-") -> str:
    """A difference with its sign (``+0.012``, ``-0.030``); ``missing`` for None."""
    return missing if value is None else f"{value:+.3f}"


def interval(ci: Sequence[float] | None, missing: str = "-") -> str:
    """An interval as ``lo-hi``; ``missing`` when there is none."""
    return f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else missing


def signed_interval(ci: Sequence[float] | None) -> str:
    """An interval of a difference, ``[-0.010, +0.050]`` (a dash inside would read as a sign)."""
    return "-" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def estimate(value: float | None, ci: Sequence[float] | None, missing: str = "undefined") -> str:
    """``value (lo-hi)``, the value alone without an interval, ``missing`` without a value."""
    if value is None:
        return missing
    return number(value) + (f" ({interval(ci)})" if ci else "")


def p_value(value: float | None) -> str:
    """A p-value: three decimals, ``< 0.001`` below that, ``-`` when not tested."""
    if value is None:
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def table(header: Sequence[str], align: str, rows: Iterable[Sequence[Any]]) -> list[str]:
    """Markdown lines of a table: the header, the alignment row (one letter per column: ``l``
    left, ``r`` right) and a line per row (cells as ``str``; a shorter row leaves cells out)."""
    marks = {"l": "---", "r": "--:"}
    return [
        row(header),
        "|" + "".join(marks[a] + "|" for a in align),
        *(row(cells) for cells in rows),
    ]


def row(cells: Sequence[Any]) -> str:
    """One markdown table line."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def calibration_rows(
    ece: dict[str, float | None], temperatures: dict[str, float] | None
) -> list[list[str]]:
    """[finding, ECE, T] per finding (T ``-`` where the finding has no temperature)."""
    temperatures = temperatures or {}
    return [
        [name, number(value), number(temperatures[name]) if name in temperatures else "-"]
        for name, value in ece.items()
    ]


def operating_point_rows(
    names: Sequence[str],
    thresholds: dict[str, float | None],
    rates: dict[str, dict[str, Any] | None],
) -> list[list[str]]:
    """[finding, threshold, sensitivity, specificity, PPV, NPV (each ``value (lo-hi)``), TP, FP,
    TN, FN] per finding: its stored threshold (``thresholds``, as config.json keeps them) and
    its rates where they were measured (``rates_at`` of each finding; ``-`` and no counts where
    not)."""
    out = []
    for name in names:
        threshold, r = thresholds.get(name), rates.get(name) or {}
        cells = [
            f"{number(r[k]['value'])} ({interval(r[k]['ci95'])})" if k in r else "-" for k in RATES
        ]
        counts = [str(r[k]) if k in r else "" for k in COUNTS]
        shown = NO_THRESHOLD if threshold is None else f"{threshold:.4f}"
        out.append([name, shown, *cells, *counts])
    return out


def subgroup_stats(subgroups: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(column, value, stats) for the overall row and each subgroup, in report order."""
    rows = [("overall", "all", subgroups["overall"])]
    for column, by_value in subgroups["groups"].items():
        rows += [(column, value, stats) for value, stats in by_value.items()]
    return rows


def subgroup_rows(subgroups: dict[str, Any], flag: str = "**below**") -> list[list[str]]:
    """[group, value, images, mAUC, 95% CI, overall mAUC over the same findings, flag] per
    subgroup (``subgroup_report``); ``flag`` where its interval lies below the overall value."""
    return [
        [column, value, str(stats["count"]), number(stats["mauc"]),
         interval(stats["mauc_ci95"]), number(stats.get("overall_mauc", stats["mauc"])),
         flag if stats.get("below_overall") else ""]
        for column, value, stats in subgroup_stats(subgroups)
    ]  # fmt: skip
