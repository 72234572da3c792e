"""A careless user's mistakes with export, predict and compare that used to give another model's
numbers silently: an export folder reused for a second model, a prediction file reused for a
second model."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import save_classifier, tiny_classifier
from PIL import Image

from hf_cxr_mae import CXRViTForImageClassification
from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.compare import load_model as compare_load_model
from hf_cxr_mae.compare import run_compare
from hf_cxr_mae.export import export_onnx, synthetic_check_images
from hf_cxr_mae.onnx_runtime import OnnxClassifier
from hf_cxr_mae.predict import load_model, predict_files, predict_to_file
from hf_cxr_mae.prediction_files import read_predictions

LABELS = ["Atelectasis", "Effusion"]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two classifiers with the same findings and backbone but different heads."""
    folder = tmp_path_factory.mktemp("models")
    a = save_classifier(tiny_classifier(LABELS), folder / "a")
    b = save_classifier(tiny_classifier(LABELS, head_std=3.0), folder / "b")
    return a, b


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (64, 64), np.uint8)).save(folder / f"x{i}.png")
    return sorted(folder.glob("*.png"))


def test_export_of_another_model_into_a_used_folder_drops_the_old_int8_graph(two_models, tmp_path):
    # The user exports model A with int8, then model B (fp32 only) into the same folder: predict
    # picks the fastest graph present, which was A's int8 beside B's config.
    a, b = two_models
    out = tmp_path / "deploy"
    export_onnx(a, out, int8="dynamic")
    export_onnx(b, out)
    onnx_model = OnnxClassifier(out)
    pixels = synthetic_check_images(onnx_model.config, 4)
    with torch.no_grad():
        expected = CXRViTForImageClassification.from_pretrained(b).eval()(
            pixel_values=torch.from_numpy(pixels)
        )
    assert onnx_model.variant == "fp32"
    np.testing.assert_allclose(
        onnx_model(torch.from_numpy(pixels)).numpy(), expected.logits.numpy(), atol=1e-4
    )


def test_export_of_the_same_model_keeps_its_other_graphs(two_models, tmp_path):
    a, _ = two_models
    out = tmp_path / "deploy"
    export_onnx(a, out, int8="dynamic")
    export_onnx(a, out)
    assert OnnxClassifier(out).variant == "int8 dynamic"


def test_prediction_file_of_one_model_is_not_resumed_by_another(two_models, images, tmp_path):
    # Rerunning predict with another model and the same --output used to report every image as
    # "already in" the file and keep model A's probabilities as if they were B's.
    a, b = two_models
    output = tmp_path / "predictions.csv"
    predict_to_file(load_model(str(a)), images[:3], output, fast=False, progress=False)
    with pytest.raises(ValueError, match=r"predictions.csv.*other model"):
        predict_to_file(load_model(str(b)), images, output, fast=False, progress=False)
    # The same model resumes as before.
    assert predict_to_file(load_model(str(a)), images, output, fast=False, progress=False) == (
        2,
        0,
        3,
    )


def test_resume_recognises_the_same_images_given_by_another_path(
    two_models, images, tmp_path, monkeypatch
):
    # First run with absolute paths, the rerun from the images' folder with relative ones: the
    # images already predicted used to be predicted again and written twice (compare then
    # refuses the file).
    a, _ = two_models
    model = load_model(str(a))
    output = tmp_path / "predictions.csv"
    predict_to_file(model, images[:3], output, fast=False, progress=False)
    monkeypatch.chdir(images[0].parent)
    relative = [type(p)(p.name) for p in images]
    assert predict_to_file(model, relative, output, fast=False, progress=False) == (2, 0, 3)


def test_an_onnx_export_where_a_pytorch_model_is_needed_is_named(two_models, tmp_path):
    # compare and export load PyTorch classifiers; an export folder used to fail deep in
    # transformers ("no file named model.safetensors").
    a, _ = two_models
    export_onnx(a, tmp_path / "deploy")
    with pytest.raises(ValueError, match=r"deploy is an ONNX export.*PyTorch classifier folder"):
        compare_load_model(str(tmp_path / "deploy"))


