"""Operating points: a per-finding threshold (an image is flagged when its probability is
``>= threshold``), and sensitivity / specificity / PPV / NPV at a threshold with 95% intervals.

Thresholds are meant to be chosen on the validation split and then only applied to test.
Intervals are percentile bootstrap intervals (images resampled with replacement), the same
method as the AUROC intervals of the reports.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from ..constants import IGNORE_LABEL
from .bootstrap import check_scores, percentile_interval, resample_indices

METHODS = ("youden", "sensitivity", "specificity")
DEFAULT_TARGET = 0.9


def _labelled(targets, probabilities) -> tuple[np.ndarray, np.ndarray]:
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if targets.shape != probabilities.shape:
        raise ValueError(f"{targets.size} targets but {probabilities.size} probabilities.")
    check_scores(probabilities)
    keep = targets != IGNORE_LABEL
    targets, probabilities = targets[keep], probabilities[keep]
    if bad := sorted(set(np.unique(targets)) - {0.0, 1.0}):
        raise ValueError(f"targets must be 0, 1 or {IGNORE_LABEL:g} (ignored); got {bad[:5]}.")
    return targets, probabilities


def choose_threshold(
    targets: np.ndarray,
    probabilities: np.ndarray,
    method: str = "youden",
    target: float | None = None,
) -> float:
    """The threshold of one finding on these images (flagged: probability >= threshold).

    - ``youden``: maximises sensitivity + specificity - 1 (the highest such threshold on ties);
    - ``sensitivity``: the highest threshold whose sensitivity here is at least ``target``
      (default 0.9), i.e. the most specific one reaching it;
    - ``specificity``: the lowest threshold whose specificity here is at least ``target``,
      i.e. the most sensitive one reaching it.

    Raises ValueError when the finding lacks one class on these images (nothing to choose
    from): callers looping over findings should catch it and leave that finding unflagged."""
    if method not in METHODS:
        raise ValueError(f"Unknown operating-point method {method!r}; choose from {METHODS}.")
    if method == "youden" and target is not None:
        raise ValueError("Youden's J takes no target; give method 'sensitivity' or 'specificity'.")
    if method != "youden":
        target = DEFAULT_TARGET if target is None else float(target)
        if not 0 < target <= 1:
            raise ValueError(f"The target {method} must be in (0, 1], got {target}.")
    y, p = _labelled(targets, probabilities)
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"Choosing a threshold needs both classes; got {positives} positive and "
            f"{negatives} negative images."
        )
    # Every distinct score is a candidate (drop_intermediate=False); sklearn's first entry is
    # +inf (nothing flagged), which is no usable threshold except for specificity 1.
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    if method == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    if method == "sensitivity":
        # tpr rises as the threshold falls; the last candidate flags everything (tpr 1).
        return float(thresholds[int(np.argmax(tpr >= target - 1e-12))])
    reaching = np.flatnonzero(1 - fpr >= target - 1e-12)
    if reaching.size == 0:  # only flagging nothing is that specific: just above every score
        return float(np.nextafter(p.max(), np.inf))
    return float(thresholds[reaching[-1]])


def _rates(tp, fp, tn, fn) -> dict[str, Any]:
    """sensitivity, specificity, ppv, npv (NaN where the denominator is 0), array-wise."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }


def rates_at(
    targets: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Sensitivity, specificity, PPV and NPV of one finding at ``threshold`` with percentile
    bootstrap intervals: ``{"sensitivity": {"value", "ci95"}, ..., "tp", "fp", "tn", "fn"}``.
    A rate without a denominator (e.g. PPV when nothing is flagged) is None; its interval is
    None when no resample defines it (or ``n_resamples`` is 0)."""
    y, p = _labelled(targets, probabilities)
    flagged = p >= threshold
    counts = {
        "tp": int((flagged & (y == 1)).sum()),
        "fp": int((flagged & (y == 0)).sum()),
        "tn": int((~flagged & (y == 0)).sum()),
        "fn": int((~flagged & (y == 1)).sum()),
    }
    values = _rates(*(np.float64(counts[c]) for c in ("tp", "fp", "tn", "fn")))
    samples: dict[str, list[np.ndarray]] = {name: [] for name in values}
    if y.size and n_resamples > 0:
        for idx in resample_indices(y.size, n_resamples, seed):
            yy, ff = y[idx] == 1, flagged[idx]
            resampled = _rates(
                (ff & yy).sum(1), (ff & ~yy).sum(1), (~ff & ~yy).sum(1), (~ff & yy).sum(1)
            )
            for name, v in resampled.items():
                samples[name].append(v)
    out: dict[str, Any] = {}
    for name, value in values.items():
        defined = not np.isnan(value)
        interval = (
            percentile_interval(np.concatenate(samples[name]), level)
            if defined and samples[name]
            else None
        )
        out[name] = {"value": float(value) if defined else None, "ci95": interval}
    out.update(counts)
    out["threshold"] = float(threshold)
    out["interval_method"] = f"percentile bootstrap, {n_resamples} resamples of the images"
    return out
