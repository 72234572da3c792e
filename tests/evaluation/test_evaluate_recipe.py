"""The evaluate recipe (``hf-cxr-mae evaluate``, ``hf_cxr_mae.training.evaluation``): the report on
real images, ten-crop test-time augmentation, the row-order check, an ONNX export named instead
of a transformers error, and a validation split of another size than fine-tuning's refused."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_not_blank, random_png

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.data import NIH14_LABELS
from hf_cxr_mae.training.evaluation import check_row_order


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


def test_evaluate_writes_the_report_on_real_images(nih_models, tmp_path):
    out = tmp_path / "ev"
    cli(
        [
            "evaluate",
            "--model_name_or_path",
            str(nih_models["ft"]),
            *nih_models["data"],
            "--split",
            "test",
            "--output_dir",
            str(out),
            "--bootstrap_resamples",
            "100",
        ]
    )
    report = json.loads((out / "metrics.json").read_text())
    assert report["split"] == "test" and report["num_images"] == 100 and len(report["auroc"]) == 14
    assert report["undefined"] == [n for n in NIH14_LABELS if report["positives"][n] == 0]
    for name, value in report["auroc"].items():
        if value is not None:
            low, high = report["auroc_ci95"][name]
            assert low <= value <= high
    assert_not_blank(out / "roc.png")
    assert "95% CI" in (out / "report.md").read_text()


def _crops_by_hand(image: np.ndarray, resize: int, size: int) -> torch.Tensor:
    """The ten crops written out: shortest side to ``resize`` (bicubic, antialiased, as the eval
    transform), the four corners and the centre, then the same five of the mirrored image."""
    from torchvision.transforms.v2 import functional as TF

    resized = TF.resize(
        torch.from_numpy(image.copy())[None],
        resize,
        interpolation=TF.InterpolationMode.BICUBIC,
        antialias=True,
    )
    crops = []
    for x in (resized, resized.flip(-1)):
        h, w = x.shape[-2:]
        top, left = round((h - size) / 2), round((w - size) / 2)
        for i, j in [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (top, left)]:
            crops.append(x[:, i : i + size, j : j + size])
    return torch.stack(crops).float() / 255


def test_ten_crop_tta_averages_the_ten_crops(nih_models, tmp_path, monkeypatch):
    from conftest import NIH_SAMPLE
    from transformers import AutoModelForImageClassification

    from hf_cxr_mae.data import load_cxr_dataset
    from hf_cxr_mae.data.cache import build_cache
    from hf_cxr_mae.evaluation import reports

    model = AutoModelForImageClassification.from_pretrained(nih_models["ft"]).eval()
    logits = {}
    original = reports.write_report

    def spy(output_dir, predicted, *args, **kwargs):
        logits[Path(output_dir).name] = np.asarray(predicted, dtype=np.float64)
        return original(output_dir, predicted, *args, **kwargs)

    monkeypatch.setattr(reports, "write_report", spy)
    for name, tta in (("single", []), ("tta", ["--tta", "ten_crop"])):
        cli(
            ["evaluate", "--model_name_or_path", str(nih_models["ft"]), *nih_models["data"], "--split", "test",
             "--output_dir", str(tmp_path / name), "--bootstrap_resamples", "10", "--max_eval_samples", "12", "--bf16", "false", *tta]
        )  # fmt: skip
    assert json.loads((tmp_path / "tta" / "metrics.json").read_text())["tta"] == "ten_crop"
    # Independently (fp32 on both sides: bf16 autocast would blur the comparison to ~1e-2): the
    # same 12 cached test images, cropped by hand, through the saved model.
    test = load_cxr_dataset("nih14", NIH_SAMPLE, image_dir="images")["test"].select(range(12))
    cached = build_cache(test, size=80, cache_dir=nih_models["root"] / "cache")
    config = model.config
    resize = round(config.image_size / config.crop_pct)
    mean, std = config.image_mean[0], config.image_std[0]
    expected_tta, expected_single = [], []
    for row in cached:
        pixels = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"])
        crops = ((_crops_by_hand(pixels, resize, config.image_size) - mean) / std).expand(
            -1, 3, -1, -1
        )
        with torch.no_grad():
            out = model(pixel_values=crops).logits.double()
        expected_tta.append(out.mean(0).numpy())
        expected_single.append(out[4].numpy())  # the centre crop: plain evaluation
    np.testing.assert_allclose(logits["single"], np.stack(expected_single), atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits["tta"], np.stack(expected_tta), atol=1e-4, rtol=0)
    # ... and the flag changed the answer: far more than the tolerance above.
    assert np.abs(logits["tta"] - logits["single"]).max() > 0.05


def test_evaluate_names_an_onnx_export_instead_of_a_transformers_oserror(tmp_path):
    from hf_cxr_mae.training.arguments import DataArguments, EvaluateArguments, ModelArguments
    from hf_cxr_mae.training.evaluation import run_evaluate

    folder = tmp_path / "exported"
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model.onnx").write_bytes(b"not a real graph")
    (folder / "config.json").write_text(
        '{"model_type": "beit", "architectures": ["BeitForImageClassification"]}'
    )
    args = EvaluateArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="ONNX export"):
        run_evaluate(ModelArguments(model_name_or_path=str(folder)), DataArguments(), args)


def test_evaluating_validation_with_another_validation_size_than_the_fine_tuning_is_refused(
    tmp_path,
):
    """The carved validation split depends on validation_size: evaluating 'validation' with
    another size would score images the model was trained on. Real data is split with the
    loaders' fixed seed, so another --seed is accepted and gives the same images."""
    from recipe_utils import TINY_TRAIN, recipe

    rows = ["path,A"]
    for k in range(12):
        random_png(tmp_path / "data" / f"{k}.png", k, 64)
        rows.append(f"{k}.png,{k % 2}")
    (tmp_path / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    data = ["--dataset", "csv", "--data_dir", str(tmp_path / "data")]
    model = tmp_path / "ft"
    recipe("finetune").main(
        [*TINY_TRAIN, *data, "--validation_size", "4", "--output_dir", str(model),
         "--max_steps", "1", "--seed", "0", "--eval_strategy", "no", "--save_strategy", "no",
         "--load_best_model_at_end", "false", "--pixel_cache", "false", "--model_name_or_path", ""]
    )  # fmt: skip
    evaluate = [*data, "--model_name_or_path", str(model), "--split", "validation",
                "--pixel_cache", "false", "--bootstrap_resamples", "0", "--report_to", "none"]  # fmt: skip
    with pytest.raises(ValueError, match=r"fine-tuned with --validation_size 4"):
        recipe("evaluate_model").main(
            [*evaluate, "--validation_size", "3", "--output_dir", str(tmp_path / "e1")]
        )
    reports = [
        recipe("evaluate_model").main(
            [
                *evaluate,
                "--validation_size",
                "4",
                "--seed",
                seed,
                "--output_dir",
                str(tmp_path / seed),
            ]
        )
        for seed in ("0", "42")
    ]
    assert reports[0]["num_images"] == reports[1]["num_images"] == 4
    assert reports[0]["mauc"] == reports[1]["mauc"]  # the same validation images
    # The loaders' split seed carves the split too: another one is refused, the same accepted.
    with pytest.raises(ValueError, match=r"fine-tuned with --split_seed None"):
        recipe("evaluate_model").main(
            [*evaluate, "--validation_size", "4", "--split_seed", "1", "--output_dir", str(tmp_path / "e2")]
        )
    # Fine-tuned with the loader's defaults (validation_size 0.1, split seed 0): giving those
    # same values explicitly is the same split, not a refusal.
    default = tmp_path / "ft_default"
    recipe("finetune").main(
        [*TINY_TRAIN, *data, "--output_dir", str(default), "--max_steps", "1", "--eval_strategy",
         "no", "--save_strategy", "no", "--load_best_model_at_end", "false", "--pixel_cache",
         "false", "--model_name_or_path", ""]
    )  # fmt: skip
    explicit = recipe("evaluate_model").main(
        [*data, "--model_name_or_path", str(default), "--split", "validation", "--pixel_cache",
         "false", "--bootstrap_resamples", "0", "--report_to", "none", "--validation_size", "0.1",
         "--split_seed", "0", "--output_dir", str(tmp_path / "e3")]
    )  # fmt: skip
    assert explicit["num_images"] >= 1


def test_a_csv_with_the_models_findings_in_another_order_is_matched_by_name(tmp_path):
    """A hospital CSV naming exactly the model's 14 findings comes back sorted by the CSV loader:
    the same names in another order are matched by name, not refused as another source's labels
    (and not paired by position: Hernia's 3 positives stay Hernia's)."""
    from helpers import save_classifier, tiny_classifier

    model = save_classifier(tiny_classifier(NIH14_LABELS, head_std=2.0), tmp_path / "m")
    cells = [*NIH14_LABELS, "Hernia|Mass", "Hernia", "No Finding"]
    lines = ["path,findings,pid"]
    for i, cell in enumerate(cells):
        random_png(tmp_path / "hosp" / f"img/{i}.png", seed=i)
        lines.append(f"img/{i}.png,{cell},p{i}")
    (tmp_path / "hosp" / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "ev"
    cli(["evaluate", "--model_name_or_path", str(model), "--dataset", "csv", "--data_dir",
         str(tmp_path / "hosp"), "--label_column", "findings", "--split", "all", "--output_dir", str(out), "--report_to", "none",
         "--dataloader_num_workers", "0", "--bootstrap_resamples", "20", "--pixel_cache",
         "false", "--bf16", "false"])  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    expected = {name: 1 for name in NIH14_LABELS} | {"Hernia": 3, "Mass": 2}
    assert report["positives"] == expected and list(report["positives"]) == NIH14_LABELS
    assert report["num_images"] == len(cells)
