"""DeLong's test for two correlated ROC curves (``hf_cxr_mae.metrics.delong``) against the slow
definition written here, with uncertain targets and identical models, and against the paired
bootstrap.

DeLong's test (``metrics.delong``) pinned to float precision against DeLong, DeLong &
Clarke-Pearson (1988) written here from the definition: the psi kernel over every
(positive, negative) pair, its row / column means as the structural components, their sample
covariances S10 / m + S01 / n, the variance of the difference a - b, a two-sided normal p-value
and a normal interval at the asked level."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from hf_cxr_mae.metrics.bootstrap import bootstrap_aurocs
from hf_cxr_mae.metrics.delong import delong_covariance, delong_test, placement_values


def slow_delong(targets, scores):
    """DeLong et al. (1988) from the definition: psi kernel over all (positive, negative)
    pairs, structural components V10 / V01, covariance S10 / m + S01 / n. O(m n)."""
    pos, neg = scores[:, targets == 1], scores[:, targets == 0]
    m, n = pos.shape[1], neg.shape[1]
    k = len(scores)
    v10, v01, aucs = np.empty((k, m)), np.empty((k, n)), np.empty(k)
    for r in range(k):
        psi = np.empty((m, n))
        for i in range(m):
            for j in range(n):
                psi[i, j] = 1.0 if pos[r, i] > neg[r, j] else 0.5 if pos[r, i] == neg[r, j] else 0
        aucs[r] = psi.mean()
        v10[r], v01[r] = psi.mean(1), psi.mean(0)
    s10 = np.array(
        [[np.sum((v10[a] - aucs[a]) * (v10[b] - aucs[b])) for b in range(k)] for a in range(k)]
    ) / (m - 1)
    s01 = np.array(
        [[np.sum((v01[a] - aucs[a]) * (v01[b] - aucs[b])) for b in range(k)] for a in range(k)]
    ) / (n - 1)
    return aucs, s10 / m + s01 / n, v10, v01


def correlated_scores(rng, n, prevalence=0.3, strength_a=1.0, strength_b=0.7, rho=0.6, ties=None):
    y = (rng.random(n) < prevalence).astype(float)
    shared = rng.normal(size=n)
    a = strength_a * y + shared
    b = strength_b * y + rho * shared + np.sqrt(1 - rho**2) * rng.normal(size=n)
    if ties is not None:  # coarse scores: many ties within and across classes
        a, b = np.round(a * ties) / ties, np.round(b * ties) / ties
    return y, a, b


@pytest.mark.parametrize("seed, n, ties", [(0, 12, None), (1, 30, 2), (2, 45, 1), (3, 9, 4)])
def test_delong_matches_slow_definition(seed, n, ties):
    rng = np.random.default_rng(seed)
    y, a, b = correlated_scores(rng, n, prevalence=0.4, ties=ties)
    y[:2] = [0, 1]  # both classes present
    c = rng.random(n)
    scores = np.stack([a, b, c])
    aucs, cov = delong_covariance(y, scores)
    ref_aucs, ref_cov, ref_v10, ref_v01 = slow_delong(y, scores)
    np.testing.assert_allclose(aucs, ref_aucs, rtol=0, atol=1e-12)
    _, v10, v01 = placement_values(y, scores)
    np.testing.assert_allclose(v10, ref_v10, rtol=0, atol=1e-12)
    np.testing.assert_allclose(v01, ref_v01, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=0, atol=1e-12)
    for r in range(3):
        assert aucs[r] == pytest.approx(roc_auc_score(y, scores[r]), abs=1e-12)

    result = delong_test(y, a, b)
    var = ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1]
    z = (ref_aucs[0] - ref_aucs[1]) / np.sqrt(var)
    assert result.variance == pytest.approx(var, abs=1e-12)
    assert abs(result.z - z) < 1e-10
    assert abs(result.p_value - 2 * norm.sf(abs(z))) < 1e-10
    half = norm.ppf(0.975) * np.sqrt(var)
    np.testing.assert_allclose(
        result.ci, [z * np.sqrt(var) - half, z * np.sqrt(var) + half], atol=1e-10
    )


def test_delong_ignores_uncertain_targets_and_handles_identical_models():
    rng = np.random.default_rng(5)
    y, a, b = correlated_scores(rng, 60, ties=3)
    y_ignored = y.copy()
    y_ignored[::7] = -1
    keep = y_ignored != -1
    full = delong_test(y_ignored, a, b)
    kept = delong_test(y[keep], a[keep], b[keep])
    assert full.to_dict() | {"positives": 0, "negatives": 0} == kept.to_dict() | {
        "positives": 0,
        "negatives": 0,
    }
    same = delong_test(y, a, a.copy())
    assert (same.difference, same.z, same.p_value) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="both classes"):
        delong_test(np.zeros(10), a[:10], b[:10])
    one_positive = np.zeros(10)
    one_positive[3] = 1
    with pytest.raises(ValueError, match="at least 2 positive and 2 negative"):
        delong_test(one_positive, a[:10], b[:10])
    with pytest.raises(ValueError, match="different numbers"):
        delong_test(y, a, b[:-1])


def test_delong_agrees_with_paired_bootstrap():
    """On 3000 synthetic images the DeLong standard error of the AUROC difference equals the
    paired bootstrap's to within 10%, and both call the difference significant."""
    rng = np.random.default_rng(11)
    y, a, b = correlated_scores(rng, 3000, strength_a=1.0, strength_b=0.8)
    result = delong_test(y, a, b)
    draws = bootstrap_aurocs(np.stack([y, y], 1), np.stack([a, b], 1), n_resamples=1000, seed=0)
    differences = draws[:, 0] - draws[:, 1]
    assert np.sqrt(result.variance) == pytest.approx(differences.std(ddof=1), rel=0.1)
    lo, hi = np.percentile(differences, [2.5, 97.5])
    assert abs(lo - result.ci[0]) < 0.01 and abs(hi - result.ci[1]) < 0.01
    assert result.p_value < 0.01 and lo > 0


