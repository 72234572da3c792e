"""Subgroup analysis (``hf_cxr_mae.metrics.subgroups``): age bands, and the subgroup report's
values, counts, flags and rates.

The subgroup report (``metrics.subgroups``) pinned exactly: per group, AUROC per finding and
its mean over the findings defined there, percentile intervals reproduced by drawing the
group's bootstrap rows here, the "below overall" flag (the group's mAUC interval lies entirely
below the overall mean over the SAME findings) on both sides of its limit, TPR / FPR at the
thresholds and the gaps between known values."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import mann_whitney, sigmoid
from sklearn.metrics import roc_auc_score

import hf_cxr_mae.metrics.subgroups as subgroups
from hf_cxr_mae.metrics.subgroups import age_bands, subgroup_report


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


NAMES = ["a", "b"]
RESAMPLES, SEED = 200, 1


def group_reference(y, s, level=0.95):
    """AUROCs, mAUC and their intervals for these rows, from the definition."""
    auroc = np.array([mann_whitney(y[:, j], s[:, j]) for j in range(y.shape[1])])
    defined = ~np.isnan(auroc)
    rows = np.random.default_rng(SEED).integers(0, len(y), size=(RESAMPLES, len(y)))
    draws = np.array([[mann_whitney(y[r, j], s[r, j]) for j in range(y.shape[1])] for r in rows])
    q = [50 * (1 - level), 50 * (1 + level)]
    per = [np.percentile(d[np.isfinite(d)], q) if ok else None
           for d, ok in zip(draws.T, defined, strict=True)]  # fmt: skip
    kept = draws[:, defined]
    means = np.array([np.mean(r[np.isfinite(r)]) for r in kept if np.isfinite(r).any()])
    return auroc, defined, per, np.percentile(means, q)


def data(seed=0):
    """Three sites of 30 images and 6 without a site; finding b has no positive at site A, where
    the model is weak for a, and one positive among the 6 (so many of their resamples define a
    but not b: a resample's mean is over the findings it defines)."""
    rng = np.random.default_rng(seed)
    n = 93
    site = np.array(["A"] * 30 + ["B"] * 30 + ["C"] * 30 + [None, "", float("nan")], dtype=object)
    y = (rng.random((n, 2)) < 0.4).astype(float)
    y[:30, 1] = 0
    y[60, 0] = -1
    strength = np.where(site == "A", 0.8, np.where(site == "B", 3.0, 1.8))
    logits = np.stack([strength * y[:, 0], np.zeros(n)], 1) + rng.normal(size=(n, 2))
    y[90:] = [[1, 0], [0, 0], [0, 1]]
    site = np.concatenate([site, np.array([None, " ", None], dtype=object)])
    y = np.concatenate([y, [[1, 0], [0, 0], [1, 0]]])
    logits = np.concatenate([logits, [[0.3, -0.2], [-1.0, 0.4], [0.8, 0.1]]])
    return site, y, 1 / (1 + np.exp(-logits))


@pytest.fixture(scope="module")
def report():
    site, y, s = data()
    thresholds = {"a": 0.6, "b": 0.5}
    return subgroup_report(
        s, y, NAMES, {"site": site}, thresholds=thresholds, n_resamples=RESAMPLES, seed=SEED
    )


def test_every_group_statistic_equals_the_reference(report):
    """Overall and per site: counts, positives, AUROC per finding, mAUC, both kinds of interval,
    the overall mean over the same findings and the flag, all reproduced here."""
    site, y, s = data()
    known = np.array([isinstance(v, str) and v.strip() != "" for v in site])
    masks = {"A": site == "A", "B": site == "B", "C": site == "C", "unknown": ~known}
    overall_auroc, *_ = group_reference(y, s)
    assert list(report["groups"]["site"]) == ["A", "B", "C", "unknown"]
    groups = list(report["groups"]["site"].items())
    for value, stats in [("overall", report["overall"]), *groups]:
        rows = np.ones(len(y), bool) if value == "overall" else masks[value]
        auroc, defined, per, mean_ci = group_reference(y[rows], s[rows])
        assert stats["count"] == rows.sum()
        assert stats["positives"] == {n: int((y[rows, j] == 1).sum()) for j, n in enumerate(NAMES)}
        for j, name in enumerate(NAMES):
            if defined[j]:
                assert stats["auroc"][name] == pytest.approx(auroc[j], rel=1e-12)
                np.testing.assert_allclose(stats["auroc_ci95"][name], per[j], rtol=1e-12)
            else:
                assert stats["auroc"][name] is None and stats["auroc_ci95"][name] is None
        assert stats["undefined"] == [n for j, n in enumerate(NAMES) if not defined[j]]
        assert stats["mauc"] == pytest.approx(np.mean(auroc[defined]), rel=1e-12)
        np.testing.assert_allclose(stats["mauc_ci95"], mean_ci, rtol=1e-12)
        if value != "overall":
            same = float(np.mean(overall_auroc[defined]))
            assert stats["overall_mauc"] == pytest.approx(same, rel=1e-12)
            assert stats["below_overall"] == (mean_ci[1] < same)


def test_the_flag_compares_the_upper_bound_with_the_overall_mean_over_the_same_findings(report):
    """Site A (finding b undefined there) lies below the overall mean of a alone although its
    interval reaches above the overall mean of a and b: flagged. Sites B and C straddle the
    overall value (their lower bound is below it): not flagged."""
    overall = report["overall"]
    a, b, c = (report["groups"]["site"][v] for v in "ABC")
    assert a["undefined"] == ["b"] and a["overall_mauc"] == overall["auroc"]["a"]
    assert overall["mauc"] < a["mauc_ci95"][1] < a["overall_mauc"]
    assert a["below_overall"]
    for straddling in (b, c):
        lo, hi = straddling["mauc_ci95"]
        assert lo < straddling["overall_mauc"] < hi
        assert not straddling["below_overall"]


@pytest.mark.parametrize("step, flagged", [(0, False), (-1, True), (1, False)])
def test_the_flag_at_its_limit(monkeypatch, step, flagged):
    """An upper bound exactly equal to the overall value is not below it; one float below is."""
    real = subgroups._group_stats
    seen: list[dict] = []

    def pinned(scores, targets, *args):
        stats = real(scores, targets, *args)
        seen.append(stats)
        if len(seen) > 1:  # a group: its interval's upper end put at the limit (+/- one float)
            overall = seen[0]["auroc"]
            same = float(np.mean([overall[n] for n in NAMES if stats["auroc"][n] is not None]))
            limit = same if step == 0 else np.nextafter(same, np.inf * step)
            stats["mauc_ci95"] = [stats["mauc_ci95"][0], float(limit)]
        return stats

    monkeypatch.setattr(subgroups, "_group_stats", pinned)
    site, y, s = data()
    out = subgroup_report(s, y, NAMES, {"site": site}, n_resamples=20, seed=SEED)
    assert [g["below_overall"] for g in out["groups"]["site"].values()] == [flagged] * 4


def test_rates_and_gaps_at_the_thresholds(report):
    """TPR / FPR per group at the thresholds (a score equal to the threshold is flagged), and
    each gap the largest minus the smallest rate among the known values (unknown left out)."""
    site, y, s = data()
    thresholds = {"a": 0.6, "b": 0.5}
    by_value = report["groups"]["site"]
    for value in "ABC":
        rows = site == value
        for j, name in enumerate(NAMES):
            flagged = s[rows, j] >= thresholds[name]
            pos, neg = y[rows, j] == 1, y[rows, j] == 0
            expected_tpr = flagged[pos].mean() if pos.any() else None
            assert by_value[value]["tpr"][name] == expected_tpr
            assert by_value[value]["fpr"][name] == flagged[neg].mean()
    for name in NAMES:
        gap = report["gaps"]["site"][name]
        for rate in ("tpr", "fpr"):
            known = {
                v: by_value[v][rate][name] for v in "ABC" if by_value[v][rate][name] is not None
            }
            low, high = min(known, key=known.get), max(known, key=known.get)
            assert gap[f"{rate}_gap"] == known[high] - known[low]
            assert (gap[f"{rate}_lowest"], gap[f"{rate}_highest"]) == (low, high)
    assert report["groups"]["site"]["A"]["tpr"]["b"] is None  # no positive of b at site A


def test_intervals_follow_the_level():
    """level=0.8: every interval is the 10th / 90th percentile of the same draws."""
    site, y, s = data()
    out = subgroup_report(s, y, NAMES, {"site": site}, n_resamples=RESAMPLES, seed=SEED, level=0.8)
    rows = site == "B"
    _, _, per, mean_ci = group_reference(y[rows], s[rows], level=0.8)
    np.testing.assert_allclose(out["groups"]["site"]["B"]["mauc_ci95"], mean_ci, rtol=1e-12)
    np.testing.assert_allclose(out["groups"]["site"]["B"]["auroc_ci95"]["a"], per[0], rtol=1e-12)


def test_a_score_equal_to_the_threshold_is_flagged_in_every_group():
    """Flagged means ``score >= threshold``: in group G one positive and one negative score
    exactly the threshold, so both count (TPR 2/3, FPR 1/2); a strict ``>`` would give 1/3, 0."""
    y = np.array([[1], [1], [1], [0], [0], [1], [0]])
    s = np.array([[0.5], [0.9], [0.1], [0.5], [0.2], [0.5], [0.5]])
    site = ["G", "G", "G", "G", "G", "H", "H"]
    out = subgroup_report(s, y, ["a"], {"site": site}, thresholds={"a": 0.5}, n_resamples=5)
    g, h = out["groups"]["site"]["G"], out["groups"]["site"]["H"]
    assert (g["tpr"]["a"], g["fpr"]["a"]) == (2 / 3, 1 / 2)
    assert (h["tpr"]["a"], h["fpr"]["a"]) == (1.0, 1.0)
    assert (out["overall"]["tpr"]["a"], out["overall"]["fpr"]["a"]) == (3 / 4, 2 / 3)
