"""The clinical statistics (hf_cxr_mae.metrics: delong, calibration, operating_points,
subgroups, bootstrap) against reference computations written here from their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from hf_cxr_mae.metrics.bootstrap import auroc_from_ranks, bootstrap_aurocs, resample_indices
from hf_cxr_mae.metrics.calibration import (
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from hf_cxr_mae.metrics.delong import delong_covariance, delong_test, placement_values
from hf_cxr_mae.metrics.operating_points import choose_threshold, rates_at
from hf_cxr_mae.metrics.subgroups import age_bands, subgroup_report


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# ---------------------------------------------------------------- DeLong


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


# ---------------------------------------------------------------- bootstrap AUROC


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


# ---------------------------------------------------------------- calibration


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


# ---------------------------------------------------------------- operating points


def sens_spec(y, p, threshold):
    flagged = p >= threshold
    return flagged[y == 1].mean(), 1 - flagged[y == 0].mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thresholds_reproduce_their_target_on_the_same_data(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.2).astype(float)
    p = np.round(sigmoid(1.5 * y + rng.normal(size=300)), 2)  # rounded: ties
    y[::13] = -1
    kept = y != -1
    yk, pk = y[kept], p[kept]
    candidates = np.unique(pk)
    for target in [0.5, 0.8, 0.9, 0.95, 1.0]:
        t = choose_threshold(y, p, "sensitivity", target)
        sens, _ = sens_spec(yk, pk, t)
        assert sens >= target
        higher = candidates[candidates > t]
        if higher.size:  # the next stricter threshold misses the target: t is the most specific
            assert sens_spec(yk, pk, higher[0])[0] < target
        t = choose_threshold(y, p, "specificity", target)
        _, spec = sens_spec(yk, pk, t)
        assert spec >= target
        lower = candidates[candidates < t]
        if lower.size:
            assert sens_spec(yk, pk, lower[-1])[1] < target
    assert choose_threshold(y, p, "sensitivity") == choose_threshold(y, p, "sensitivity", 0.9)
    # Youden: the best J over every distinct score, by brute force.
    j = [sum(sens_spec(yk, pk, c)) - 1 for c in candidates]
    t = choose_threshold(y, p)
    assert sum(sens_spec(yk, pk, t)) - 1 == pytest.approx(max(j), abs=1e-12)
    assert t in candidates


def test_specificity_one_when_a_negative_scores_highest():
    y = np.array([0, 1, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.3, 0.7, 0.1])
    t = choose_threshold(y, p, "specificity", 1.0)
    assert t > 0.9 and sens_spec(y, p, t)[1] == 1.0


def test_threshold_errors():
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(np.zeros(5), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="choose from"):
        choose_threshold([0, 1], [0.1, 0.9], "f1")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        choose_threshold([0, 1], [0.1, 0.9], "sensitivity", 1.5)


def test_rates_at_counts_values_and_intervals():
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.3).astype(float)
    p = sigmoid(2 * y + rng.normal(size=400))
    out = rates_at(y, p, 0.6, n_resamples=500)
    flagged = p >= 0.6
    tp, fp = (flagged & (y == 1)).sum(), (flagged & (y == 0)).sum()
    tn, fn = (~flagged & (y == 0)).sum(), (~flagged & (y == 1)).sum()
    assert (out["tp"], out["fp"], out["tn"], out["fn"]) == (tp, fp, tn, fn)
    expected = {
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "ppv": tp / (tp + fp),
        "npv": tn / (tn + fn),
    }
    for name, value in expected.items():
        assert out[name]["value"] == pytest.approx(value)
        lo, hi = out[name]["ci95"]
        assert lo < value < hi and hi - lo < 0.25
    # Binomial standard error as a sanity check of the bootstrap width (sensitivity).
    se = np.sqrt(expected["sensitivity"] * (1 - expected["sensitivity"]) / (tp + fn))
    width = out["sensitivity"]["ci95"][1] - out["sensitivity"]["ci95"][0]
    assert width == pytest.approx(2 * 1.96 * se, rel=0.2)
    none_flagged = rates_at(y, p, 2.0, n_resamples=50)
    assert none_flagged["ppv"] == {"value": None, "ci95": None}
    assert none_flagged["sensitivity"]["value"] == 0.0


# ---------------------------------------------------------------- subgroups


def test_age_bands():
    ages = [12, 39.9, 40, 59.99, 60, 79.5, 80, 95, None, float("nan")]
    assert age_bands(ages).tolist() == [
        "<40",
        "<40",
        "40-59",
        "40-59",
        "60-79",
        "60-79",
        ">=80",
        ">=80",
        "unknown",
        "unknown",
    ]


def test_subgroup_report_values_counts_flags_and_rates():
    rng = np.random.default_rng(4)
    n, names = 600, ["a", "b", "c"]
    sex = np.where(rng.random(n) < 0.5, "M", "F").astype(object)
    sex[:20] = None
    targets = (rng.random((n, 3)) < 0.3).astype(float)
    targets[sex == "F", 2] = 0  # finding c has no positive among women: undefined there
    targets[5, 0] = -1
    signal = np.where((sex == "M")[:, None], 2.5, 0.2)  # the model barely works for women
    signal[:20] = 1.0  # sex unknown: between the two, within noise of overall
    scores = sigmoid(signal * targets + rng.normal(size=(n, 3)))
    thresholds = {"a": 0.5, "b": 0.6, "c": 0.55}
    report = subgroup_report(
        scores, targets, names, {"sex": sex}, thresholds=thresholds, n_resamples=300
    )
    overall = report["overall"]
    assert overall["count"] == n
    groups = report["groups"]["sex"]
    assert list(groups) == ["F", "M", "unknown"]
    assert [groups[v]["count"] for v in groups] == [(sex == "F").sum(), (sex == "M").sum(), 20]
    for value, g in groups.items():
        rows = sex == value if value != "unknown" else np.array([s is None for s in sex])
        for j, name in enumerate(names):
            y, s = targets[rows, j], scores[rows, j]
            keep = y != -1
            if len(set(y[keep])) == 2:
                assert g["auroc"][name] == pytest.approx(roc_auc_score(y[keep], s[keep]))
            assert g["positives"][name] == (y == 1).sum()
            pos, neg = y == 1, y == 0
            if pos.any():
                assert g["tpr"][name] == pytest.approx((s[pos] >= thresholds[name]).mean())
            else:
                assert g["tpr"][name] is None
            assert g["fpr"][name] == pytest.approx((s[neg] >= thresholds[name]).mean())
    women, men = groups["F"], groups["M"]
    assert women["auroc"]["c"] is None and women["undefined"] == ["c"]
    assert women["mauc"] == pytest.approx(np.mean([women["auroc"]["a"], women["auroc"]["b"]]))
    assert women["overall_mauc"] == pytest.approx(
        np.mean([overall["auroc"]["a"], overall["auroc"]["b"]])
    )
    assert women["below_overall"] and not men["below_overall"]
    unknown = groups["unknown"]  # 20 images: a wide interval around the overall value
    assert unknown["mauc_ci95"][0] < unknown["overall_mauc"] < unknown["mauc_ci95"][1]
    assert not unknown["below_overall"]
    for stats in (overall, women, men):
        lo, hi = stats["mauc_ci95"]
        assert lo < stats["mauc"] < hi
    gap = report["gaps"]["sex"]["a"]
    assert gap["tpr_gap"] == pytest.approx(abs(men["tpr"]["a"] - women["tpr"]["a"]))
    assert {gap["tpr_lowest"], gap["tpr_highest"]} == {"F", "M"}
    with pytest.raises(ValueError, match="'sex' has 3 values for 600"):
        subgroup_report(scores, targets, names, {"sex": ["M", "F", "M"]})


# ---------------------------------------------------------------- figures


def _red_pixels(path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=int)
    return int(((rgb[..., 0] > 180) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)).sum())


def test_figures_render_and_mark_the_flagged_subgroup(tmp_path):
    from PIL import Image

    from hf_cxr_mae.figures import reliability_figure, subgroup_figure

    rng = np.random.default_rng(0)
    n = 400
    view = np.where(rng.random(n) < 0.5, "AP", "PA")
    targets = (rng.random((n, 2)) < 0.3).astype(float)
    strength = np.where(view == "PA", 3.0, 0.0)[:, None]  # the model fails on AP films
    scores = sigmoid(strength * (targets - 0.5) + rng.normal(size=(n, 2)))
    report = subgroup_report(scores, targets, ["a", "b"], {"view": view}, n_resamples=200)
    assert report["groups"]["view"]["AP"]["below_overall"]
    subgroup_figure(report, tmp_path / "flagged.png")
    report["groups"]["view"]["AP"]["below_overall"] = False
    subgroup_figure(report, tmp_path / "unflagged.png")
    assert (
        _red_pixels(tmp_path / "flagged.png") > 50 and _red_pixels(tmp_path / "unflagged.png") == 0
    )
    reliability_figure(targets, scores, ["a", "b"], tmp_path / "reliability.png")
    with Image.open(tmp_path / "reliability.png") as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert image.width > 500 and pixels.std() > 10