RTOL = 1e-12


def psi_reference(targets, scores):
    """AUROC, V10, V01 of one model by the O(m n) pair kernel (ties count 1/2)."""
    pos, neg = scores[targets == 1], scores[targets == 0]
    psi = np.array([[1.0 if x > y else 0.5 if x == y else 0.0 for y in neg] for x in pos])
    return psi.mean(), psi.mean(1), psi.mean(0)


def delong_reference(targets, a, b, level=0.95):
    """Everything ``delong_test`` reports, from the definition, in plain loops."""
    targets = np.asarray(targets, dtype=float)
    keep = targets != -1
    y, a, b = targets[keep], np.asarray(a, float)[keep], np.asarray(b, float)[keep]
    auc_a, v10a, v01a = psi_reference(y, a)
    auc_b, v10b, v01b = psi_reference(y, b)
    m, n = len(v10a), len(v01a)

    def cov(u, v, mu, mv, count):
        return sum((u[i] - mu) * (v[i] - mv) for i in range(count)) / (count - 1)

    s10 = [[cov(u, v, mu, mv, m) for v, mv in ((v10a, auc_a), (v10b, auc_b))]
           for u, mu in ((v10a, auc_a), (v10b, auc_b))]  # fmt: skip
    s01 = [[cov(u, v, mu, mv, n) for v, mv in ((v01a, auc_a), (v01b, auc_b))]
           for u, mu in ((v01a, auc_a), (v01b, auc_b))]  # fmt: skip
    covariance = np.array(s10) / m + np.array(s01) / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = auc_a - auc_b
    z = difference / np.sqrt(variance)
    half = norm.ppf(1 - (1 - level) / 2) * np.sqrt(variance)
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": difference,
        "covariance": covariance,
        "variance": variance,
        "z": z,
        "p_value": 2 * min(norm.cdf(z), norm.sf(z)),
        "ci": (difference - half, difference + half),
        "positives": int((y == 1).sum()),
        "negatives": int((y == 0).sum()),
    }


# Ties inside each class and across classes, in both models; a few ignored (-1) images.
TARGETS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, -1, 1, 0, -1])
SCORES_A = np.array([0.9, 0.7, 0.7, 0.4, 0.7, 0.3, 0.3, 0.1, 0.4, 0.99, 0.6, 0.5, 0.0])
SCORES_B = np.array([0.8, 0.8, 0.2, 0.5, 0.6, 0.5, 0.2, 0.3, 0.1, 0.0, 0.3, 0.7, 0.9])


