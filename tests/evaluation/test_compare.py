"""``hf-cxr-mae compare``: the paired comparison of two models, from prediction files and from
checkpoints (a ViT and the DenseNet-121 baseline) scored on real NIH images; unpaired
predictions, incomplete labels and an ONNX export given where a PyTorch model is needed are
named.

The paired comparison's statistics (``compare.compare_scores``) and its table pinned exactly:
per finding DeLong's numbers, the paired bootstrap interval and standard error reproduced by
drawing the same rows for both models here, Holm's (1979) step-down adjustment written from its
definition, the mean-AUROC difference with its paired-bootstrap interval and normal p-value, and
a model compared with itself (zero-width intervals, p = 1)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TWO_FINDINGS, mann_whitney
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.evaluation.compare import _holm, compare_scores, run_compare
from hf_cxr_mae.evaluation.compare_report import markdown
from hf_cxr_mae.metrics.delong import delong_test
from hf_cxr_mae.serving.export import export_onnx
from hf_cxr_mae.serving.predict import load_classifier

NAMES = ["Atelectasis", "Effusion", "Hernia"]


def _synthetic(tmp_path, n=300, seed=0):
    """Labels and two models' probabilities as CSV files (A stronger than B; Hernia absent)."""
    rng = np.random.default_rng(seed)
    ids = [f"images/{i:08d}_000.png" for i in range(n)]
    targets = (rng.random((n, 3)) < [0.3, 0.4, 0.0]).astype(int)
    targets[::17, 0] = -1  # uncertain: ignored
    shared = rng.normal(size=(n, 3))
    a = 1 / (1 + np.exp(-(2.0 * (targets == 1) + shared)))
    b = 1 / (1 + np.exp(-(1.0 * (targets == 1) + 0.7 * shared + rng.normal(size=(n, 3)))))
    labels = pd.DataFrame(targets, columns=NAMES).assign(image_id=ids)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    # Files as `predict` writes them: a path column, probabilities, a non-numeric column.
    for name, p in (("a", a), ("b", b)):
        frame = pd.DataFrame(p, columns=NAMES)
        frame.insert(0, "path", [f"/data/nih/{i}" for i in ids])
        frame["flagged"] = "Effusion"
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    return ids, targets.astype(float), a, b


def _compare(tmp_path, a="a.csv", b="b.csv", out="out", *extra):
    cli(
        [
            "compare",
            "--predictions_a", str(tmp_path / a),
            "--predictions_b", str(tmp_path / b),
            "--labels", str(tmp_path / "labels.csv"),
            "--output_dir", str(tmp_path / out),
            "--bootstrap_resamples", "300",
            *extra,
        ]
    )  # fmt: skip
    return json.loads((tmp_path / out / "compare.json").read_text())


def test_compare_prediction_files(tmp_path):
    _, targets, a, b = _synthetic(tmp_path)
    result = _compare(tmp_path)
    for j, name in enumerate(NAMES[:2]):
        entry = result["findings"][name]
        keep = targets[:, j] != -1
        assert entry["auroc_a"] == pytest.approx(roc_auc_score(targets[keep, j], a[keep, j]))
        assert entry["auroc_b"] == pytest.approx(roc_auc_score(targets[keep, j], b[keep, j]))
        direct = delong_test(targets[:, j], a[:, j], b[:, j])
        assert entry["p_value"] == pytest.approx(direct.p_value, rel=1e-9)
        assert entry["ci95"] == pytest.approx(list(direct.ci), abs=1e-12)
        lo, hi = entry["bootstrap_ci95"]  # the check agrees with DeLong's interval
        assert abs(lo - entry["ci95"][0]) < 0.04 and abs(hi - entry["ci95"][1]) < 0.04
    assert result["findings"]["Hernia"]["difference"] is None
    assert result["undefined"] == ["Hernia"]
    mean = result["mean"]
    assert mean["findings"] == NAMES[:2]
    assert mean["auroc_a"] == pytest.approx(
        np.mean([result["findings"][n]["auroc_a"] for n in NAMES[:2]])
    )
    assert mean["ci95"][0] < mean["difference"] < mean["ci95"][1]
    assert mean["difference"] > 0 and mean["p_value"] < 0.05  # A is the stronger model
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert "| **Mean AUROC** |" in markdown and "paired bootstrap" in markdown
    assert "Undefined (one class only among these images, left out of the mean): Hernia" in markdown
    assert (tmp_path / "out" / "compare.png").stat().st_size > 10_000


