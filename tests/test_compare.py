"""``hf-cxr-mae compare``: the paired comparison of two models, from prediction files and from
checkpoints (a ViT and the DenseNet-121 baseline) scored on real NIH images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.metrics.delong import delong_test

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
    from hf_cxr_mae.compare import compare_scores

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
    from hf_cxr_mae.predict import Prediction, ResultWriter

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
    from hf_cxr_mae.predict import load_classifier, predict_files

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
