import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from recipe_utils import TINY_TRAIN, recipe
from sklearn.metrics import roc_auc_score

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.data import NIH14_LABELS
from hf_cxr_mae.reports import write_report


def _not_blank(path):
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
        assert image.width > 200 and image.height > 100, image.size
    assert pixels.std() > 5, f"{path} looks blank"


@pytest.fixture(scope="module")
def nih_models(tmp_path_factory):
    from conftest import NIH_SAMPLE, _require

    _require(NIH_SAMPLE)  # skips, or fails under CI=true, when the shared data is missing
    root = tmp_path_factory.mktemp("nih_models")
    data = [
        "--dataset",
        "nih14",
        "--data_dir",
        str(NIH_SAMPLE),
        "--image_dir",
        "images",
        "--cache_dir",
        str(root / "cache"),
        "--cache_size",
        "80",
    ]
    mae, ft = root / "mae", root / "ft"
    recipe("pretrain").main(
        [
            *TINY_TRAIN,
            *data,
            "--output_dir",
            str(mae),
            "--max_steps",
            "2",
            "--max_train_samples",
            "32",
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
        ]
    )
    recipe("finetune").main(
        [
            *TINY_TRAIN,
            *data,
            "--model_name_or_path",
            str(mae),
            "--output_dir",
            str(ft),
            "--max_steps",
            "2",
            "--max_train_samples",
            "32",
            "--max_eval_samples",
            "8",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
        ]
    )
    # Two steps leave the head near zero (every probability ~0.5); spread it out so a finding's
    # number tells it apart from the others (a label-order mix-up would then show).
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(ft)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    model.save_pretrained(ft)
    return {"mae": mae, "ft": ft, "data": data, "root": root}


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
    _not_blank(tmp_path / "roc.png")


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
    _not_blank(tmp_path / "confusion_matrix.png")


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
    _not_blank(out / "roc.png")
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

    from hf_cxr_mae import reports
    from hf_cxr_mae.data import load_cxr_dataset
    from hf_cxr_mae.data.cache import build_cache

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


def test_predict_png_dicom_heatmaps_and_bad_files(nih_models, shared_data, tmp_path, capsys):
    png = shared_data / "nih-cxr14-sample" / "images" / "00000075_000.png"
    wide = tmp_path / "wide.png"
    Image.open(png).convert("L").crop((0, 60, 512, 420)).save(wide)  # 512 x 360, not square
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    dicom = shared_data / "dicom" / "siim-cr-chest-pa-monochrome2.dcm"
    with pytest.raises(SystemExit) as exit_info:
        cli(
            [
                "predict",
                "--model",
                str(nih_models["ft"]),
                str(png),
                str(dicom),
                str(wide),
                str(broken),
                "--json",
                "--heatmap",
                str(tmp_path / "hm"),
                "--heatmap_top",
                "2",
            ]
        )
    assert exit_info.value.code == 2  # some images failed, the rest were predicted
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [p["path"] for p in out["predictions"]] == [str(png), str(dicom), str(wide)]
    for row in out["predictions"]:
        assert list(row["probabilities"]) == NIH14_LABELS
        assert all(0 <= v <= 1 for v in row["probabilities"].values())
        assert len(row["heatmaps"]) == 2
    assert out["failures"][0]["path"] == str(broken) and "broken.png" in captured.err
    # The PNG's numbers are the saved model's sigmoids (plain transformers; predict runs bf16).
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_cxr_mae.data.images import read_xray

    model = AutoModelForImageClassification.from_pretrained(nih_models["ft"]).eval()
    inputs = AutoImageProcessor.from_pretrained(nih_models["ft"])(
        read_xray(png), return_tensors="pt"
    )
    with torch.no_grad():
        expected = torch.sigmoid(model(**inputs).logits)[0].tolist()
    shown = [out["predictions"][0]["probabilities"][n] for n in NIH14_LABELS]
    np.testing.assert_allclose(shown, expected, atol=5e-3, rtol=0)
    assert max(expected) - min(expected) > 0.2  # far apart: a mix-up could not hide in 5e-3
    for row, source in zip(out["predictions"], [png, dicom, wide], strict=True):
        with Image.open(row["heatmaps"][0]) as heat:
            w, h = heat.size
        src_w, src_h = (1024, 1024) if source == dicom else Image.open(source).size
        assert abs(w / h - src_w / src_h) < 0.01
    _not_blank(out["predictions"][2]["heatmaps"][0])


def test_predict_refuses_an_encoder_without_head(nih_models, shared_data):
    png = shared_data / "nih-cxr14-sample" / "images" / "00000075_000.png"
    # A message from the CLI (SystemExit), not a traceback.
    with pytest.raises(SystemExit, match=r"predict: .*without a classification head.*Fine-tune"):
        cli(["predict", "--model", str(nih_models["mae"]), str(png)])


def test_reconstruct_writes_four_panels(nih_models, shared_data, tmp_path):
    images = sorted((shared_data / "nih-cxr14-sample" / "images").glob("*.png"))[:2]
    out = tmp_path / "rec.png"
    cli(
        [
            "reconstruct",
            "--model",
            str(nih_models["mae"]),
            *map(str, images),
            "--mask-ratio",
            "0.9",
            "--out",
            str(out),
        ]
    )
    with Image.open(out) as figure:
        w, h = figure.size
    panel = 64 * 4  # the tiny model's 64 px, shown at 4x
    assert w == 4 * panel + 3 * 2 and h == 14 + 2 * (panel + 2)
    _not_blank(out)
    with pytest.raises(ValueError, match="mask-ratio"):
        cli(
            [
                "reconstruct",
                "--model",
                str(nih_models["mae"]),
                str(images[0]),
                "--mask-ratio",
                "1.0",
            ]
        )
    with pytest.raises(ValueError, match="not a full MAE"):
        cli(["reconstruct", "--model", str(nih_models["ft"]), str(images[0])])
