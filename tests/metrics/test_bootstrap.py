"""Bootstrap AUROCs (``hf_cxr_mae.metrics.bootstrap``) against sklearn: AUROC from ranks with
ignored targets, and every resample's weighted AUROC.

The bootstrap engine (``metrics.bootstrap``) pinned exactly: its resamples are NumPy's
``default_rng(seed).integers(0, n, size=(resamples, n))`` (so every interval of the package can
be reproduced by drawing the same rows), its percentile interval is NumPy's linear percentile
at (1 -/+ level) / 2 of the finite values, and each resample's AUROC is the Mann-Whitney
count on the resampled rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hf_cxr_mae.metrics.bootstrap import (
    auroc_from_ranks,
    bootstrap_aurocs,
    percentile_interval,
    resample_indices,
)


def test_auroc_from_ranks_matches_sklearn_with_ignored_targets():
    rng = np.random.default_rng(0)
    y = rng.integers(-1, 2, size=(4, 50)).astype(float)
    s = np.round(rng.random((4, 50)) * 5) / 5  # ties
    got = auroc_from_ranks(y, s)
    for r in range(4):
        keep = y[r] != -1
        assert got[r] == pytest.approx(roc_auc_score(y[r, keep], s[r, keep]), abs=1e-12)
    assert np.isnan(auroc_from_ranks(np.ones(5), rng.random(5)))


def test_bootstrap_aurocs_equal_sklearn_on_each_resample():
    """The weighted (multiplicity) AUROC of each resample equals sklearn's on the resampled
    rows themselves, with ties across classes and ignored targets; a finding without
    positives is NaN everywhere."""
    rng = np.random.default_rng(1)
    n = 120
    y = rng.integers(-1, 2, size=(n, 3)).astype(float)
    y[:, 2] = np.where(y[:, 2] == 1, 0, y[:, 2])
    s = np.round(rng.random((n, 3)) * 6) / 6
    got = bootstrap_aurocs(y, s, n_resamples=150, seed=3)  # two blocks of resamples
    rows = np.concatenate(list(resample_indices(n, 150, 3)))
    assert got.shape == (150, 3) and rows.shape == (150, n)
    for r, idx in enumerate(rows):
        for j in range(2):
            yy, ss = y[idx, j], s[idx, j]
            keep = yy != -1
            assert got[r, j] == pytest.approx(roc_auc_score(yy[keep], ss[keep]), abs=1e-12)
    assert np.isnan(got[:, 2]).all()
    with pytest.raises(ValueError, match="finite"):
        bootstrap_aurocs(np.ones((3, 1)), np.array([[0.1], [np.nan], [0.2]]), 10)


def mann_whitney(y, s):
    """AUROC from the definition: P(positive > negative) + P(tie) / 2, -1 targets left out."""
    keep = y != -1
    y, s = y[keep], s[keep]
    pos, neg = s[y == 1], s[y == 0]
    if not (len(pos) and len(neg)):
        return np.nan
    return sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))


@pytest.mark.parametrize("n, resamples, seed", [(7, 1, 0), (13, 100, 1), (31, 250, 2)])
def test_resamples_are_one_default_rng_draw(n, resamples, seed):
    """The resample rows (over every block) are one ``default_rng(seed).integers`` draw of
    shape (resamples, n): the documented contract the paired intervals rely on."""
    rows = np.concatenate(list(resample_indices(n, resamples, seed)))
    expected = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    np.testing.assert_array_equal(rows, expected)


def test_percentile_interval_is_numpys_linear_percentile_of_the_finite_values():
    """[2.5th, 97.5th] percentiles (linear interpolation) at 95%, [5th, 95th] at 90%; NaN and
    infinite draws (undefined resamples) are left out; nothing finite gives None."""
    values = np.arange(101, dtype=float)
    np.testing.assert_allclose(percentile_interval(values), [2.5, 97.5], rtol=1e-12)
    np.testing.assert_allclose(percentile_interval(values, 0.9), [5.0, 95.0], rtol=1e-12)
    np.testing.assert_allclose(percentile_interval(values, 0.5), [25.0, 75.0], rtol=1e-12)
    rng = np.random.default_rng(0)
    draws = rng.normal(size=37)
    with_gaps = np.concatenate([draws, [np.nan, np.inf, -np.inf]])
    np.testing.assert_allclose(
        percentile_interval(with_gaps), np.percentile(draws, [2.5, 97.5]), rtol=1e-12
    )
    assert percentile_interval(np.array([np.nan, np.nan])) is None
    assert percentile_interval(np.array([])) is None


def test_each_resample_auroc_is_the_mann_whitney_count_of_its_rows():
    """Ties within and across classes, ignored targets, a finding whose resamples sometimes
    lose a class: every resample's AUROC equals the definition on exactly the drawn rows (NaN
    where a class is missing), all columns drawn with the same rows."""
    y = np.array(
        [[1, 0], [0, 1], [0, -1], [1, 0], [-1, 0], [0, 0], [1, 0], [0, 0], [0, 0], [0, 0]],
        dtype=float,
    )
    s = np.array(
        [[0.5, 0.2], [0.5, 0.9], [0.1, 0.4], [0.8, 0.2], [0.9, 0.3], [0.2, 0.2], [0.5, 0.6],
         [0.3, 0.1], [0.5, 0.9], [0.2, 0.2]]
    )  # fmt: skip
    got = bootstrap_aurocs(y, s, n_resamples=120, seed=4)
    rows = np.random.default_rng(4).integers(0, 10, size=(120, 10))
    expected = np.array([[mann_whitney(y[r, j], s[r, j]) for j in range(2)] for r in rows])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)
    assert np.isnan(expected[:, 1]).any()  # the single positive of column 1 is sometimes missed
    np.testing.assert_allclose(
        auroc_from_ranks(y.T, s.T), [mann_whitney(y[:, j], s[:, j]) for j in range(2)], rtol=1e-12
    )
