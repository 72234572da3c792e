import json

import numpy as np
import pytest
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
    from conftest import NIH_SAMPLE

    if not NIH_SAMPLE.exists():
        pytest.skip(f"real data not found at {NIH_SAMPLE}")
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
    tta = tmp_path / "tta"
    cli(
        [
            "evaluate",
            "--model_name_or_path",
            str(nih_models["ft"]),
            *nih_models["data"],
            "--split",
            "test",
            "--output_dir",
            str(tta),
            "--tta",
            "ten_crop",
            "--bootstrap_resamples",
            "10",
            "--max_eval_samples",
            "12",
        ]
    )
    assert json.loads((tta / "metrics.json").read_text())["tta"] == "ten_crop"


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
    for row, source in zip(out["predictions"], [png, dicom, wide], strict=True):
        with Image.open(row["heatmaps"][0]) as heat:
            w, h = heat.size
        src_w, src_h = (1024, 1024) if source == dicom else Image.open(source).size
        assert abs(w / h - src_w / src_h) < 0.01
    _not_blank(out["predictions"][2]["heatmaps"][0])


def test_predict_refuses_an_encoder_without_head(nih_models, shared_data):
    png = shared_data / "nih-cxr14-sample" / "images" / "00000075_000.png"
    with pytest.raises(ValueError, match=r"without a classification head.*Fine-tune it first"):
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
