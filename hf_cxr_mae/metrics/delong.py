"""DeLong's test for two correlated ROC curves (the same images scored by two models).

DeLong, DeLong & Clarke-Pearson (1988) estimate the covariance of AUROCs from the structural
components (placement values) V10 (per positive: the fraction of negatives it outranks) and V01
(per negative: the fraction of positives that outrank it). Sun & Xu (2014) obtain all of them
from midranks, in O(n log n) per model instead of O(m n):

    V10_i = (Z_i - X_i) / n        for the m positives,
    V01_j = 1 - (Z_{m+j} - Y_j) / m  for the n negatives,

where X, Y and Z are the midranks of the positives' scores among the positives, of the
negatives' among the negatives and of each score among all, and ties count one half.
The covariance of the AUROCs is ``S10 / m + S01 / n`` (sample covariances of V10 and V01).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm, rankdata

from ..constants import IGNORE_LABEL
from .bootstrap import check_scores


@dataclass
class DeLongResult:
    """AUROCs of two models on the same images, their difference (a - b) with its interval."""

    auc_a: float
    auc_b: float
    difference: float
    ci: tuple[float, float]
    z: float
    p_value: float
    variance: float
    positives: int
    negatives: int

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ci"] = list(self.ci)
        return out


def _labelled(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if scores.shape[1] != targets.size:
        raise ValueError(
            f"scores must be (models, images) with {targets.size} images; got {scores.shape}."
        )
    check_scores(scores)
    keep = targets != IGNORE_LABEL
    targets, scores = targets[keep], scores[:, keep]
    if bad := sorted(set(np.unique(targets)) - {0.0, 1.0}):
        raise ValueError(f"targets must be 0, 1 or {IGNORE_LABEL:g} (ignored); got {bad[:5]}.")
    return targets, scores


def placement_values(
    targets: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROCs ``(k,)`` and the structural components V10 ``(k, m)`` and V01 ``(k, n)`` from
    midranks (Sun & Xu's fast algorithm); ``scores`` is ``(k, images)``."""
    targets, scores = _labelled(targets, scores)
    positive = targets == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        raise ValueError(
            f"DeLong's test needs both classes: got {m} positive and {n} negative images."
        )
    x, y = scores[:, positive], scores[:, ~positive]
    # Midranks: rankdata's "average" method gives tied scores the mean of their ranks.
    tx, ty = rankdata(x, axis=1), rankdata(y, axis=1)
    tz = rankdata(np.concatenate([x, y], axis=1), axis=1)
    aucs = (tz[:, :m].sum(1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong_covariance(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs ``(k,)`` and their DeLong covariance ``(k, k)`` for ``k`` models scoring the same
    images: ``scores`` is ``(k, n)``; targets equal to -1 are left out. Needs at least two
    positive and two negative images (ValueError otherwise)."""
    aucs, v10, v01 = placement_values(targets, scores)
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        # One positive (or negative) has no sample variance: taking its term as 0 would
        # understate the variance and call a single image's ranking significant.
        raise ValueError(
            f"DeLong's variance needs at least 2 positive and 2 negative images; got {m} and {n}."
        )
    return aucs, np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


def delong_test(
    targets: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, level: float = 0.95
) -> DeLongResult:
    """DeLong's test of AUROC(a) = AUROC(b) on the same images: the difference a - b, its
    normal ``level`` interval and the two-sided p-value. Identical scores give z 0, p 1."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    scores_a = np.asarray(scores_a, dtype=np.float64).reshape(-1)
    scores_b = np.asarray(scores_b, dtype=np.float64).reshape(-1)
    if scores_a.shape != scores_b.shape:
        raise ValueError(
            "The two models scored different numbers of images: "
            f"{scores_a.size} and {scores_b.size}."
        )
    aucs, cov = delong_covariance(targets, np.stack([scores_a, scores_b]))
    difference = float(aucs[0] - aucs[1])
    # Rounding can leave a tiny negative variance for (near) identical models.
    variance = max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0)
    sd = variance**0.5
    if sd > 0:
        z = difference / sd
        p_value = float(2 * norm.sf(abs(z)))
    else:  # no variance of the difference: equal models agree, others differ for certain
        z = 0.0 if difference == 0 else float(np.sign(difference) * np.inf)
        p_value = 1.0 if difference == 0 else 0.0
    half = float(norm.ppf((1 + level) / 2)) * sd
    targets = np.asarray(targets).reshape(-1)
    return DeLongResult(
        auc_a=float(aucs[0]),
        auc_b=float(aucs[1]),
        difference=difference,
        ci=(difference - half, difference + half),
        z=float(z),
        p_value=p_value,
        variance=variance,
        positives=int((targets == 1).sum()),
        negatives=int((targets == 0).sum()),
    )
