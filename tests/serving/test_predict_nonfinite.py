"""A model with damaged weights (NaN or infinite values) gives no "prediction": predict_files,
predict_to_file, ``predict --json``, ``OnnxClassifier.predict_proba`` and the demo stop with an
error naming the model and the image, for PyTorch and ONNX Runtime alike; a healthy model's
``--json`` printout is valid JSON holding the exact probabilities."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import save_classifier, tiny_classifier
from PIL import Image

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.serving.demo import Analyzer
from hf_cxr_mae.serving.onnx_runtime import OnnxClassifier
from hf_cxr_mae.serving.predict import load_model, predict_files, predict_to_file

LABELS = ["Atelectasis", "Effusion"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64), np.uint8)).save(folder / f"x{i}.png")
    return sorted(folder.glob("*.png"))


def _damaged(folder, how: str):
    """A tiny classifier whose Effusion output is broken: a NaN weight, or an infinite bias
    (whose sigmoid is a "probability" of exactly 1.0)."""
    model = tiny_classifier(LABELS)
    with torch.no_grad():
        if how == "nan":
            model.classifier.weight[1, 0] = float("nan")
        else:
            model.classifier.bias[1] = float("inf")
    return save_classifier(model, folder)


@pytest.mark.parametrize("how", ["nan", "inf"])
def test_damaged_pytorch_weights_are_an_error_naming_model_and_image(images, tmp_path, capsys, how):
    """NaN probabilities used to be reported as a prediction (and printed as a bare NaN, which
    is not JSON); an infinite logit as a certain finding."""
    folder = _damaged(tmp_path / "model", how)
    model = load_model(str(folder))
    expected = rf"The model {folder} gives {how} \(logit\) for Effusion on {images[0]}: "
    with pytest.raises(ValueError, match=expected):
        predict_files(model, images, fast=False)
    output = tmp_path / "predictions.csv"
    with pytest.raises(ValueError, match=expected):
        predict_to_file(model, images, output, fast=False, num_workers=0, progress=False)
    assert output.read_bytes() == b"path,error,Atelectasis,Effusion,flagged\r\n"  # no row
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        cli(["predict", "--model", str(folder), *map(str, images), "--json", "--no_fast"])
    message = str(refused.value.code)
    assert message.startswith(f"predict: The model {folder} gives {how} (logit) for Effusion")
    assert "\n" not in message and capsys.readouterr().out == ""


def test_a_damaged_onnx_graph_is_an_error_naming_model_and_image(images, tmp_path):
    """The same through ONNX Runtime: the exported graph's head weight set to NaN."""
    import onnx
    from onnx import numpy_helper

    from hf_cxr_mae.serving.export import export_onnx

    folder = save_classifier(tiny_classifier(LABELS), tmp_path / "model")
    export_onnx(folder, tmp_path / "deploy")
    graph_file = tmp_path / "deploy" / "onnx" / "model.onnx"
    graph = onnx.load(graph_file)
    (head,) = [i for i in graph.graph.initializer if i.name.endswith("classifier.weight")]
    weight = numpy_helper.to_array(head).copy()
    weight[1, 0] = np.nan
    head.CopyFrom(numpy_helper.from_array(weight, head.name))
    onnx.save(graph, graph_file)
    model = load_model(str(tmp_path / "deploy"), "onnx")
    expected = rf"The model {graph_file} gives nan \(logit\) for Effusion on {images[0]}: "
    with pytest.raises(ValueError, match=expected):
        predict_files(model, images)
    output = tmp_path / "predictions.jsonl"
    with pytest.raises(ValueError, match=expected):
        predict_to_file(model, images, output, num_workers=0, progress=False)
    assert output.read_bytes() == b""
    # The runtime's own API used to return the NaN as a probability.
    with pytest.raises(ValueError, match=expected):
        OnnxClassifier(tmp_path / "deploy").predict_proba([images[0]])
    scores, heat, recon, status = Analyzer(str(tmp_path / "deploy")).analyze(str(images[0]))
    assert (scores, heat, recon) == (None, None, None)
    assert status.startswith(f"⚠️ The model {graph_file} gives nan (logit) for Effusion on x0")


def test_the_demo_shows_no_probability_nor_heatmap_of_damaged_weights(images, tmp_path):
    """The demo used to show ``'Effusion': nan`` and run Grad-CAM on it; it now says what
    predict says, on the page, and shows nothing else."""
    folder = _damaged(tmp_path / "model", "nan")
    scores, heat, recon, status = Analyzer(str(folder)).analyze(str(images[0]))
    assert (scores, heat, recon) == (None, None, None)
    assert status == (
        f"⚠️ The model {folder} gives nan (logit) for Effusion on x0.png: not a probability. "
        "Its weights may be damaged (NaN or infinite values); no prediction is reported."
    )


def test_the_json_printout_is_json_with_the_exact_probabilities(images, tmp_path, capsys):
    """``predict --json`` parses with json.loads and holds each probability exactly as predicted
    (as the .jsonl and CSV outputs do)."""
    folder = save_classifier(tiny_classifier(LABELS), tmp_path / "model")
    expected, _ = predict_files(load_model(str(folder)), images, fast=False)
    capsys.readouterr()
    cli(["predict", "--model", str(folder), *map(str, images), "--json", "--no_fast"])
    printed = json.loads(capsys.readouterr().out)
    assert [row["path"] for row in printed["predictions"]] == [r.path for r in expected]
    assert [row["probabilities"] for row in printed["predictions"]] == [
        r.probabilities for r in expected
    ]
    assert all(math.isfinite(v) for r in expected for v in r.probabilities.values())
