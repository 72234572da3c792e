"""Clinical post-processing end to end: temperature scaling folded into the head, operating points
chosen on validation only, and the subgroup / calibration / operating-point sections of the
evaluation report and the model card (issue 15, items 2, 3, 4 and 6)."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from recipe_utils import TINY_TRAIN, recipe
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score
from transformers import AutoModelForImageClassification

from hf_cxr_mae.configuration import CXRClassifierConfig
from hf_cxr_mae.data import NIH14_LABELS
from hf_cxr_mae.modeling import CXRViTForImageClassification
from hf_cxr_mae.processing import flagged_findings, fold_temperature
from hf_cxr_mae.training.evaluation import check_row_order

TINY = "vit-test-patch8-dec32d1b"
DEMO = ["--demo_size", "48", "--pixel_cache", "false"]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_folded_temperature_equals_dividing_the_logits_and_loads_natively(tmp_path):
    names = ["A", "B", "C"]
    model = CXRViTForImageClassification(
        CXRClassifierConfig.from_preset(TINY, id2label=dict(enumerate(names)))
    ).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        model.classifier.bias.copy_(torch.tensor([0.3, -1.0, 2.0]))
    pixels = torch.randn(5, 3, model.config.image_size, model.config.image_size)
    with torch.no_grad():
        before = model(pixel_values=pixels).logits.double().numpy()
    temperatures = {"A": 2.5, "B": 0.4, "C": 1.0}
    fold_temperature(model, temperatures)
    model.save_pretrained(tmp_path)

    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "BeitForImageClassification"  # no remote code, no subclass
    with torch.no_grad():
        after = torch.sigmoid(loaded(pixel_values=pixels).logits).double().numpy()
    t = np.array([temperatures[n] for n in names])
    np.testing.assert_allclose(after, sigmoid(before / t), atol=1e-6, rtol=0)
    assert loaded.config.calibration == {
        "method": "temperature",
        "fitted_on": "validation",
        "temperatures": temperatures,
    }
    with pytest.raises(ValueError, match="missing"):
        fold_temperature(model, {"A": 1.0})
    with pytest.raises(ValueError, match="invalid"):
        fold_temperature(model, {"A": 1.0, "B": 0.0, "C": 1.0})


def test_single_label_temperature_recovers_a_known_overconfidence():
    from hf_cxr_mae.training.postprocess import fit_temperatures

    rng = np.random.default_rng(0)
    calibrated = rng.normal(0, 1.5, (20000, 3))
    p = np.exp(calibrated) / np.exp(calibrated).sum(1, keepdims=True)
    classes = np.array([rng.choice(3, p=row) for row in p])
    # Logits three times too large: the fitted T undoes it (one T shared by every class).
    fitted = fit_temperatures(
        3 * calibrated, classes, ["a", "b", "c"], "single_label_classification"
    )
    assert set(fitted.values()) == {fitted["a"]} and fitted["a"] == pytest.approx(3, rel=0.05)


def test_flagged_findings_uses_the_stored_thresholds():
    config = CXRClassifierConfig.from_preset(TINY, id2label=dict(enumerate("ABC")))
    assert flagged_findings(config, {"A": 0.9}) is None  # no operating points stored
    config.operating_points = {
        "method": "youden",
        "target": None,
        "fitted_on": "validation",
        "thresholds": {"A": 0.5, "B": 0.2, "C": None},
    }
    flags = flagged_findings(config, {"A": 0.5, "B": 0.1999, "C": 0.99})
    assert flags == {"A": True, "B": False}  # >= threshold; C had none on validation


def test_row_order_check_catches_predictions_paired_with_other_images():
    from datasets import Dataset

    rows = [{"A": 1.0, "B": 0.0}, {"A": 0.0, "B": 1.0}, {"A": 1.0, "B": 1.0}]
    dataset = Dataset.from_dict({"labels": rows, "sex": ["F", "M", "F"]})
    labels = np.array([[r["A"], r["B"]] for r in rows])
    check_row_order(labels, dataset, ["A", "B"], "multi_label_classification")
    with pytest.raises(RuntimeError, match="not in row order"):
        check_row_order(labels[[1, 0, 2]], dataset, ["A", "B"], "multi_label_classification")
    with pytest.raises(RuntimeError, match="not in row order"):
        check_row_order(labels[:2], dataset, ["A", "B"], "multi_label_classification")


def _test_split_of(monkeypatch, poison: bool):
    """The test split cut to its first 80 images (validation keeps 96: the choice functions'
    inputs tell the two apart), and with ``poison`` every test label flipped, before the run
    sees the data."""
    from hf_cxr_mae.training import run_setup

    original = run_setup.load_labelled_data

    def load(data_args, seed):
        data = original(data_args, seed)
        data["test"] = data["test"].select(range(80))
        if poison:
            flip = lambda row: {k: 1.0 - v for k, v in row["labels"].items()}  # noqa: E731
            data["test"] = data["test"].map(lambda row: {"labels": flip(row)})
        return data

    monkeypatch.setattr(run_setup, "load_labelled_data", load)


@pytest.fixture(scope="module")
def calibrated_runs(tmp_path_factory):
    """The same demo fine-tune twice, the second with every test label flipped; the choice
    functions instrumented to record how many images they were handed."""
    from hf_cxr_mae.training import postprocess

    root = tmp_path_factory.mktemp("clinical")
    args = [
        *TINY_TRAIN, *DEMO, "--model_name_or_path", "", "--max_steps", "3", "--blr", "0.64",
        "--warmup_epochs", "0", "--layer_decay", "1.0", "--weight_decay", "0",
        "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "3",
        "--load_best_model_at_end", "false", "--temperature_scaling",
        "--operating_point", "sensitivity", "--operating_target", "0.9",
        "--bootstrap_resamples", "50",
    ]  # fmt: skip
    seen = []
    with pytest.MonkeyPatch.context() as mp:
        for name in ("fit_temperature", "choose_threshold"):
            original = getattr(postprocess, name)

            def spy(targets_or_logits, *rest, _original=original, _name=name, **kw):
                seen.append((_name, len(targets_or_logits)))
                return _original(targets_or_logits, *rest, **kw)

            mp.setattr(postprocess, name, spy)
        clean, poisoned = root / "clean", root / "poisoned"
        _test_split_of(mp, poison=False)
        metrics = recipe("finetune").main([*args, "--output_dir", str(clean)])
        _test_split_of(mp, poison=True)
        recipe("finetune").main([*args, "--output_dir", str(poisoned)])
    return {"clean": clean, "poisoned": poisoned, "seen": seen, "metrics": metrics, "args": args}


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_test_labels_never_choose_thresholds_or_temperatures(calibrated_runs):
    clean, poisoned = calibrated_runs["clean"], calibrated_runs["poisoned"]
    a, b = _config(clean), _config(poisoned)
    assert a["operating_points"]["fitted_on"] == "validation"
    assert a["operating_points"]["method"] == "sensitivity"
    assert a["operating_points"]["target"] == 0.9
    assert a["calibration"]["fitted_on"] == "validation"
    # Poisoned test labels: identical thresholds and temperatures (to the bit) ...
    assert a["operating_points"] == b["operating_points"]
    assert a["calibration"] == b["calibration"]
    # ... while the poison did reach the test metrics (each AUROC mirrored: 1 - AUROC).
    ma = json.loads((clean / "metrics.json").read_text())
    mb = json.loads((poisoned / "metrics.json").read_text())
    for name, value in ma["auroc"].items():
        if value is not None:
            assert mb["auroc"][name] == pytest.approx(1 - value, abs=1e-9), name
    # Instrumented: every choice saw the validation split's 96 images, never test's 80.
    validation_size = ma["fitted_on_validation"]["num_images"]
    assert validation_size == 96 and ma["num_images"] == 80
    assert calibrated_runs["seen"], "the choice functions were never called"
    assert {n for _, n in calibrated_runs["seen"]} == {validation_size}


def test_temperature_is_folded_into_the_saved_model_and_lowers_validation_ece(calibrated_runs):
    clean = calibrated_runs["clean"]
    report = json.loads((clean / "metrics.json").read_text())
    fitted = report["fitted_on_validation"]["temperature_scaling"]
    assert fitted["mean_ece_after"] < fitted["mean_ece_before"], fitted
    temperatures = _config(clean)["calibration"]["temperatures"]
    assert temperatures == fitted["temperatures"]
    assert any(abs(t - 1) > 0.05 for t in temperatures.values()), temperatures
    # The weights saved at the last step (unfolded) against the final, folded model.
    names = list(temperatures)
    unfolded = AutoModelForImageClassification.from_pretrained(clean / "checkpoint-3").eval()
    folded = AutoModelForImageClassification.from_pretrained(clean).eval()
    weights = load_file(clean / "model.safetensors")
    assert not torch.equal(weights["classifier.weight"], unfolded.classifier.weight)
    pixels = torch.randn(4, 3, folded.config.image_size, folded.config.image_size)
    with torch.no_grad():
        raw = unfolded(pixel_values=pixels).logits.double().numpy()
        calibrated = torch.sigmoid(folded(pixel_values=pixels).logits).double().numpy()
    t = np.array([temperatures[n] for n in names])
    np.testing.assert_allclose(calibrated, sigmoid(raw / t), atol=1e-6, rtol=0)
    # The run's test report is on the calibrated model and says so.
    assert report["calibration"]["temperature_scaling"]["temperatures"] == temperatures
    card = (clean / "README.md").read_text()
    assert "temperature-scaled" in card and "### Calibration (measured on the test split)" in card
    assert "### Operating points" in card and "sensitivity >= 0.9" in card


def test_thresholds_reproduce_their_target_sensitivity_on_validation(calibrated_runs, tmp_path):
    clean = calibrated_runs["clean"]
    thresholds = _config(clean)["operating_points"]["thresholds"]
    assert all(t is not None for t in thresholds.values()), thresholds
    out = tmp_path / "eval"
    recipe("evaluate_model").main(
        ["--model_name_or_path", str(clean), *DEMO, "--split", "validation", "--output_dir",
         str(out), "--report_to", "none", "--bootstrap_resamples", "20",
         "--dataloader_num_workers", "0", "--per_device_eval_batch_size", "16"]
    )  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_images"] == 96
    rates = report["operating_points"]["rates"]
    for name, threshold in thresholds.items():
        assert rates[name]["threshold"] == threshold
        assert rates[name]["sensitivity"]["value"] >= 0.9, (name, rates[name])
        # Every labelled positive of the split is counted at the threshold.
        assert rates[name]["tp"] + rates[name]["fn"] == report["positives"][name]
    markdown = (out / "report.md").read_text()
    assert "## Operating points" in markdown and "## Calibration" in markdown
    assert "![reliability.png](reliability.png)" in markdown


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
    from hf_cxr_mae import reports
    from hf_cxr_mae.data import load_cxr_dataset

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
    thresholds = _config(ft)["operating_points"]["thresholds"]
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


def test_single_label_run_scales_one_temperature_and_stores_no_thresholds(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in {"train": 8, "val": 6, "test": 6}.items():
        for k, cls in enumerate(("NORMAL", "PNEUMONIA")):
            folder = tmp_path / "set" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):  # class-dependent brightness: something to learn
                pixels = rng.integers(0, 120, (48, 48)) + 100 * k
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "out"
    recipe("finetune").main(
        [*TINY_TRAIN, "--dataset", "imagefolder", "--data_dir", str(tmp_path / "set"),
         "--model_name_or_path", "", "--pixel_cache", "false", "--output_dir", str(out),
         "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no",
         "--load_best_model_at_end", "false", "--temperature_scaling",
         "--bootstrap_resamples", "20"]
    )  # fmt: skip
    config = _config(out)
    temperatures = config["calibration"]["temperatures"]
    assert set(temperatures) == {"NORMAL", "PNEUMONIA"} and len(set(temperatures.values())) == 1
    assert "operating_points" not in config  # thresholds are per finding: multi-label only
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_images"] == 12 and "confusion_matrix" in report
    assert set(report["calibration"]["ece"]) == {"NORMAL", "PNEUMONIA"}
    assert "operating_points" not in report


@pytest.mark.parametrize("flag", [{"temperature_scaling": True}, {"operating_point": "youden"}])
def test_linear_probe_refuses_postprocessing_it_would_drop(tmp_path, flag):
    from hf_cxr_mae.training.arguments import LinprobeArguments

    with pytest.raises(ValueError, match="fine-tuning options"):
        LinprobeArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **flag)
    assert (
        LinprobeArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none").operating_point
        == "none"
    )