def test_prediction_csv_keeps_the_probabilities_as_predicted(two_models, images, tmp_path):
    # A confident model's probabilities near 0 (B's Effusion: 3e-10 to 6e-7) were written with 6
    # decimals: they became 0.000000 and compare, reading the file, ranked them as ties (another
    # AUROC than the model's). The CSV now holds every float32 probability exactly, as .jsonl.
    _, b = two_models
    model = load_model(str(b))
    expected, _ = predict_files(model, images, fast=False)
    output = tmp_path / "predictions.csv"
    predict_to_file(model, images, output, fast=False, progress=False)
    written = read_predictions(output)
    assert written.ids == [r.path for r in expected]
    table = np.array([[r.probabilities[n] for n in LABELS] for r in expected], dtype=np.float32)
    assert (table < 5e-7).any() or (table > 1 - 5e-7).any()  # the case that lost its ranks
    np.testing.assert_array_equal(written.probabilities.astype(np.float32), table)


def test_compare_labels_file_may_carry_patient_metadata(tmp_path):
    # The test CSV a user trains from carries sex / age columns (metadata_columns); compare
    # --labels read every column as a finding and refused "label '45Y' is not 1, 0 or -1".
    rng = np.random.default_rng(0)
    ids = [f"img{i:03d}.png" for i in range(60)]
    targets = (rng.random((60, 2)) < 0.4).astype(int)
    for name, strength in (("a", 2.0), ("b", 1.0)):
        scores = 1 / (1 + np.exp(-(strength * targets + rng.normal(size=(60, 2)))))
        frame = pd.DataFrame(scores, columns=LABELS)
        frame.insert(0, "path", ids)
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    plain = pd.DataFrame(targets, columns=LABELS).assign(image_id=ids)
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
    assert list(results[1]["findings"]) == LABELS


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_after_a_row_cut_short(two_models, images, tmp_path, suffix):
    # A run killed in the middle of writing a row leaves half a line: the resume counted that
    # image as done (CSV) and appended the next row onto the same line, a file compare refuses.
    a, _ = two_models
    model = load_model(str(a))
    output = tmp_path / f"predictions{suffix}"
    predict_to_file(model, images[:3], output, fast=False, progress=False)
    text = output.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    output.write_text(text[: len(text) - len(last) - 1 + len(last) // 2])  # half the last row
    assert predict_to_file(model, images, output, fast=False, progress=False) == (3, 0, 2)
    written = read_predictions(output)
    expected, _ = predict_files(model, images, fast=False)
    assert sorted(written.ids) == sorted(str(p) for p in images)
    table = {r.path: [r.probabilities[n] for n in LABELS] for r in expected}
    for image, row in zip(written.ids, written.probabilities, strict=True):
        np.testing.assert_allclose(row, table[image], rtol=1e-6)


def test_predict_command_names_a_reused_output_without_a_traceback(two_models, images, tmp_path):
    a, b = two_models
    output = tmp_path / "predictions.csv"
    cli(["predict", "--model", str(a), *map(str, images[:2]), "--output", str(output)])
    with pytest.raises(
        SystemExit, match=r"predict: .*predictions.csv holds predictions of another"
    ):
        cli(["predict", "--model", str(b), *map(str, images), "--output", str(output)])
    with pytest.raises(SystemExit, match=r"predict: --output .* is a folder"):
        cli(["predict", "--model", str(a), *map(str, images), "--output", str(tmp_path)])


def test_a_prediction_csv_of_read_errors_only_is_refused(tmp_path):
    # Every image failed to read (wrong folder mounted): compare wrote a report on 0 images.
    path = tmp_path / "predictions.csv"
    path.write_text("path,error,A,B,flagged\nx1.png,cannot read,,,\nx2.png,cannot read,,,\n")
    with pytest.raises(ValueError, match=r"predictions.csv holds no predictions \(2 rows"):
        read_predictions(path)


def test_a_file_named_twice_is_predicted_once(tmp_path):
    from PIL import Image

    from hf_cxr_mae.predict import collect_images

    for name in "abc":
        Image.new("L", (8, 8)).save(tmp_path / f"{name}.png")
    named = collect_images([tmp_path, tmp_path / "b.png", tmp_path / "." / "a.png"])
    assert [p.name for p in named] == ["a.png", "b.png", "c.png"]


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