def test_a_finding_with_one_positive_is_not_tested():
    from hf_cxr_mae.evaluation.compare import compare_scores

    rng = np.random.default_rng(0)
    y = np.zeros((50, 2))
    y[:20, 0] = 1
    y[7, 1] = 1  # one positive: DeLong has no variance for it
    result = compare_scores(y, rng.random((50, 2)), rng.random((50, 2)), ["a", "b"], 100)
    single = result["findings"]["b"]
    assert single["p_value"] is None and single["ci95"] is None and "not tested" in single["note"]
    assert single["auroc_a"] is not None and result["findings"]["a"]["p_value"] is not None
    assert result["mean"]["findings"] == ["a", "b"]


def test_compare_refuses_unpaired_predictions_and_realigns_order(tmp_path):
    ids, *_ = _synthetic(tmp_path)
    b = pd.read_csv(tmp_path / "b.csv")
    b.drop(index=5).to_csv(tmp_path / "b_missing.csv", index=False)
    with pytest.raises(SystemExit, match=rf"image '/data/nih/{ids[5]}' is in A .* but not in B"):
        _compare(tmp_path, "a.csv", "b_missing.csv")
    other = b.copy()
    other.loc[7, "path"] = "/data/nih/images/99999999_000.png"
    other.to_csv(tmp_path / "b_other.csv", index=False)
    with pytest.raises(SystemExit, match=f"image '/data/nih/{ids[7]}' is in A"):
        _compare(tmp_path, "a.csv", "b_other.csv")
    doubled = pd.concat([b, b.iloc[[3]]])
    doubled.to_csv(tmp_path / "b_twice.csv", index=False)
    with pytest.raises(SystemExit, match="appears twice"):
        _compare(tmp_path, "a.csv", "b_twice.csv")
    # The same images in another order: re-aligned by id, the same numbers as in order.
    b.sample(frac=1, random_state=0).to_csv(tmp_path / "b_shuffled.csv", index=False)
    in_order = _compare(tmp_path, "a.csv", "b.csv", "ordered")
    shuffled = _compare(tmp_path, "a.csv", "b_shuffled.csv", "shuffled")
    assert shuffled["realigned"] and not in_order["realigned"]
    assert shuffled["findings"] == in_order["findings"]
    assert shuffled["mean"] == in_order["mean"]
    # Labels in another order are matched by image id too.
    labels = pd.read_csv(tmp_path / "labels.csv")
    labels.sample(frac=1, random_state=1).to_csv(tmp_path / "labels.csv", index=False)
    relabelled = _compare(tmp_path, "a.csv", "b.csv", "relabelled")
    assert relabelled["findings"] == in_order["findings"]


def test_compare_reads_predict_outputs(tmp_path):
    """predict's own writer (CSV and JSON lines, with a failed image) feeds compare; an image
    only one model failed on is refused by name."""
    from hf_cxr_mae.serving.predict import Prediction, ResultWriter

    ids, targets, a, b = _synthetic(tmp_path, n=120)
    paths = [f"/data/nih/{i}" for i in ids]
    outputs = [("pa.csv", a, [3]), ("pb.jsonl", b, [3]), ("pb_more.jsonl", b, [3, 9])]
    for name, probs, failed in outputs:
        writer = ResultWriter(tmp_path / name, NAMES)
        results = [
            Prediction(p, dict(zip(NAMES, map(float, row), strict=True)), flagged={})
            for k, (p, row) in enumerate(zip(paths, probs, strict=True))
            if k not in failed
        ]
        writer.write(results, [(paths[k], "cannot identify image file") for k in failed])
        writer.close()
    result = _compare(tmp_path, "pa.csv", "pb.jsonl")
    keep = (np.arange(120) != 3) & (targets[:, 0] != -1)
    assert result["num_images"] == 119
    assert result["findings"]["Atelectasis"]["auroc_b"] == pytest.approx(
        roc_auc_score(targets[keep, 0], b[keep, 0]), abs=1e-6
    )
    with pytest.raises(SystemExit, match=rf"image '/data/nih/{ids[9]}' is in A"):
        _compare(tmp_path, "pa.csv", "pb_more.jsonl")


