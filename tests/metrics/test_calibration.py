"""Calibration (``hf_cxr_mae.metrics.calibration``) against reference computations: ECE of
calibrated and overconfident predictors, the fitted temperature minimising BCE, and the
reliability curve against sklearn.

Calibration (``metrics.calibration``, ``training.postprocess``) pinned exactly: the documented
equal-width bins (bin b holds b / n <= p < (b + 1) / n, the last one holding 1) on values lying
exactly on the edges, the reliability curve and ECE (Guo et al. 2017: the count-weighted mean
gap between accuracy and confidence per bin) by a slow loop, and the temperatures (minimisers
of the NLL of sigmoid / softmax(z / T)) by solving the NLL's derivative with brentq here."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import sigmoid
from scipy.optimize import brentq
from scipy.special import expit, softmax
from sklearn.calibration import calibration_curve

from hf_cxr_mae.metrics.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from hf_cxr_mae.training.postprocess import fit_softmax_temperature


def test_ece_of_calibrated_and_overconfident_predictors_and_temperature_fix():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=40000)
    y = (rng.random(logits.size) < sigmoid(logits)).astype(float)
    calibrated = expected_calibration_error(y, sigmoid(logits))
    overconfident_logits = 3 * logits
    overconfident = expected_calibration_error(y, sigmoid(overconfident_logits))
    assert calibrated < 0.01
    assert overconfident > 0.1
    # Fitted on one half (validation), checked on the other.
    fit, check = slice(0, 20000), slice(20000, None)
    t = fit_temperature(overconfident_logits[fit], y[fit])
    assert t == pytest.approx(3.0, rel=0.05)
    before = expected_calibration_error(y[check], sigmoid(overconfident_logits[check]))
    after = expected_calibration_error(y[check], sigmoid(overconfident_logits[check] / t))
    assert after < 0.02 < before


def test_fitted_temperature_minimises_bce():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, 500)
    y = (rng.random(500) < sigmoid(z / 2.2)).astype(float)
    y[::10] = -1  # ignored: must not enter the fit
    keep = y != -1

    def bce(t):
        p = np.clip(sigmoid(z[keep] / t), 1e-15, 1 - 1e-15)
        return -np.mean(y[keep] * np.log(p) + (1 - y[keep]) * np.log(1 - p))

    t = fit_temperature(z, y)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 20001))
    best = grid[np.argmin([bce(g) for g in grid])]
    assert t == pytest.approx(best, rel=2e-3)
    assert fit_temperature(z[:5], np.ones(5)) == 1.0  # one class: nothing to fit


def test_reliability_curve_matches_sklearn_and_ignores_uncertain():
    rng = np.random.default_rng(2)
    p = rng.random(2000)
    y = (rng.random(2000) < p**2).astype(float)
    y_ignored = y.copy()
    y_ignored[:100] = -1
    mean_pred, frac_pos, counts = reliability_curve(y_ignored, p, n_bins=10)
    assert counts.sum() == 1900
    ref_frac, ref_pred = calibration_curve(y[100:], p[100:], n_bins=10, strategy="uniform")
    np.testing.assert_allclose(mean_pred[counts > 0], ref_pred, atol=1e-12)
    np.testing.assert_allclose(frac_pos[counts > 0], ref_frac, atol=1e-12)
    ece = np.sum(counts * np.abs(frac_pos - mean_pred)) / counts.sum()
    assert expected_calibration_error(y_ignored, p, n_bins=10) == pytest.approx(ece, abs=1e-12)
    summary = calibration_summary(
        np.stack([y_ignored] * 2, 1), np.stack([p] * 2, 1), ["a", "b"], 10
    )
    assert summary["a"]["ece"] == pytest.approx(ece) and summary["b"]["counts"] == counts.tolist()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([0, 1], [0.2, 1.5])


def bin_of(p: float, n_bins: int) -> int:
    """The documented bin: the largest b with b / n_bins <= p (1.0 in the last bin)."""
    return max(b for b in range(n_bins) if b / n_bins <= p)


def reliability_reference(y, p, n_bins):
    """Per bin: mean probability, fraction positive, count (NaN when empty), -1 left out."""
    members = [[] for _ in range(n_bins)]
    for yi, pi in zip(y, p, strict=True):
        if yi != -1:
            members[bin_of(pi, n_bins)].append((yi, pi))
    mean = [np.mean([q for _, q in m]) if m else np.nan for m in members]
    frac = [np.mean([t for t, _ in m]) if m else np.nan for m in members]
    return np.array(mean), np.array(frac), np.array([len(m) for m in members])


def ece_reference(y, p, n_bins):
    mean, frac, counts = reliability_reference(y, p, n_bins)
    total = counts.sum()
    return sum(c / total * abs(f - m) for m, f, c in zip(mean, frac, counts, strict=True) if c)


@pytest.mark.parametrize("n_bins", [4, 10, 15, 22, 39])
def test_values_on_the_bin_edges_fall_in_the_bin_above(n_bins):
    """Every edge k / n_bins (as the float a user writes) opens bin k, 0 is in the first bin and
    1 in the last; a value just below an edge stays in the bin below. The counts, mean
    probabilities and fractions positive equal the definition's."""
    edges = np.array([k / n_bins for k in range(n_bins + 1)])
    below = np.nextafter(edges[1:], 0)
    p = np.concatenate([edges, below])
    y = (np.arange(p.size) % 3 == 0).astype(float)
    mean, frac, counts = reliability_curve(y, p, n_bins)
    ref_mean, ref_frac, ref_counts = reliability_reference(y, p, n_bins)
    np.testing.assert_array_equal(counts, ref_counts)
    # Each bin holds its own lower edge and the value just below its upper edge; the last one
    # also holds 1.
    np.testing.assert_array_equal(counts, [2] * (n_bins - 1) + [3])
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-12)
    np.testing.assert_allclose(frac, ref_frac, rtol=1e-12)
    assert expected_calibration_error(y, p, n_bins) == pytest.approx(
        ece_reference(y, p, n_bins), rel=1e-12, abs=1e-15
    )


