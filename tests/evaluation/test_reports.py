"""Evaluation reports (``hf_cxr_mae.evaluation.reports``): AUROC and bootstrap intervals equal to sklearn and
the percentile bootstrap written out, scores at full precision, a confusion matrix for single-
label runs, one ROC panel for a binary task, and subgroups on real NIH images.

The evaluation report (``reports.write_report``) pinned exactly: every number of metrics.json
(AUROC, AP, mAUC, their bootstrap intervals reproduced by drawing the same rows here, ECE per
finding and its mean, the stored operating points' rates, single-label accuracy / sensitivity /
PPV / confusion matrix) against references computed in the test, and report.md showing each
number in its own column."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import TINY
from helpers import assert_not_blank, mann_whitney, saved_config, sigmoid
from PIL import Image
from recipe_utils import TINY_TRAIN, recipe
from sklearn.metrics import average_precision_score, roc_auc_score

from hf_cxr_mae.data import NIH14_LABELS
from hf_cxr_mae.evaluation.reports import write_report
from hf_cxr_mae.metrics.subgroups import subgroup_report


def test_binary_roc_figure_has_one_panel(tmp_path):
    pytest.importorskip("matplotlib")
    from hf_cxr_mae.evaluation.reports import write_report

    rng = np.random.default_rng(0)
    classes = rng.integers(0, 2, 40)
    logits = rng.normal(size=(40, 2)) + np.eye(2)[classes]
    write_report(
        tmp_path / "two",
        logits,
        classes,
        ["normal", "covid"],
        "test",
        "single_label_classification",
        n_resamples=10,
    )
    with Image.open(tmp_path / "two" / "roc.png") as im:
        width, height = im.size
    assert abs(width - height) <= 2, (width, height)  # one square panel, not two side by side
    classes3 = rng.integers(0, 3, 40)
    logits3 = rng.normal(size=(40, 3))
    write_report(
        tmp_path / "three",
        logits3,
        classes3,
        ["a", "b", "c"],
        "test",
        "single_label_classification",
        n_resamples=10,
    )
    with Image.open(tmp_path / "three" / "roc.png") as im:
        assert abs(im.size[0] - 3 * im.size[1]) <= 3, im.size


def _nih_expected(nih_dir: Path, image_ids: list[str]) -> pd.DataFrame:
    """The CSV's rows of these images, in this order, with the subgroups the report should use."""
    table = pd.read_csv(nih_dir / "Data_Entry_2017.csv").set_index("Image Index")
    rows = table.loc[[Path(i).name for i in image_ids]]  # ids carry the image folder
    age = rows["Patient Age"].astype(float)
    band = np.select(
        [age > 120, age < 40, age < 60, age < 80], ["unknown", "<40", "40-59", "60-79"], ">=80"
    )
    return pd.DataFrame(
        {
            "sex": rows["Patient Gender"].str.upper().to_numpy(),
            "age_band": band,
            "view": rows["View Position"].str.upper().to_numpy(),
            "labels": [
                [float(n in f.split("|")) for n in NIH14_LABELS] for f in rows["Finding Labels"]
            ],
        },
        index=image_ids,
    )


