"""Operating points (``hf_cxr_mae.metrics.operating_points``): thresholds reproduce their target on
the same data, the edge cases, errors, and the rates at a threshold with their intervals.

Operating points (``metrics.operating_points``) pinned exactly: thresholds by brute force over
every distinct score (flagged: probability >= threshold), sensitivity / specificity / PPV / NPV
from the four counts, and their percentile intervals reproduced by drawing the same bootstrap
rows here (``default_rng(seed).integers(0, n, (resamples, n))``)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import sigmoid

from hf_cxr_mae.metrics.operating_points import choose_threshold, rates_at


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


Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, -1, 1, 0])
P = np.array([0.9, 0.6, 0.6, 0.3, 0.6, 0.5, 0.3, 0.2, 0.1, 0.1, 0.95, 0.4, 0.4])


def rates(y, p, t):
    """The four rates at threshold t (NaN without a denominator)."""
    flagged = p >= t
    tp, fp = np.sum(flagged & (y == 1)), np.sum(flagged & (y == 0))
    tn, fn = np.sum(~flagged & (y == 0)), np.sum(~flagged & (y == 1))
    with np.errstate(invalid="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }, (tp, fp, tn, fn)


def kept(y, p):
    return y[y != -1], p[y != -1]


def youden_brute_force(y, p):
    """The largest J over the distinct scores, and the highest threshold reaching it."""
    y, p = kept(y, p)
    j = {t: rates(y, p, t)[0]["sensitivity"] + rates(y, p, t)[0]["specificity"] - 1
         for t in np.unique(p)}  # fmt: skip
    best = max(j.values())
    ties = [t for t, v in j.items() if v == pytest.approx(best, abs=1e-12)]
    return max(ties), len(ties)


def test_youden_takes_the_highest_threshold_among_equal_j():
    """Brute force over the distinct scores: the largest J, and of thresholds tying on it the
    highest (the most specific)."""
    y = np.array([1, 0, 1, 0, -1])
    p = np.array([0.9, 0.8, 0.7, 0.1, 0.85])
    expected, ties = youden_brute_force(y, p)
    assert ties == 2 and expected == 0.9  # J 0.5 at 0.9 and at 0.7
    assert choose_threshold(y, p) == expected
    expected, _ = youden_brute_force(Y, P)
    assert choose_threshold(Y, P) == expected == 0.6


@pytest.mark.parametrize("target", [0.5, 0.6, 0.8, 0.9, 1.0])
def test_sensitivity_and_specificity_targets_by_brute_force(target):
    """Sensitivity target: the highest distinct score whose sensitivity reaches it (exactly
    reaching counts: 4 of 5 positives is 0.8); specificity target: the lowest whose
    specificity reaches it."""
    y, p = kept(Y, P)
    candidates = np.unique(p)
    sens = [t for t in candidates if rates(y, p, t)[0]["sensitivity"] >= target - 1e-12]
    spec = [t for t in candidates if rates(y, p, t)[0]["specificity"] >= target - 1e-12]
    assert choose_threshold(Y, P, "sensitivity", target) == max(sens)
    if spec:
        assert choose_threshold(Y, P, "specificity", target) == min(spec)
    else:  # only flagging nothing is that specific: just above the highest score
        assert choose_threshold(Y, P, "specificity", target) == np.nextafter(p.max(), np.inf)


def test_a_target_reached_exactly_is_reached():
    """Sensitivity 0.8 is reached by flagging 4 of 5 positives: the threshold is 0.4 (the fifth
    positive, at 0.3, is left unflagged); asking 0.8 + 1e-9 needs all five: 0.3."""
    assert choose_threshold(Y, P, "sensitivity", 0.8) == 0.4
    assert choose_threshold(Y, P, "sensitivity", 0.8 + 1e-9) == 0.3


@pytest.mark.parametrize("threshold", [0.3, 0.4, 0.6, 0.95])
def test_rates_and_their_intervals_reproduce_exactly(threshold):
    """Values and counts at the threshold (a score equal to it is flagged), each interval the
    2.5th / 97.5th percentile of the rate over the same 400 resampled rows, resamples without a
    denominator left out; a rate without one at all is None with no interval."""
    out = rates_at(Y, P, threshold, n_resamples=400, seed=3)
    y, p = kept(Y, P)
    values, counts = rates(y, p, threshold)
    assert (out["tp"], out["fp"], out["tn"], out["fn"]) == tuple(int(c) for c in counts)
    rows = np.random.default_rng(3).integers(0, y.size, size=(400, y.size))
    draws = [rates(y[r], p[r], threshold)[0] for r in rows]
    for name, value in values.items():
        if np.isnan(value):
            assert out[name] == {"value": None, "ci95": None}
            continue
        assert out[name]["value"] == value
        finite = np.array([d[name] for d in draws])
        finite = finite[np.isfinite(finite)]
        np.testing.assert_allclose(
            out[name]["ci95"], np.percentile(finite, [2.5, 97.5]), rtol=1e-12
        )
    assert out["threshold"] == threshold


def test_rate_intervals_follow_the_level():
    """At level 0.8 the interval is the 10th / 90th percentile of the same draws."""
    out = rates_at(Y, P, 0.4, n_resamples=300, seed=1, level=0.8)
    y, p = kept(Y, P)
    rows = np.random.default_rng(1).integers(0, y.size, size=(300, y.size))
    sens = np.array([rates(y[r], p[r], 0.4)[0]["sensitivity"] for r in rows])
    sens = sens[np.isfinite(sens)]
    np.testing.assert_allclose(
        out["sensitivity"]["ci95"], np.percentile(sens, [10, 90]), rtol=1e-12
    )


@pytest.mark.parametrize("method", ["sensitivity", "specificity"])
@pytest.mark.parametrize("target", [0, 0.0, -0.1, 1.0000001, 2])
def test_a_target_outside_zero_exclusive_to_one_is_refused(method, target):
    """A target of 0 would accept any threshold (every one reaches it), so it is refused like
    one above 1, and the message names the allowed range (0, 1]."""
    with pytest.raises(ValueError, match=rf"The target {method} must be in \(0, 1\], got "):
        choose_threshold([0, 1, 0, 1], [0.1, 0.9, 0.4, 0.6], method, target)