def test_reliability_and_ece_on_a_hand_example():
    """Eight probabilities in 4 bins (two on edges, one ignored image): each bin's numbers and the
    ECE worked out by hand."""
    p = np.array([0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 0.9, 1.0, 0.6])
    y = np.array([0, 1, 0, 1, 1, 1, 0, 1, -1])
    mean, frac, counts = reliability_curve(y, p, 4)
    # bins: [0, .25): 0, .1 | [.25, .5): .25, .3 | [.5, .75): .5 | [.75, 1]: .75, .9, 1
    np.testing.assert_array_equal(counts, [2, 2, 1, 3])
    np.testing.assert_allclose(mean, [0.05, 0.275, 0.5, 2.65 / 3], rtol=1e-15)
    np.testing.assert_allclose(frac, [0.5, 0.5, 1.0, 2 / 3], rtol=1e-15)
    ece = (2 * 0.45 + 2 * 0.225 + 1 * 0.5 + 3 * abs(2 / 3 - 2.65 / 3)) / 8
    assert expected_calibration_error(y, p, 4) == pytest.approx(ece, rel=1e-14)


@pytest.mark.parametrize("seed", [0, 1])
def test_ece_and_summary_equal_the_slow_loop(seed):
    """Random probabilities with ignored images at the package's 15 bins: ECE, and the summary's
    lists (None for empty bins), equal the slow loop; an empty input has no ECE."""
    rng = np.random.default_rng(seed)
    p = np.round(rng.random((200, 2)) ** 2, 2)  # rounded: many values on the edges
    y = (rng.random((200, 2)) < p).astype(float)
    y[rng.random((200, 2)) < 0.1] = -1
    summary = calibration_summary(y, p, ["a", "b"], 15)
    for j, name in enumerate(["a", "b"]):
        mean, frac, counts = reliability_reference(y[:, j], p[:, j], 15)
        got = summary[name]
        assert got["ece"] == pytest.approx(ece_reference(y[:, j], p[:, j], 15), rel=1e-12)
        assert got["counts"] == counts.tolist() and got["n_bins"] == 15
        for field, ref in (("mean_predicted", mean), ("fraction_positive", frac)):
            values = got[field]
            assert [v is None for v in values] == np.isnan(ref).tolist()
            np.testing.assert_allclose(
                [np.nan if v is None else v for v in values], ref, rtol=1e-12
            )
    assert np.isnan(expected_calibration_error([-1, -1], [0.2, 0.4]))


@pytest.mark.parametrize("bad", [-1e-12, 1 + 1e-12, np.nan])
def test_probabilities_just_outside_the_unit_interval_are_refused(bad):
    """0 and 1 are probabilities; anything beyond them, however close, and NaN are refused
    naming the value."""
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        expected_calibration_error([0, 1, 1], [0.5, bad, 0.5])


def bce_temperature(z, y):
    """The T > 0 minimising the mean BCE of sigmoid(z / T): the root in beta = 1 / T of the
    derivative mean((sigmoid(beta z) - y) z)."""
    beta = brentq(lambda b: np.mean((expit(b * z) - y) * z), 1e-6, 1e3, xtol=1e-15, rtol=1e-15)
    return 1 / beta


@pytest.mark.parametrize("true_t", [0.4, 1.0, 2.5])
def test_fitted_temperature_is_the_nll_minimiser(true_t):
    """The fitted temperature equals the exact minimiser (to the 1e-6 on log T the search is
    run at), and images with target -1 do not enter the fit."""
    rng = np.random.default_rng(int(true_t * 10))
    z = rng.normal(0, 3, 400)
    y = (rng.random(400) < expit(z / true_t)).astype(float)
    expected = bce_temperature(z, y)
    ignored = np.concatenate([y, -np.ones(50)])
    with_ignored = np.concatenate([z, rng.normal(0, 30, 50)])
    assert fit_temperature(with_ignored, ignored) == pytest.approx(expected, rel=2e-6)


def test_temperature_search_stops_at_its_bounds():
    """Logits carrying no information (each value half positive) want T -> infinity: the fit
    stops at the upper bound; perfectly separated logits want T -> 0: the lower bound."""
    z = np.array([-1.0, 1.0, -1.0, 1.0, -2.0, 2.0, -2.0, 2.0])
    uninformative = np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=float)
    assert fit_temperature(z, uninformative) == pytest.approx(MAX_TEMPERATURE, rel=1e-5)
    separated = (z > 0).astype(float)
    assert fit_temperature(z, separated) == pytest.approx(MIN_TEMPERATURE, rel=1e-5)


def test_softmax_temperature_is_the_cross_entropy_minimiser():
    """Single-label: the one temperature of softmax(logits / T) equals the root in 1 / T of the
    cross-entropy's derivative mean(sum_k softmax_k z_k - z_true)."""
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 2.5, (300, 4))
    classes = np.array([rng.choice(4, p=softmax(row / 1.8)) for row in logits])
    picked = logits[np.arange(300), classes]

    def derivative(beta):
        return np.mean((softmax(beta * logits, axis=1) * logits).sum(1) - picked)

    expected = 1 / brentq(derivative, 1e-6, 1e3, xtol=1e-15, rtol=1e-15)
    assert fit_softmax_temperature(logits, classes) == pytest.approx(expected, rel=2e-6)