def test_compare_labels_must_cover_every_predicted_image(tmp_path):
    _synthetic(tmp_path)
    labels = pd.read_csv(tmp_path / "labels.csv")
    labels.iloc[1:].to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(SystemExit, match=r"00000000_000.png' of .*a.csv has no label"):
        _compare(tmp_path)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """A tiny ViT classifier and a (slim) DenseNet-121 TimmWrapper with NIH's 14 findings."""
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    from hf_cxr_mae.configuration import CXRClassifierConfig
    from hf_cxr_mae.data import NIH14_LABELS
    from hf_cxr_mae.modeling import CXRViTForImageClassification

    root = tmp_path_factory.mktemp("compare_models")
    id2label = dict(enumerate(NIH14_LABELS))
    torch.manual_seed(0)
    vit = CXRViTForImageClassification(
        CXRClassifierConfig.from_preset("vit-test-patch8-dec32d1b", id2label=id2label)
    )
    with torch.no_grad():  # a head with spread-out logits, so AUROCs differ from 0.5
        vit.classifier.weight.normal_(0, 1.0)
    vit.save_pretrained(root / "vit")
    densenet = TimmWrapperForImageClassification(
        TimmWrapperConfig(
            architecture="densenet121",
            num_labels=14,
            id2label=id2label,
            problem_type="multi_label_classification",
            # timm's DenseNet class slimmed for the CPU test: same loading and transforms.
            model_args={"growth_rate": 8, "block_config": (1, 2, 2, 1)},
        )
    )
    densenet.save_pretrained(root / "densenet")
    return root / "vit", root / "densenet"


def test_compare_vit_against_densenet_on_nih_images(tmp_path, nih_dir, two_models):
    from hf_cxr_mae.serving.predict import predict_files

    vit, densenet = two_models
    out = tmp_path / "cmp"
    cli(
        [
            "compare", str(vit), str(densenet),
            "--dataset", "nih14", "--data_dir", str(nih_dir), "--image_dir", "images",
            "--check_images", "exists",
            "--split", "test", "--max_eval_samples", "8",
            "--output_dir", str(out), "--bootstrap_resamples", "50", "--batch_size", "3",
        ]
    )  # fmt: skip
    result = json.loads((out / "compare.json").read_text())
    assert result["num_images"] == 8
    a = pd.read_csv(out / "predictions_a.csv")
    b = pd.read_csv(out / "predictions_b.csv")
    labels = pd.read_csv(out / "labels.csv")
    assert a["image_id"].tolist() == b["image_id"].tolist() == labels["image_id"].tolist()
    # The compare loop scores as `predict` does (each model with its own eval transform).
    paths = [nih_dir / image for image in a["image_id"][:2]]
    for folder, frame in ((vit, a), (densenet, b)):
        results, failures = predict_files(load_classifier(str(folder)), paths, fast=False)
        assert not failures
        for row, res in zip(frame.iloc[:2].itertuples(index=False), results, strict=True):
            got = np.array([getattr(row, n) for n in res.probabilities])
            np.testing.assert_allclose(got, list(res.probabilities.values()), atol=1e-5)
    # The report's AUROCs are those of the written predictions.
    for name, entry in result["findings"].items():
        y = labels[name].to_numpy()
        if entry["difference"] is None:
            assert len(set(y)) == 1
            continue
        assert entry["auroc_a"] == pytest.approx(roc_auc_score(y, a[name]))
        assert entry["auroc_b"] == pytest.approx(roc_auc_score(y, b[name]))
    # The same comparison re-run from the written files (by the dataset's labels, this time).
    again = tmp_path / "again"
    cli(
        [
            "compare",
            "--predictions_a", str(out / "predictions_a.csv"),
            "--predictions_b", str(out / "predictions_b.csv"),
            "--dataset", "nih14", "--data_dir", str(nih_dir), "--image_dir", "images",
            "--check_images", "exists",
            "--output_dir", str(again), "--bootstrap_resamples", "50",
        ]
    )  # fmt: skip
    rerun = json.loads((again / "compare.json").read_text())
    tested = [n for n, e in result["findings"].items() if e["p_value"] is not None]
    assert tested
    for name in tested:
        assert rerun["findings"][name]["p_value"] == pytest.approx(
            result["findings"][name]["p_value"], rel=1e-6
        )


