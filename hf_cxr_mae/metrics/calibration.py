"""Calibration of predicted probabilities: expected calibration error (ECE), the reliability
curve, and temperature scaling fitted per finding.

Bins are equal-width on [0, 1] (bin ``b`` holds ``b / n_bins <= p < (b + 1) / n_bins``, the last
one includes 1). Targets equal to -1 (``IGNORE_LABEL``) are left out everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from ..constants import IGNORE_LABEL

logger = logging.getLogger("hf_cxr_mae")

# Temperatures searched (log-uniformly bounded): beyond these the fit has no data to stand on.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def _labelled(targets, values) -> tuple[np.ndarray, np.ndarray]:
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if targets.shape != values.shape:
        raise ValueError(f"{targets.size} targets but {values.size} predictions.")
    keep = targets != IGNORE_LABEL
    return targets[keep], values[keep]


def _check_probabilities(probabilities: np.ndarray) -> None:
    bad = ~((probabilities >= 0) & (probabilities <= 1))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"Probabilities must lie in [0, 1]; got {probabilities[i]} at row {i}.")


def reliability_curve(
    targets: np.ndarray, probabilities: np.ndarray, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: mean predicted probability, fraction of positives, image count
    (``n_bins`` each; NaN for an empty bin)."""
    y, p = _labelled(targets, probabilities)
    _check_probabilities(p)
    # Against the edges b / n_bins themselves: ``int(p * n_bins)`` rounds the product, which put
    # 15/22 in bin 14 and the float just below 0.3 in bin 3 (of 10).
    bins = np.searchsorted(np.arange(1, n_bins) / n_bins, p, side="right")
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(bins, weights=p, minlength=n_bins) / counts
        fraction_positive = np.bincount(bins, weights=y, minlength=n_bins) / counts
    return mean_predicted, fraction_positive, counts


def expected_calibration_error(
    targets: np.ndarray, probabilities: np.ndarray, n_bins: int = 15
) -> float:
    """ECE: the count-weighted mean over bins of |fraction positive - mean predicted|
    (NaN without labelled images)."""
    mean_predicted, fraction_positive, counts = reliability_curve(targets, probabilities, n_bins)
    if counts.sum() == 0:
        return float("nan")
    filled = counts > 0
    gaps = np.abs(fraction_positive[filled] - mean_predicted[filled])
    return float((counts[filled] * gaps).sum() / counts.sum())


def binary_cross_entropy_with_logits(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean BCE of sigmoid(logits), computed stably: log(1 + e^z) - y z."""
    return float(np.mean(np.logaddexp(0.0, logits) - targets * logits))


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature T > 0 minimising the BCE of sigmoid(logits / T) on these images (one
    finding). The search runs on log T in [0.05, 20] (scipy's bounded ``minimize_scalar``).

    Without both classes there is nothing to fit: T = 1 (no change), with a warning."""
    y, z = _labelled(targets, logits)
    if not np.isfinite(z).all():
        i = int(np.argmax(~np.isfinite(z)))
        raise ValueError(f"Logits must be finite; got {z[i]} at labelled row {i}.")
    if y.size == 0 or y.min() == y.max():
        logger.warning(
            "Temperature scaling needs both classes; got %d labelled images, %d positive: T = 1.",
            y.size,
            int(y.sum()),
        )
        return 1.0
    result = minimize_scalar(
        lambda log_t: binary_cross_entropy_with_logits(z / np.exp(log_t), y),
        bounds=(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def calibration_summary(
    targets: np.ndarray, probabilities: np.ndarray, names: Sequence[str], n_bins: int = 15
) -> dict[str, dict]:
    """Per finding: ECE and the reliability curve (bins as lists, None for empty ones);
    ``targets`` / ``probabilities`` are ``(n, k)``."""
    targets = np.asarray(targets, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    out = {}
    for j, name in enumerate(names):
        mean_predicted, fraction_positive, counts = reliability_curve(
            targets[:, j], probabilities[:, j], n_bins
        )
        ece = expected_calibration_error(targets[:, j], probabilities[:, j], n_bins)
        out[name] = {
            "ece": None if np.isnan(ece) else ece,
            "n_bins": n_bins,
            "mean_predicted": [None if np.isnan(v) else float(v) for v in mean_predicted],
            "fraction_positive": [None if np.isnan(v) else float(v) for v in fraction_positive],
            "counts": [int(c) for c in counts],
        }
    return out