def test_subgroups_on_real_nih_images(nih_dir, tmp_path, monkeypatch):
    from hf_cxr_mae.data import load_cxr_dataset
    from hf_cxr_mae.evaluation import reports

    captured = []
    original = reports.write_report

    def spy(*args, **kwargs):
        captured.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(reports, "write_report", spy)
    data = ["--dataset", "nih14", "--data_dir", str(nih_dir), "--image_dir", "images",
            "--cache_dir", str(tmp_path / "cache"), "--cache_size", "40"]  # fmt: skip
    ft = tmp_path / "ft"
    recipe("finetune").main(
        [*TINY_TRAIN, *data, "--preset", TINY, "--output_dir", str(ft), "--max_steps", "3",
         "--max_train_samples", "32", "--eval_strategy", "no", "--save_strategy", "no",
         "--load_best_model_at_end", "false", "--bootstrap_resamples", "100"]
    )  # fmt: skip
    report = json.loads((ft / "metrics.json").read_text())
    test_ids = load_cxr_dataset("nih14", str(nih_dir), image_dir="images")["test"]["image_id"]
    expected = _nih_expected(nih_dir, test_ids)
    assert report["num_images"] == len(test_ids) == 100
    groups = report["subgroups"]["groups"]
    assert {"sex", "age_band", "view"} <= set(groups)
    for column in ("sex", "age_band", "view"):
        counts = {value: stats["count"] for value, stats in groups[column].items()}
        assert counts == expected[column].value_counts().to_dict(), column
        for value, stats in groups[column].items():
            if stats["mauc"] is not None and stats["count"] >= 10:
                low, high = stats["mauc_ci95"]
                assert low <= stats["mauc"] <= high and high > low, (column, value)
    # Predictions and metadata are paired image by image: the labels handed to the report are the
    # CSV's labels of the images in the same order as the groups (the CSV's sex / view).
    args, kwargs = captured[-1]
    logits, labels = np.asarray(args[1]), np.asarray(args[2])
    np.testing.assert_array_equal(labels, np.array(expected["labels"].tolist()))
    assert list(kwargs["groups"]["sex"]) == expected["sex"].tolist()
    assert list(kwargs["groups"]["view"]) == expected["view"].tolist()
    # A subgroup's AUROC is sklearn's on its rows.
    women = expected["sex"].to_numpy() == "F"
    j = next(j for j, n in enumerate(NIH14_LABELS) if 0 < labels[women, j].sum() < women.sum())
    assert groups["sex"]["F"]["auroc"][NIH14_LABELS[j]] == pytest.approx(
        roc_auc_score(labels[women, j], logits[women, j]), abs=1e-9
    )
    # TPR / FPR per subgroup at the stored (Youden, the default) thresholds.
    thresholds = saved_config(ft)["operating_points"]["thresholds"]
    name = NIH14_LABELS[j]
    if thresholds[name] is not None:
        flagged = sigmoid(logits[women, j]) >= thresholds[name]
        positive = labels[women, j] == 1
        assert groups["sex"]["F"]["tpr"][name] == pytest.approx(flagged[positive].mean())
    # The card's bias section shows this model's measured table, not boilerplate.
    card = (ft / "README.md").read_text()
    assert "### Subgroups (measured on the test split)" in card
    assert "not measured here" not in card
    for value, stats in groups["sex"].items():
        assert f"| sex | {value} | {stats['count']} |" in card
    assert "### Operating points" in card and "Youden" in card
    markdown = (ft / "report.md").read_text()
    assert "## Subgroups" in markdown and "![subgroups.png](subgroups.png)" in markdown
    assert (ft / "subgroups.png").stat().st_size > 10_000
    assert not math.isnan(report["calibration"]["mean_ece"])


def test_report_auroc_and_intervals_match_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (120, 3)).astype(float)
    labels[:, 2] = 0  # a finding with no positives
    logits = rng.normal(size=(120, 3)) + 1.5 * labels
    report = write_report(tmp_path, logits, labels, ["A", "B", "C"], "test", n_resamples=300)
    scores = 1 / (1 + np.exp(-logits))
    assert report["auroc"]["A"] == pytest.approx(
        roc_auc_score(labels[:, 0], scores[:, 0]), abs=1e-12
    )
    for name in ("A", "B"):
        low, high = report["auroc_ci95"][name]
        assert low <= report["auroc"][name] <= high and high - low < 0.4
    assert report["auroc"]["C"] is None and report["auroc_ci95"]["C"] is None
    assert report["mauc"] == pytest.approx(np.mean([report["auroc"]["A"], report["auroc"]["B"]]))
    assert "C" in report["note"] and "left out of mAUC" in report["note"]
    assert report["bootstrap"]["resamples"] == 300 and report["positives"]["C"] == 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["auroc"] == report["auroc"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| C | undefined |" in markdown and "![roc.png](roc.png)" in markdown
    assert_not_blank(tmp_path / "roc.png")


def test_auroc_uses_the_scores_at_full_precision(tmp_path):
    # Logits 1e-7 apart (a barely trained head): their sigmoids differ by ~2.5e-8, below float32's
    # spacing near 0.5, so a metric that stores probabilities as float32 ties them and drifts.
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, (200, 2)).astype(float)
    logits = 1e-7 * (rng.integers(-50, 50, (200, 2)) + 2 * labels)  # exact ties stay ties
    report = write_report(tmp_path, logits, labels, ["A", "B"], "test", n_resamples=2)
    for j, name in enumerate("AB"):
        expected = roc_auc_score(labels[:, j], logits[:, j])  # ranks: the logits' own order
        assert report["auroc"][name] == pytest.approx(expected, abs=1e-12), name


