"""What fine-tuning fits on validation, never on test (``hf_cxr_mae.training.postprocess``):
temperature scaling folded into the saved model (lowering validation ECE) and operating points
that reproduce their target on validation; test labels never choose either."""

import json

import numpy as np
import pytest
import torch
from helpers import saved_config, sigmoid
from recipe_utils import TINY_TRAIN, recipe
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

DEMO = ["--demo_size", "48", "--pixel_cache", "false"]


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


def test_test_labels_never_choose_thresholds_or_temperatures(calibrated_runs):
    clean, poisoned = calibrated_runs["clean"], calibrated_runs["poisoned"]
    a, b = saved_config(clean), saved_config(poisoned)
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
    temperatures = saved_config(clean)["calibration"]["temperatures"]
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
    thresholds = saved_config(clean)["operating_points"]["thresholds"]
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
    config = saved_config(out)
    temperatures = config["calibration"]["temperatures"]
    assert set(temperatures) == {"NORMAL", "PNEUMONIA"} and len(set(temperatures.values())) == 1
    assert "operating_points" not in config  # thresholds are per finding: multi-label only
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_images"] == 12 and "confusion_matrix" in report
    assert set(report["calibration"]["ece"]) == {"NORMAL", "PNEUMONIA"}
    assert "operating_points" not in report


def test_a_fine_tune_from_a_thresholded_classifier_inherits_no_postprocessing(
    calibrated_runs, tmp_path
):
    """The source's thresholds and temperatures were fitted for its weights: a fine-tune from
    it that fits neither saves neither (before, its thresholds flagged the new model's images)."""
    source = saved_config(calibrated_runs["clean"])
    assert "operating_points" in source and "calibration" in source
    out = tmp_path / "again"
    recipe("finetune").main(
        [*TINY_TRAIN, *DEMO, "--model_name_or_path", str(calibrated_runs["clean"]),
         "--output_dir", str(out), "--max_steps", "1", "--eval_strategy", "no",
         "--save_strategy", "no", "--load_best_model_at_end", "false",
         "--operating_point", "none", "--bootstrap_resamples", "20"]
    )  # fmt: skip
    config = saved_config(out)
    assert "operating_points" not in config and "calibration" not in config
    assert "operating_points" not in json.loads((out / "metrics.json").read_text())