def test_compare_refuses_incomplete_arguments(tmp_path, two_models):
    vit, _ = two_models
    with pytest.raises(SystemExit, match="compare: give two models"):
        cli(["compare", str(vit), "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="Scoring two models needs --dataset"):
        cli(["compare", str(vit), str(vit), "--output_dir", str(tmp_path)])


def test_an_onnx_export_where_a_pytorch_model_is_needed_is_named(two_heads, tmp_path):
    # compare and export load PyTorch classifiers; an export folder used to fail deep in
    # transformers ("no file named model.safetensors").
    a, _ = two_heads
    export_onnx(a, tmp_path / "deploy")
    with pytest.raises(ValueError, match=r"deploy is an ONNX export.*PyTorch classifier folder"):
        load_classifier(str(tmp_path / "deploy"))


def test_compare_labels_file_may_carry_patient_metadata(tmp_path):
    # The test CSV a user trains from carries sex / age columns (metadata_columns); compare
    # --labels read every column as a finding and refused "label '45Y' is not 1, 0 or -1".
    rng = np.random.default_rng(0)
    ids = [f"img{i:03d}.png" for i in range(60)]
    targets = (rng.random((60, 2)) < 0.4).astype(int)
    for name, strength in (("a", 2.0), ("b", 1.0)):
        scores = 1 / (1 + np.exp(-(strength * targets + rng.normal(size=(60, 2)))))
        frame = pd.DataFrame(scores, columns=TWO_FINDINGS)
        frame.insert(0, "path", ids)
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    plain = pd.DataFrame(targets, columns=TWO_FINDINGS).assign(image_id=ids)
    plain.to_csv(tmp_path / "labels.csv", index=False)
    plain.assign(**{"Patient Age": "45Y", "Patient Gender": "M", "site": "north"}).to_csv(
        tmp_path / "labels_with_metadata.csv", index=False
    )
    results = [
        run_compare(
            tmp_path / labels.split(".")[0],
            predictions=[str(tmp_path / "a.csv"), str(tmp_path / "b.csv")],
            labels_file=str(tmp_path / labels),
            n_resamples=20,
        )
        for labels in ("labels.csv", "labels_with_metadata.csv")
    ]
    assert results[1]["findings"] == results[0]["findings"]
    assert list(results[1]["findings"]) == TWO_FINDINGS


RESAMPLES, SEED = 300, 5
SIX_NAMES = ["f0", "f1", "f2", "f3", "f4", "f5", "single", "absent"]


def holm_reference(p_values):
    """Holm 1979: sort ascending, multiply the i-th smallest (0-based) by m - i, make the
    sequence non-decreasing (running maximum), cap at 1, put back in the original order."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty_like(p)
    out[order] = stepped
    return out


def data(seed=0):
    """300 images, six findings of decreasing difference between A and B (p-values from tiny to
    large), one with a single positive (not tested) and one without positives (undefined);
    coarse scores (ties) and ignored targets."""
    rng = np.random.default_rng(seed)
    n = 300
    y = (rng.random((n, 8)) < 0.3).astype(float)
    y[rng.random((n, 8)) < 0.05] = -1
    y[:, 6] = np.where(y[:, 6] == -1, -1, 0)
    y[17, 6] = 1
    y[:, 7] = 0
    shared = rng.normal(size=(n, 8))
    gap = np.array([1.2, 0.6, 0.35, 0.25, 0.1, 0.0, 0.0, 0.0])
    a = np.round(1.5 * (y == 1) + shared, 1)
    b = np.round((1.5 - gap) * (y == 1) + 0.8 * shared + 0.6 * rng.normal(size=(n, 8)), 1)
    return y, a, b


@pytest.fixture(scope="module")
def compared():
    y, a, b = data()
    return compare_scores(y, a, b, SIX_NAMES, RESAMPLES, SEED)


@pytest.fixture(scope="module")
def draws():
    """Each model's AUROC per finding on the SAME resampled rows (a paired bootstrap)."""
    y, a, b = data()
    rows = np.random.default_rng(SEED).integers(0, len(y), size=(RESAMPLES, len(y)))
    da = np.array([[mann_whitney(y[r, j], a[r, j]) for j in range(8)] for r in rows])
    db = np.array([[mann_whitney(y[r, j], b[r, j]) for j in range(8)] for r in rows])
    return da, db


def test_per_finding_delong_and_paired_bootstrap(compared, draws):
    """Tested findings: DeLong's numbers as ``delong_test`` gives them, the bootstrap interval
    and standard error of the A - B difference over the same rows for both models."""
    y, a, b = data()
    da, db = draws
    for j, name in enumerate(SIX_NAMES[:6]):
        entry = compared["findings"][name]
        direct = delong_test(y[:, j], a[:, j], b[:, j])
        assert entry["auroc_a"] == direct.auc_a and entry["auroc_b"] == direct.auc_b
        assert entry["difference"] == direct.difference and entry["ci95"] == list(direct.ci)
        assert (entry["z"], entry["p_value"]) == (direct.z, direct.p_value)
        assert entry["delong_se"] == direct.variance**0.5
        differences = da[:, j] - db[:, j]
        differences = differences[np.isfinite(differences)]
        np.testing.assert_allclose(
            entry["bootstrap_ci95"], np.percentile(differences, [2.5, 97.5]), rtol=1e-12
        )
        assert entry["bootstrap_se"] == pytest.approx(np.std(differences, ddof=1), rel=1e-12)
        assert (entry["positives"], entry["negatives"]) == (
            int((y[:, j] == 1).sum()),
            int((y[:, j] == 0).sum()),
        )


def test_untested_and_undefined_findings(compared):
    """One positive: AUROCs and their difference reported, no interval, no p, no Holm value;
    no positive: everything None and the finding left out of the mean."""
    y, a, _ = data()
    single = compared["findings"]["single"]
    assert single["auroc_a"] == mann_whitney(y[:, 6], a[:, 6])
    assert single["difference"] == single["auroc_a"] - single["auroc_b"]
    assert single["p_value"] is None and single["ci95"] is None and "p_holm" not in single
    assert compared["findings"]["absent"]["auroc_a"] is None
    assert compared["undefined"] == ["absent"]


def test_holm_adjusts_the_tested_findings_only(compared):
    """p (Holm) of each tested finding equals the textbook adjustment over the six tested
    findings (m = 6, the untested one not counted); this example needs the running maximum."""
    tested = SIX_NAMES[:6]
    p = np.array([compared["findings"][n]["p_value"] for n in tested])
    raw = (6 - np.arange(6)) * np.sort(p)
    assert (np.diff(raw) < 0).any()  # without the running maximum the order would break
    assert p.min() < 0.01 and p.max() > 0.2 and (raw > 1).any()  # the cap at 1 is used too
    expected = holm_reference(p)
    got = np.array([compared["findings"][n]["p_holm"] for n in tested])
    np.testing.assert_allclose(got, expected, rtol=1e-14)


@pytest.mark.parametrize(
    "p_values, adjusted",
    [
        ([0.01, 0.04, 0.03, 0.005, None], [0.03, 0.06, 0.06, 0.02, None]),
        ([0.3, 0.4], [0.6, 0.6]),
        ([0.6, 0.7, 0.02], [1.0, 1.0, 0.06]),
        ([0.02, 0.02, 0.5], [0.06, 0.06, 0.5]),
        ([0.04], [0.04]),
    ],
)
def test_holm_on_hand_worked_p_values(p_values, adjusted):
    """Holm by hand: 4 x 0.005 = 0.02; 3 x 0.01 = 0.03; 2 x 0.03 = 0.06; 1 x 0.04 = 0.04 raised to
    0.06 (monotone); ties share the larger factor; products above 1 are 1."""
    findings = {f"f{i}": {"p_value": p} for i, p in enumerate(p_values)}
    _holm(findings)
    for i, expected in enumerate(adjusted):
        if expected is None:
            assert "p_holm" not in findings[f"f{i}"]
        else:
            assert findings[f"f{i}"]["p_holm"] == pytest.approx(expected, rel=1e-14)


def test_mean_auroc_difference_interval_and_p_value(compared, draws):
    """Mean AUROC over the findings defined here (the one-positive finding included): each
    model's mean, the difference, its percentile interval over the paired resamples' mean
    differences, the bootstrap standard error and p = 2 sf(|difference| / se)."""
    da, db = draws
    defined = list(range(7))
    mean = compared["mean"]
    assert mean["findings"] == SIX_NAMES[:7]
    auroc_a = np.mean([compared["findings"][SIX_NAMES[j]]["auroc_a"] for j in defined])
    auroc_b = np.mean([compared["findings"][SIX_NAMES[j]]["auroc_b"] for j in defined])
    assert mean["auroc_a"] == pytest.approx(auroc_a, rel=1e-15)
    assert mean["difference"] == pytest.approx(auroc_a - auroc_b, rel=1e-14)
    per_resample = np.array(
        [np.nanmean(ra[defined]) - np.nanmean(rb[defined]) for ra, rb in zip(da, db, strict=True)]
    )
    np.testing.assert_allclose(mean["ci95"], np.percentile(per_resample, [2.5, 97.5]), rtol=1e-12)
    se = np.std(per_resample, ddof=1)
    assert mean["bootstrap_se"] == pytest.approx(se, rel=1e-12)
    expected_p = 2 * norm.sf(abs(auroc_a - auroc_b) / se)
    assert 1e-6 < expected_p < 0.5  # a two-sided p that is neither 0 nor 1: the sides show
    assert mean["p_value"] == pytest.approx(expected_p, rel=1e-9)


def test_a_model_compared_with_itself():
    """Every difference 0, every interval [0, 0] (DeLong, paired bootstrap, mean), every p and
    Holm p exactly 1."""
    y, a, _ = data()
    result = compare_scores(y, a, a.copy(), SIX_NAMES, 100, SEED)
    for name in SIX_NAMES[:6]:
        entry = result["findings"][name]
        assert entry["difference"] == 0.0 and entry["ci95"] == [0.0, 0.0]
        assert entry["bootstrap_ci95"] == [0.0, 0.0] and entry["bootstrap_se"] == 0.0
        assert entry["p_value"] == 1.0 and entry["p_holm"] == 1.0
    mean = result["mean"]
    assert mean["difference"] == 0.0 and mean["ci95"] == [0.0, 0.0]
    assert mean["bootstrap_se"] == 0.0 and mean["p_value"] == 1.0


def test_a_level_reaches_every_interval():
    """level=0.9: DeLong's interval at 90% and the bootstrap intervals at the 5th / 95th
    percentile."""
    y, a, b = data()
    result = compare_scores(y, a, b, SIX_NAMES, 100, SEED, level=0.9)
    rows = np.random.default_rng(SEED).integers(0, len(y), size=(100, len(y)))
    d = np.array([mann_whitney(y[r, 0], a[r, 0]) - mann_whitney(y[r, 0], b[r, 0]) for r in rows])
    entry = result["findings"]["f0"]
    assert entry["ci95"] == list(delong_test(y[:, 0], a[:, 0], b[:, 0], level=0.9).ci)
    np.testing.assert_allclose(entry["bootstrap_ci95"], np.percentile(d, [5, 95]), rtol=1e-12)
    assert result["level"] == 0.9


def test_the_table_shows_each_number_in_its_column(compared):
    """compare.md: one row per finding with A, B, the difference, DeLong's interval, p, p (Holm)
    and the bootstrap interval, each from its own field of the result."""
    result = dict(compared, model_a="a.csv", model_b="b.csv", label_a="A", label_b="B")
    lines = markdown(result, SIX_NAMES).splitlines()
    for name in SIX_NAMES[:6]:
        e = result["findings"][name]
        row = next(line for line in lines if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]

        def p(v):
            return "< 0.001" if v < 0.001 else f"{v:.3f}"

        assert cells == [
            name,
            f"{e['auroc_a']:.3f}",
            f"{e['auroc_b']:.3f}",
            f"{e['difference']:+.3f}",
            f"[{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]",
            p(e["p_value"]),
            p(e["p_holm"]),
            f"[{e['bootstrap_ci95'][0]:+.3f}, {e['bootstrap_ci95'][1]:+.3f}]",
            f"{e['positives']} / {e['negatives']}",
        ]
    assert any(p(compared["findings"][n]["p_holm"]) != p(compared["findings"][n]["p_value"])
               for n in SIX_NAMES[:6])  # fmt: skip


def test_compare_reads_column_names_trimmed(tmp_path):
    """A header with a stray space (``Effusion `` in the labels, `` Hernia`` in a prediction
    file) dropped that finding from the comparison without a word in compare.md, the console
    blaming the prediction files. Headers of every CSV are compared trimmed: the comparison is
    the one of the clean files; two columns alike once trimmed are refused."""
    _synthetic(tmp_path)
    clean = run_compare(
        tmp_path / "clean", predictions=[str(tmp_path / "a.csv"), str(tmp_path / "b.csv")],
        labels_file=str(tmp_path / "labels.csv"), n_resamples=20,
    )  # fmt: skip
    labels = pd.read_csv(tmp_path / "labels.csv")
    labels.rename(columns={"Effusion": "Effusion ", "image_id": " image_id"}).to_csv(
        tmp_path / "labels_spaced.csv", index=False
    )
    a = pd.read_csv(tmp_path / "a.csv")
    a.rename(columns={"Hernia": " Hernia"}).to_csv(tmp_path / "a_spaced.csv", index=False)
    spaced = run_compare(
        tmp_path / "spaced",
        predictions=[str(tmp_path / "a_spaced.csv"), str(tmp_path / "b.csv")],
        labels_file=str(tmp_path / "labels_spaced.csv"), n_resamples=20,
    )  # fmt: skip
    assert list(spaced["findings"]) == NAMES
    assert spaced["findings"] == clean["findings"]
    assert spaced["left_out"] == {}
    assert "Left out" not in (tmp_path / "spaced" / "compare.md").read_text()
    a.assign(**{"Hernia ": a["Hernia"]}).to_csv(tmp_path / "a_twice.csv", index=False)
    with pytest.raises(ValueError) as err:
        run_compare(
            tmp_path / "twice",
            predictions=[str(tmp_path / "a_twice.csv"), str(tmp_path / "b.csv")],
            labels_file=str(tmp_path / "labels.csv"), n_resamples=20,
        )  # fmt: skip
    assert str(err.value) == (
        f"{tmp_path / 'a_twice.csv'}: columns 'Hernia' and 'Hernia ' are the same name 'Hernia' "
        "once surrounding spaces are removed."
    )


def test_a_finding_left_out_is_named_in_compare_md_blaming_the_file_without_it(tmp_path, caplog):
    """A finding some file has no column for is left out of the comparison: compare.md, compare.json
    and the console name it and the file that lacks it (the console blamed both prediction files
    when the labels lacked it, and compare.md said nothing)."""
    import logging

    _synthetic(tmp_path)
    labels = pd.read_csv(tmp_path / "labels.csv")
    labels.rename(columns={"Effusion": "Effusions"}).to_csv(tmp_path / "labels.csv", index=False)
    pd.read_csv(tmp_path / "b.csv").drop(columns="Hernia").to_csv(
        tmp_path / "b_fewer.csv", index=False
    )
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        result = _compare(tmp_path, "a.csv", "b_fewer.csv")
    where = f"the labels ({tmp_path / 'labels.csv'})"
    b = str(tmp_path / "b_fewer.csv")
    assert list(result["findings"]) == ["Atelectasis"]
    assert result["left_out"] == {"Effusion": [where], "Hernia": [b]}
    assert [r.getMessage() for r in caplog.records if "Left out" in r.getMessage()] == [
        f"Left out of the comparison, no column in {where}: ['Effusion']",
        f"Left out of the comparison, no column in {b}: ['Hernia']",
    ]
    assert (
        f"Left out (no column in every file): Effusion (not in {where}); Hernia (not in {b})."
        in (tmp_path / "out" / "compare.md").read_text().splitlines()
    )