def _percentile_bootstrap(scores, labels, n_resamples, seed):
    """The 95% percentile bootstrap written out: the same index draws as the library (one
    ``default_rng(seed).integers(0, n, n)`` per resample), bounds at the 2.5th / 97.5th percentile."""
    rng = np.random.default_rng(seed)
    n, k = labels.shape
    per, means = [[] for _ in range(k)], []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        defined = []
        for j in range(k):
            y = labels[idx, j]
            if 0 < y.sum() < len(y):  # both classes present: AUROC defined
                defined.append(roc_auc_score(y, scores[idx, j]))
                per[j].append(defined[-1])
        if defined:
            means.append(np.mean(defined))
    bounds = [tuple(np.percentile(v, [2.5, 97.5])) if v else None for v in per]
    return bounds, tuple(np.percentile(means, [2.5, 97.5]))


def test_bootstrap_bounds_are_the_95_percent_percentiles(tmp_path):
    # A 90% interval (5th / 95th percentiles) labelled 95% would still contain the estimate and be
    # narrow; only recomputing the bounds catches it (it is off by about 0.02 here).
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (60, 3)).astype(float)
    labels[:4, 2], labels[4:, 2] = 1, 0  # rare finding: some resamples have no positive
    logits = rng.normal(size=(60, 3)) + labels
    report = write_report(
        tmp_path, logits, labels, ["A", "B", "C"], "test", n_resamples=400, seed=7
    )
    per, mean = _percentile_bootstrap(1 / (1 + np.exp(-logits)), labels, 400, 7)
    for name, expected in zip("ABC", per, strict=True):
        np.testing.assert_allclose(report["auroc_ci95"][name], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(report["mauc_ci95"], mean, rtol=0, atol=1e-12)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["mauc_ci95"] == report["mauc_ci95"] and saved["bootstrap"]["seed"] == 7
    low, high = report["mauc_ci95"]
    assert f"(95% CI {low:.3f}-{high:.3f})" in (tmp_path / "report.md").read_text()


def test_single_label_report_has_confusion_matrix(tmp_path):
    labels = np.array([0, 1, 2, 2, 1, 0, 2, 1])
    logits = np.eye(3)[[0, 1, 2, 1, 1, 0, 2, 2]] * 3
    report = write_report(
        tmp_path,
        logits,
        labels,
        ["normal", "pneumonia", "covid"],
        "test",
        "single_label_classification",
        n_resamples=50,
    )
    assert report["accuracy"] == pytest.approx(6 / 8)
    assert report["confusion_matrix"][2] == [0, 1, 2]
    assert report["sensitivity"]["covid"] == pytest.approx(2 / 3) and report["ppv"][
        "pneumonia"
    ] == pytest.approx(2 / 3)
    assert_not_blank(tmp_path / "confusion_matrix.png")


NAMES = ["a", "b", "c"]
RESAMPLES, SEED = 150, 2


def ece(y, p, n_bins=15):
    keep = y != -1
    y, p = y[keep], p[keep]
    bins = np.array([max(b for b in range(n_bins) if b / n_bins <= v) for v in p])
    return sum(
        (bins == b).sum() / len(p) * abs(y[bins == b].mean() - p[bins == b].mean())
        for b in range(n_bins)
        if (bins == b).any()
    )


def data():
    """60 images, three findings: c without positives (undefined), some targets ignored;
    logits on a coarse grid (ties)."""
    rng = np.random.default_rng(0)
    y = (rng.random((60, 3)) < 0.35).astype(float)
    y[:, 2] = 0
    y[rng.random((60, 3)) < 0.08] = -1
    logits = np.round(1.5 * (y == 1) + rng.normal(size=(60, 3)), 1)
    return y, logits


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    y, logits = data()
    out = tmp_path_factory.mktemp("report")
    config = SimpleNamespace(
        operating_points={
            "method": "youden",
            "target": None,
            "fitted_on": "validation",
            "thresholds": {"a": 0.55, "b": 0.6, "c": None},
        },
        calibration=None,
    )
    groups = {"sex": ["M", "F"] * 30}
    report = write_report(
        out, logits, y, NAMES, "test", n_resamples=RESAMPLES, seed=SEED, groups=groups,
        config=config,
    )  # fmt: skip
    return out, report


def test_auroc_ap_and_their_intervals(written):
    """Per finding AUROC / AP (None where undefined), mAUC over the defined findings, each
    interval the percentile interval over the same resampled rows, the mean's over each
    resample's mean of the findings it defines."""
    y, logits = data()
    p = 1 / (1 + np.exp(-logits))
    _, report = written
    rows = np.random.default_rng(SEED).integers(0, 60, size=(RESAMPLES, 60))
    draws = np.array([[mann_whitney(y[r, j], p[r, j]) for j in range(3)] for r in rows])
    for j, name in enumerate(NAMES[:2]):
        keep = y[:, j] != -1
        assert report["auroc"][name] == pytest.approx(mann_whitney(y[:, j], p[:, j]), rel=1e-12)
        assert report["average_precision"][name] == pytest.approx(
            average_precision_score(y[keep, j], p[keep, j]), rel=1e-12
        )
        finite = draws[:, j][np.isfinite(draws[:, j])]
        np.testing.assert_allclose(
            report["auroc_ci95"][name], np.percentile(finite, [2.5, 97.5]), rtol=1e-12
        )
    assert report["auroc"]["c"] is None and report["auroc_ci95"]["c"] is None
    assert report["mauc"] == pytest.approx(
        np.mean([report["auroc"]["a"], report["auroc"]["b"]]), rel=1e-15
    )
    means = [np.mean(d[np.isfinite(d)]) for d in draws if np.isfinite(d).any()]
    np.testing.assert_allclose(report["mauc_ci95"], np.percentile(means, [2.5, 97.5]), rtol=1e-12)


def test_calibration_and_operating_points(written):
    """ECE per finding at 15 bins (defined for the finding without positives too: it needs only
    labelled images) and their mean, and the rates at the stored thresholds with their counts;
    a finding without a stored threshold has no rates; the intervals are drawn with the
    report's seed."""
    y, logits = data()
    p = 1 / (1 + np.exp(-logits))
    _, report = written
    eces = report["calibration"]["ece"]
    for j, name in enumerate(NAMES):
        assert eces[name] == pytest.approx(ece(y[:, j], p[:, j]), rel=1e-12, abs=1e-15)
    assert report["calibration"]["mean_ece"] == pytest.approx(np.mean(list(eces.values())))
    rates = report["operating_points"]["rates"]
    assert rates["c"] is None and report["operating_points"]["evaluated_on"] == "test"
    for j, (name, t) in enumerate([("a", 0.55), ("b", 0.6)]):
        keep = y[:, j] != -1
        yy, flagged = y[keep, j], p[keep, j] >= t
        tp, fp = int((flagged & (yy == 1)).sum()), int((flagged & (yy == 0)).sum())
        tn, fn = int((~flagged & (yy == 0)).sum()), int((~flagged & (yy == 1)).sum())
        assert (rates[name]["tp"], rates[name]["fp"], rates[name]["tn"], rates[name]["fn"]) == (
            tp, fp, tn, fn,
        )  # fmt: skip
        assert rates[name]["sensitivity"]["value"] == tp / (tp + fn)
        assert rates[name]["specificity"]["value"] == tn / (tn + fp)
        assert rates[name]["ppv"]["value"] == tp / (tp + fp)
        assert rates[name]["npv"]["value"] == tn / (tn + fn)
        # Intervals: the same seed and resamples as the report's, over this finding's images.
        rows = np.random.default_rng(SEED).integers(0, yy.size, size=(RESAMPLES, yy.size))
        with np.errstate(invalid="ignore"):
            sens = np.array([(flagged[r] & (yy[r] == 1)).sum() / (yy[r] == 1).sum() for r in rows])
        np.testing.assert_allclose(
            rates[name]["sensitivity"]["ci95"],
            np.percentile(sens[np.isfinite(sens)], [2.5, 97.5]),
            rtol=1e-12,
        )


def test_subgroups_are_the_subgroup_report_at_the_stored_thresholds(written):
    """The report's subgroups section is ``subgroup_report`` of the probabilities with the
    stored thresholds (None ones dropped), the same resamples and seed."""
    y, logits = data()
    _, report = written
    direct = subgroup_report(
        1 / (1 + np.exp(-logits)), y, NAMES, {"sex": ["M", "F"] * 30},
        {"a": 0.55, "b": 0.6}, RESAMPLES, SEED,
    )  # fmt: skip
    assert report["subgroups"] == direct


def test_metrics_json_and_the_table(written):
    """metrics.json holds the same numbers (NaN as null); each report.md row shows the
    finding's AUROC, interval, AP and counts from its own fields."""
    out, report = written
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["auroc"] == report["auroc"] and saved["auroc_ci95"] == report["auroc_ci95"]
    assert saved["calibration"]["ece"] == report["calibration"]["ece"]
    lines = (out / "report.md").read_text().splitlines()
    for name in NAMES[:2]:
        lo, hi = report["auroc_ci95"][name]
        row = next(line for line in lines if line.startswith(f"| {name} | 0."))
        assert row == (
            f"| {name} | {report['auroc'][name]:.3f} | {lo:.3f}-{hi:.3f} | "
            f"{report['average_precision'][name]:.3f} | {report['positives'][name]} | "
            f"{report['negatives'][name]} |"
        )
    lo, hi = report["mauc_ci95"]
    assert f"**mAUC {report['mauc']:.3f}** (95% CI {lo:.3f}-{hi:.3f})" in lines


def test_single_label_accuracy_sensitivity_ppv_and_confusion(tmp_path):
    """Single-label: accuracy, per-class sensitivity (recall) and PPV (precision) from the
    argmax, the confusion matrix (rows true, columns predicted), one-vs-rest AUROC of softmax."""
    rng = np.random.default_rng(1)
    classes = rng.integers(0, 3, 40)
    logits = rng.normal(size=(40, 3)) + 1.2 * np.eye(3)[classes]
    report = write_report(
        tmp_path, logits, classes, ["x", "y", "z"], "test",
        problem_type="single_label_classification", n_resamples=20,
    )  # fmt: skip
    pred = logits.argmax(1)
    assert report["accuracy"] == (pred == classes).mean()
    matrix = np.zeros((3, 3), int)
    for t, q in zip(classes, pred, strict=True):
        matrix[t, q] += 1
    assert report["confusion_matrix"] == matrix.tolist()
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for k, name in enumerate(["x", "y", "z"]):
        assert report["sensitivity"][name] == matrix[k, k] / matrix[k].sum()
        assert report["ppv"][name] == matrix[k, k] / matrix[:, k].sum()
        assert report["auroc"][name] == pytest.approx(
            mann_whitney((classes == k).astype(float), probs[:, k]), rel=1e-12
        )
