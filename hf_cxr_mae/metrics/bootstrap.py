"""Fast AUROC from midranks, and AUROCs of many bootstrap resamples at once.

The bootstrap intervals of the subgroup report, the operating points and the paired model
comparison all resample images with replacement; computing each resample's AUROC from ranks
(``scipy.stats.rankdata`` on a whole block of resamples) keeps 1000 resamples of a test set
fast enough to run at the end of every evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.stats import rankdata

from ..constants import IGNORE_LABEL

# Resamples ranked at once: a (block, n) float64 matrix, 100 x 25k images = 20 MB.
_BLOCK = 100


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """The percentile interval of the finite values, or None when there are none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def resample_indices(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of bootstrap index rows (each row: ``n`` draws with replacement from ``range(n)``).

    The draws depend only on ``(n, n_resamples, seed)``, so two models scored on the same images
    with the same seed see the same resamples (a paired bootstrap)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, _BLOCK):
        yield rng.integers(0, n, size=(min(_BLOCK, n_resamples - start), n))


def auroc_from_ranks(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC along the last axis (Mann-Whitney from midranks); targets equal to
    ``IGNORE_LABEL`` are left out; NaN where one class is absent.

    ``targets`` and ``scores`` have the same shape ``(..., n)``; ties count one half."""
    targets = np.asarray(targets, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    ignored = targets == IGNORE_LABEL
    # Ignored entries are moved above every real score: then the ranks of the others are their
    # ranks among the kept entries alone, and one rankdata call serves every row.
    ranks = rankdata(np.where(ignored, np.inf, scores), axis=-1)
    positive = targets == 1
    m = positive.sum(-1)
    n = (~ignored & ~positive).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * positive).sum(-1) - m * (m + 1) / 2) / (m * n)
    return np.where((m > 0) & (n > 0), auc, np.nan)


def bootstrap_aurocs(
    targets: np.ndarray, scores: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> np.ndarray:
    """Per-finding AUROC of each bootstrap resample of the images: ``(n_resamples, k)``, NaN
    where a resample has one class of that finding. ``targets`` / ``scores``: ``(n, k)``;
    the resamples are ``resample_indices(n, n_resamples, seed)``, the same for every column.

    Each finding is sorted once; a resample is then its multiplicities (how often each image
    was drawn) and its AUROC a weighted Mann-Whitney count, O(n) instead of a sort per resample.
    """
    targets = np.asarray(targets, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    check_scores(scores)
    n, k = targets.shape
    out = np.full((n_resamples, k), np.nan)
    if n == 0:
        return out
    columns = [_sorted_column(targets[:, j], scores[:, j]) for j in range(k)]
    row = 0
    for idx in resample_indices(n, n_resamples, seed):
        b = len(idx)
        # Multiplicity of each image in each resample (one bincount for the whole block).
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n)
        counts = counts.reshape(b, n).astype(np.float64)
        for j, column in enumerate(columns):
            if column is not None:
                out[row : row + b, j] = _weighted_auroc(counts, *column)
        row += b
    return out


def _sorted_column(
    targets: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """One finding prepared for ``_weighted_auroc``: its labelled images by ascending score
    (positives first among tied scores), which of them are positive, and the members and run
    starts of the tied runs that hold both classes; None when a class is absent altogether."""
    keep = np.flatnonzero(targets != IGNORE_LABEL)
    y = targets[keep]
    if not ((y == 1).any() and (y == 0).any()):
        return None
    order = keep[np.lexsort((y != 1, scores[keep]))]
    positive = targets[order] == 1
    ranked = scores[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ranked)) + 1])
    ends = np.append(starts[1:], len(ranked))
    has_pos = np.add.reduceat(positive.astype(int), starts) > 0
    has_neg = np.add.reduceat((~positive).astype(int), starts) > 0
    mixed = np.flatnonzero(has_pos & has_neg)
    members = [np.arange(starts[g], ends[g]) for g in mixed]
    lengths = [len(m) for m in members]
    tied = np.concatenate(members) if members else np.zeros(0, dtype=int)
    tied_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    return order, positive, tied, tied_starts


def _weighted_auroc(
    counts: np.ndarray,
    order: np.ndarray,
    positive: np.ndarray,
    tied: np.ndarray,
    tied_starts: np.ndarray,
) -> np.ndarray:
    """AUROC per row of ``counts`` (image multiplicities): P(positive > negative) + P(tie) / 2.

    With positives first among tied scores, the negatives before a positive are those strictly
    below it; the runs of tied scores holding both classes then add half their pairs."""
    weights = counts[:, order]
    pos = weights * positive
    neg = weights - pos
    below = np.cumsum(neg, axis=1) - neg
    wins = (pos * below).sum(1)
    if tied.size:
        tied_pos = np.add.reduceat(pos[:, tied], tied_starts, axis=1)
        tied_neg = np.add.reduceat(neg[:, tied], tied_starts, axis=1)
        wins += 0.5 * (tied_pos * tied_neg).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return wins / (pos.sum(1) * neg.sum(1))


def check_scores(scores: np.ndarray) -> None:
    """Refuse NaN / infinite scores, naming the first one (they make ranks meaningless)."""
    bad = ~np.isfinite(scores)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"Scores must be finite numbers; got {scores[where]} at index {where}.")
