"""Subgroup analysis: AUROC per finding and mean AUROC for each value of each metadata column
(sex, age band, view, user columns), with bootstrap 95% intervals and counts, groups whose
interval lies entirely below the overall value flagged, and true / false positive rates per
group at the operating points (the gaps an equal-opportunity audit looks at).

A finding with one class only in a group has no AUROC there: it is None, listed under
``undefined`` and left out of that group's mean.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..constants import IGNORE_LABEL
from .bootstrap import auroc_from_ranks, bootstrap_aurocs, check_scores, percentile_interval

UNKNOWN = "unknown"
AGE_BANDS = ("<40", "40-59", "60-79", ">=80")


def age_bands(ages: Sequence[float | None]) -> np.ndarray:
    """Age in years -> "<40", "40-59", "60-79", ">=80"; missing (None / NaN) -> "unknown"."""
    out = []
    for age in ages:
        if age is None or (isinstance(age, float) and math.isnan(age)):
            out.append(UNKNOWN)
            continue
        age = float(age)
        if math.isnan(age):
            out.append(UNKNOWN)
        elif age < 40:
            out.append("<40")
        elif age < 60:
            out.append("40-59")
        elif age < 80:
            out.append("60-79")
        else:
            out.append(">=80")
    return np.asarray(out, dtype=object)


def _group_values(column: str, values: Sequence[Any], n: int) -> np.ndarray:
    if len(values) != n:
        raise ValueError(f"Subgroup column {column!r} has {len(values)} values for {n} images.")
    return np.asarray(
        [
            UNKNOWN
            if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == ""
            else str(v)
            for v in values
        ],
        dtype=object,
    )


def _value_order(values: np.ndarray) -> list[str]:
    """Age bands in age order, other values sorted, ``unknown`` last."""
    present = set(values.tolist())
    known = [b for b in AGE_BANDS if b in present]
    rest = sorted(present - set(known) - {UNKNOWN})
    return known + rest + ([UNKNOWN] if UNKNOWN in present else [])


def _mean_or_none(values: Sequence[float]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _rates_at(
    targets: np.ndarray, scores: np.ndarray, names: Sequence[str], thresholds: Mapping[str, float]
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    tpr, fpr = {}, {}
    for j, name in enumerate(names):
        if thresholds.get(name) is None:
            continue
        flagged = scores[:, j] >= thresholds[name]
        positive, negative = targets[:, j] == 1, targets[:, j] == 0
        tpr[name] = float(flagged[positive].mean()) if positive.any() else None
        fpr[name] = float(flagged[negative].mean()) if negative.any() else None
    return tpr, fpr


def _group_stats(
    scores: np.ndarray,
    targets: np.ndarray,
    names: Sequence[str],
    thresholds: Mapping[str, float] | None,
    n_resamples: int,
    seed: int,
    level: float,
) -> dict[str, Any]:
    """Counts, per-finding AUROC with intervals, mAUC with its interval for these rows."""
    auroc = auroc_from_ranks(targets.T, scores.T)  # (k,)
    defined = ~np.isnan(auroc)
    stats: dict[str, Any] = {
        "count": len(targets),
        "positives": {n: int((targets[:, j] == 1).sum()) for j, n in enumerate(names)},
        "auroc": {n: (float(auroc[j]) if defined[j] else None) for j, n in enumerate(names)},
        "undefined": [n for j, n in enumerate(names) if not defined[j]],
    }
    stats["mauc"] = float(auroc[defined].mean()) if defined.any() else None
    # Bootstrap: rows of this group resampled with replacement. The mean of a resample is taken
    # over the findings defined in the group (those undefined in that resample left out).
    per_finding = bootstrap_aurocs(targets, scores, n_resamples, seed)
    stats["auroc_ci95"] = {
        n: (percentile_interval(per_finding[:, j], level) if defined[j] else None)
        for j, n in enumerate(names)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resample: no mean, left out
        means = np.nanmean(per_finding[:, defined], axis=1) if defined.any() else np.array([])
    stats["mauc_ci95"] = percentile_interval(means, level)
    if thresholds:
        stats["tpr"], stats["fpr"] = _rates_at(targets, scores, names, thresholds)
    return stats


def subgroup_report(
    scores: np.ndarray,
    targets: np.ndarray,
    names: Sequence[str],
    groups: Mapping[str, Sequence[Any]],
    thresholds: Mapping[str, float] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """The subgroup report of multi-label scores ``(n, k)`` against targets ``(n, k)`` (-1:
    ignored), for each column of ``groups`` (one value per image; None / NaN / "" ->
    "unknown"; pass ages through ``age_bands`` first).

    Returns ``{"overall": stats, "groups": {column: {value: stats}}, "gaps": ..., ...}`` where
    stats holds count, positives, auroc (per finding, None when undefined), auroc_ci95,
    undefined, mauc, mauc_ci95 and, with ``thresholds``, tpr / fpr per finding. Each group also
    has ``overall_mauc`` (the overall mean over the same findings as the group's mean, the fair
    reference) and ``below_overall`` (its mAUC interval lies entirely below that value).
    ``gaps[column][finding]`` gives the largest TPR and FPR differences between the column's
    known values (equal-opportunity and equalised-odds gaps), with thresholds only."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if scores.shape != targets.shape or scores.ndim != 2 or scores.shape[1] != len(names):
        raise ValueError(
            f"scores {scores.shape} and targets {targets.shape} must both be (images, "
            f"{len(names)} findings)."
        )
    check_scores(scores)
    if bad := sorted(set(np.unique(targets)) - {0.0, 1.0, IGNORE_LABEL}):
        raise ValueError(f"targets must be 0, 1 or {IGNORE_LABEL:g} (ignored); got {bad[:5]}.")
    n = len(scores)
    overall = _group_stats(scores, targets, names, thresholds, n_resamples, seed, level)
    report: dict[str, Any] = {
        "overall": overall,
        "groups": {},
        "gaps": {},
        "resamples": n_resamples,
        "level": level,
        "interval_method": "percentile bootstrap of the group's images",
    }
    for column, raw in groups.items():
        values = _group_values(column, raw, n)
        report["groups"][column] = {}
        for value in _value_order(values):
            rows = values == value
            stats = _group_stats(
                scores[rows], targets[rows], names, thresholds, n_resamples, seed, level
            )
            same = [overall["auroc"][f] for f in names if stats["auroc"][f] is not None]
            stats["overall_mauc"] = _mean_or_none(same)
            stats["below_overall"] = bool(
                stats["mauc_ci95"] is not None
                and stats["overall_mauc"] is not None
                and stats["mauc_ci95"][1] < stats["overall_mauc"]
            )
            report["groups"][column][value] = stats
        if thresholds:
            report["gaps"][column] = _gaps(report["groups"][column], names)
    return report


def _gaps(by_value: Mapping[str, dict], names: Sequence[str]) -> dict[str, dict]:
    out = {}
    for name in names:
        entry = {}
        for rate in ("tpr", "fpr"):
            known = {
                v: s[rate].get(name)
                for v, s in by_value.items()
                if v != UNKNOWN and s.get(rate, {}).get(name) is not None
            }
            if len(known) >= 2:
                low, high = min(known, key=known.get), max(known, key=known.get)
                entry[f"{rate}_gap"] = known[high] - known[low]
                entry[f"{rate}_lowest"], entry[f"{rate}_highest"] = low, high
            else:
                entry[f"{rate}_gap"] = None
        out[name] = entry
    return out