def assert_result(result, expected):
    np.testing.assert_allclose(result.auc_a, expected["auc_a"], rtol=RTOL)
    np.testing.assert_allclose(result.auc_b, expected["auc_b"], rtol=RTOL)
    np.testing.assert_allclose(result.difference, expected["difference"], rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(result.variance, expected["variance"], rtol=1e-10)
    np.testing.assert_allclose(result.z, expected["z"], rtol=1e-10)
    np.testing.assert_allclose(result.p_value, expected["p_value"], rtol=1e-10)
    np.testing.assert_allclose(result.ci, expected["ci"], rtol=1e-10)
    assert (result.positives, result.negatives) == (expected["positives"], expected["negatives"])


def test_delong_on_tied_scores_equals_the_pair_kernel_definition():
    """AUROCs, the variance of the difference, z, the two-sided p and the 95% interval of a
    small tied example with ignored images equal the 1988 definition to float precision; the
    positives / negatives counted leave the ignored images out."""
    expected = delong_reference(TARGETS, SCORES_A, SCORES_B)
    assert 0.05 < expected["p_value"] < 0.9  # one- and two-sided p differ visibly here
    result = delong_test(TARGETS, SCORES_A, SCORES_B)
    assert_result(result, expected)
    assert (result.positives, result.negatives) == (5, 6)
    keep = TARGETS != -1
    aucs, cov = delong_covariance(TARGETS, np.stack([SCORES_A, SCORES_B]))
    np.testing.assert_allclose(aucs, [expected["auc_a"], expected["auc_b"]], rtol=RTOL)
    np.testing.assert_allclose(cov, expected["covariance"], rtol=1e-10)
    # The ignored images leave every number as if they were absent.
    assert delong_test(TARGETS[keep], SCORES_A[keep], SCORES_B[keep]).to_dict() == result.to_dict()


@pytest.mark.parametrize("level", [0.8, 0.9, 0.99])
def test_delong_interval_at_other_levels(level):
    """The interval is difference -/+ z_{(1+level)/2} * sd at the level asked for."""
    result = delong_test(TARGETS, SCORES_A, SCORES_B, level=level)
    assert_result(result, delong_reference(TARGETS, SCORES_A, SCORES_B, level))


def test_swapping_the_models_mirrors_difference_and_interval_and_keeps_p():
    """B vs A: the difference and z change sign, the interval is mirrored, p is the same
    (a two-sided test)."""
    ab = delong_test(TARGETS, SCORES_A, SCORES_B)
    ba = delong_test(TARGETS, SCORES_B, SCORES_A)
    assert_result(ba, delong_reference(TARGETS, SCORES_B, SCORES_A))
    assert ba.difference == -ab.difference and ba.z == pytest.approx(-ab.z, rel=1e-12)
    assert ba.p_value == pytest.approx(ab.p_value, rel=1e-12)
    np.testing.assert_allclose(ba.ci, [-ab.ci[1], -ab.ci[0]], rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_delong_on_random_correlated_models(seed):
    """Random correlated models with coarse (tied) scores: every reported number equals the
    definition's."""
    rng = np.random.default_rng(seed)
    n = 40
    y = (rng.random(n) < 0.4).astype(float)
    y[:2] = [0, 1]
    y[rng.random(n) < 0.1] = -1
    y[2:6] = [0, 0, 1, 1]
    shared = rng.normal(size=n)
    a = np.round(y.clip(0) + shared, 1)
    b = np.round(0.5 * y.clip(0) + 0.8 * shared + 0.6 * rng.normal(size=n), 1)
    assert_result(delong_test(y, a, b), delong_reference(y, a, b))


def test_a_model_against_a_monotone_transform_of_itself_is_no_difference():
    """The same ranking (2a + 1 ranks the images as a does): difference 0, variance 0, z 0,
    p exactly 1 and a zero-width interval."""
    result = delong_test(TARGETS, SCORES_A, 2 * SCORES_A + 1)
    assert (result.difference, result.variance, result.z, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert result.ci == (0.0, 0.0)


def test_a_difference_without_variance_is_certain():
    """A perfect model against a constant one: both have zero placement variance, the
    difference 0.5 has no spread: z infinite, p exactly 0, the interval the point 0.5."""
    y = np.array([1, 1, 1, 0, 0, 0])
    perfect = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    result = delong_test(y, perfect, np.full(6, 0.5))
    assert (result.auc_a, result.auc_b, result.difference) == (1.0, 0.5, 0.5)
    assert (result.variance, result.z, result.p_value) == (0.0, np.inf, 0.0)
    assert result.ci == (0.5, 0.5)
    reverse = delong_test(y, np.full(6, 0.5), perfect)
    assert (reverse.z, reverse.p_value) == (-np.inf, 0.0)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 95])
def test_levels_outside_the_open_unit_interval_are_refused(level):
    """A level of 0, 1 or a percentage is refused rather than giving a degenerate interval."""
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        delong_test(TARGETS, SCORES_A, SCORES_B, level=level)


@pytest.mark.parametrize(
    "positives, negatives, refused",
    [(1, 5, True), (5, 1, True), (2, 2, False), (2, 5, False), (5, 2, False)],
)
def test_the_two_per_class_minimum_sits_at_two(positives, negatives, refused):
    """DeLong's variance needs two images of each class: one is refused (no sample variance),
    two is computed and equals the definition."""
    y = np.array([1] * positives + [0] * negatives, dtype=float)
    rng = np.random.default_rng(positives * 10 + negatives)
    a, b = rng.random(y.size), rng.random(y.size)
    if refused:
        with pytest.raises(ValueError, match="at least 2 positive and 2 negative"):
            delong_test(y, a, b)
    else:
        assert_result(delong_test(y, a, b), delong_reference(y, a, b))
