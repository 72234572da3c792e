"""ONNX export (``hf_cxr_mae.serving.export``): round trip against PyTorch (fp32 to 1e-4, int8 within the
stated tolerance), the refusal of a graph that disagrees, predict and the demo on an exported
folder, static int8 calibrated on real X-rays, an export folder reused for another model, and
graphs older than the weights beside them refused."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from helpers import THREE_FINDINGS, save_classifier, tiny_classifier

from hf_cxr_mae import CXRViTForImageClassification
from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.serving.export import (
    INT8_PROBABILITY_TOLERANCE,
    export_onnx,
    synthetic_check_images,
)
from hf_cxr_mae.serving.onnx_runtime import FILES, OnnxClassifier
from hf_cxr_mae.serving.predict import load_model

LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Nodule"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A tiny classifier whose head spreads the logits."""
    return save_classifier(tiny_classifier(LABELS), tmp_path_factory.mktemp("classifier"))


@pytest.fixture(scope="module")
def exported(classifier_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    calibration = synthetic_check_images(
        CXRViTForImageClassification.from_pretrained(classifier_dir).config, 48, seed=3
    )
    for mode in (None, "dynamic", "static"):
        export_onnx(classifier_dir, out, int8=mode, calibration=calibration)
    return out


def _torch_logits(folder, pixels: np.ndarray) -> np.ndarray:
    model = CXRViTForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(pixels)).logits.double().numpy()


def test_fp32_round_trip_is_exact_and_the_batch_is_dynamic(classifier_dir, exported):
    files = sorted(p.name for p in (exported / "onnx").iterdir())
    assert files == sorted([*FILES.values(), "export.json"])
    graph = onnx.load(exported / "onnx" / "model.onnx")
    assert [i.name for i in graph.graph.input] == ["pixel_values"]
    assert [o.name for o in graph.graph.output] == ["logits"]
    # The attention blocks run fused (both layers of the tiny model).
    assert sum(n.op_type == "MultiHeadAttention" for n in graph.graph.node) == 2
    pixels = synthetic_check_images(
        CXRViTForImageClassification.from_pretrained(classifier_dir).config, 5, seed=11
    )
    expected = _torch_logits(classifier_dir, pixels)
    assert np.abs(expected).max() > 1  # a spread-out head: a mix-up of findings would show
    model = OnnxClassifier(exported, variant="fp32")
    for batch in (pixels[:1], pixels):  # batch 1 and 5 through one graph exported at batch 2
        got = model(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(got, expected[: len(batch)], atol=1e-4, rtol=0)
    assert model.config.id2label[2] == "Effusion"
    for name in ("config.json", "preprocessor_config.json", "README.md"):
        assert (exported / name).is_file(), name
    card = (exported / "README.md").read_text()
    assert card.count("## ONNX export") == 1 and "model_int8_static.onnx" in card


@pytest.mark.parametrize("variant", ["dynamic", "static"])
def test_int8_graphs_stay_within_the_stated_tolerance(classifier_dir, exported, variant):
    record = json.loads((exported / "onnx" / "export.json").read_text())[FILES[variant]]
    assert record["passed"] and record["max_probability_difference"] <= INT8_PROBABILITY_TOLERANCE
    pixels = synthetic_check_images(
        CXRViTForImageClassification.from_pretrained(classifier_dir).config, 8, seed=21
    )
    expected = 1 / (1 + np.exp(-_torch_logits(classifier_dir, pixels)))
    model = OnnxClassifier(exported, variant=variant)
    got = torch.sigmoid(model(torch.from_numpy(pixels))).numpy()
    difference = np.abs(got - expected)
    assert difference.max() <= INT8_PROBABILITY_TOLERANCE
    assert difference.max() > 1e-5  # it is really quantised, not the fp32 graph under a new name
    nodes = {n.op_type for n in onnx.load(model.path).graph.node}
    assert ("DequantizeLinear" in nodes) if variant == "static" else ("MatMulInteger" in nodes)


def test_default_graph_is_the_fastest_present(exported):
    assert OnnxClassifier(exported).variant == "int8 dynamic"
    with pytest.raises(FileNotFoundError, match="holds no exported graph"):
        OnnxClassifier(exported / "onnx")


def test_a_graph_that_disagrees_is_refused_with_the_numbers(classifier_dir, tmp_path, monkeypatch):
    import hf_cxr_mae.serving.export as export

    real_fuse = export.fuse_attention

    def perturbed(proto, num_heads):  # a wrong scale in every attention block
        fused = real_fuse(proto, num_heads)
        for node in proto.graph.node:
            if node.op_type == "MultiHeadAttention":
                for attribute in node.attribute:
                    if attribute.name == "scale":
                        attribute.f *= 3
        return fused

    monkeypatch.setattr(export, "fuse_attention", perturbed)
    with pytest.raises(ValueError, match=r"disagrees .*max \|logit difference\| [0-9.e-]+") as err:
        export_onnx(classifier_dir, tmp_path / "out")
    assert "Nothing was written" in str(err.value)
    assert not (tmp_path / "out" / "onnx").exists()
    # A tolerance too tight for int8 is refused too, naming the probabilities.
    monkeypatch.setattr(export, "fuse_attention", real_fuse)
    with pytest.raises(ValueError, match=r"model_int8_dynamic.onnx disagrees.*probability"):
        export_onnx(classifier_dir, tmp_path / "out", int8="dynamic", tolerance=1e-7)


def test_predict_with_the_onnx_folder_gives_the_pytorch_table(
    classifier_dir, exported, tmp_path, capsys
):
    from PIL import Image

    rng = np.random.default_rng(5)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (90, 80), np.uint8)).save(images / f"{i}.png")
    (images / "broken.png").write_text("not a png")
    tables = {}
    for backend, model in [("torch", classifier_dir), ("onnx", exported)]:
        with pytest.raises(SystemExit) as exit_info:
            cli(["predict", "--model", str(model), str(images), "--json", "--no_fast"])
        assert exit_info.value.code == 2  # one unreadable file, the rest predicted
        out = json.loads(capsys.readouterr().out)
        assert out["failures"][0]["path"].endswith("broken.png")
        tables[backend] = {row["path"]: row["probabilities"] for row in out["predictions"]}
    assert list(tables["onnx"]) == list(tables["torch"]) and len(tables["torch"]) == 5
    largest = 0.0
    for path, row in tables["torch"].items():
        assert list(tables["onnx"][path]) == LABELS
        got, expected = np.array(list(tables["onnx"][path].values())), np.array(list(row.values()))
        np.testing.assert_allclose(got, expected, atol=INT8_PROBABILITY_TOLERANCE, rtol=0)
        largest = max(largest, np.abs(got - expected).max())
    assert largest > 1e-6  # the folder ran as ONNX (its int8 graph), not as PyTorch again
    assert isinstance(load_model(str(exported)), OnnxClassifier)
    assert not isinstance(load_model(str(classifier_dir)), OnnxClassifier)
    # --heatmap with an ONNX graph is refused in words, before any image is read.
    with pytest.raises(SystemExit, match="--heatmap needs the PyTorch model"):
        cli(["predict", "--model", str(exported), str(images), "--heatmap", str(tmp_path)])


def test_demo_runs_an_onnx_folder_and_says_there_is_no_heatmap(exported, tmp_path):
    from PIL import Image

    from hf_cxr_mae.serving.demo import ONNX_NOTE, Analyzer

    Image.fromarray(np.full((64, 64), 120, np.uint8)).save(tmp_path / "x.png")
    analyzer = Analyzer(str(exported))
    scores, heat, _, status = analyzer.analyze(str(tmp_path / "x.png"))
    assert analyzer.onnx and set(scores) == set(LABELS) and heat is None
    assert ONNX_NOTE in status and "Grad-CAM needs the PyTorch" in status


def test_export_command_calibrates_static_int8_on_real_xrays(classifier_dir, nih_dir, tmp_path):
    out = tmp_path / "exported"
    data = ["--calibration", "nih14", "--data_dir", str(nih_dir), "--image_dir", "images"]
    cli(
        [
            "export",
            str(classifier_dir),
            str(out),
            "--int8",
            "static",
            *data,
            "--calibration_samples",
            "24",
        ]
    )
    record = json.loads((out / "onnx" / "export.json").read_text())
    static = record["model_int8_static.onnx"]
    # 24 drawn: 18 fit the ranges, 6 held out are the check images.
    assert static["images"] == 6 and static["image_source"].startswith("nih14 images, held out")
    assert static["passed"] and record["model.onnx"]["max_logit_difference"] < 1e-4
    # Static without images to calibrate on is refused in words.
    with pytest.raises(SystemExit, match="--int8 static calibrates on X-rays"):
        cli(["export", str(classifier_dir), str(tmp_path / "x"), "--int8", "static"])


def test_a_finding_without_a_stored_threshold_is_checked_at_one_half(tmp_path):
    """Operating points store None for a finding undefined on validation; the agreement check
    used to fail on it with a TypeError."""
    from hf_cxr_mae.serving.export import _decisions

    points = {"method": "youden", "thresholds": {"Atelectasis": 0.2, "Cardiomegaly": None}}
    model = tiny_classifier(LABELS, operating_points=points)
    probs = np.array([[0.3, 0.4, 0.6, 0.1], [0.1, 0.6, 0.4, 0.9]])
    decided = _decisions(probs, model.config)
    np.testing.assert_array_equal(decided, [[1, 0, 1, 0], [0, 1, 0, 1]])
    export_onnx(model, tmp_path / "out")
    record = json.loads((tmp_path / "out" / "onnx" / "export.json").read_text())
    assert record["model.onnx"]["agreement"] == 1.0


def test_graphs_beside_weights_they_were_not_exported_from_are_refused(tmp_path):
    """The Hub layout: ``onnx/`` inside the model folder. A model re-trained into the folder
    after its export used to run the old graphs under ``--backend onnx``."""
    folder = save_classifier(tiny_classifier(LABELS), tmp_path / "model")
    export_onnx(folder, folder)
    assert OnnxClassifier(folder).variant == "fp32"  # exported from these weights: fine
    retrained = tiny_classifier(LABELS, head_std=0.7)
    save_classifier(retrained, folder)
    with pytest.raises(ValueError, match=r"exported from other weights than model\.safetensors"):
        OnnxClassifier(folder)
    with pytest.raises(ValueError, match="export again"):
        load_model(str(folder), backend="onnx")
    export_onnx(folder, folder)  # the fix the message names
    assert OnnxClassifier(folder).variant == "fp32"


def test_export_of_another_model_into_a_used_folder_drops_the_old_int8_graph(two_heads, tmp_path):
    # The user exports model A with int8, then model B (fp32 only) into the same folder: predict
    # picks the fastest graph present, which was A's int8 beside B's config.
    a, b = two_heads
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


def test_export_of_the_same_model_keeps_its_other_graphs(two_heads, tmp_path):
    a, _ = two_heads
    out = tmp_path / "deploy"
    export_onnx(a, out, int8="dynamic")
    export_onnx(a, out)
    assert OnnxClassifier(out).variant == "int8 dynamic"


def test_cli_predict_on_graphs_older_than_the_weights_says_so_without_a_traceback(
    exported_in_place, textured_pngs, tmp_path, capsys
):
    # UNCLEAR. Re-trained into the exported folder, then `hf-cxr-mae predict --backend onnx`:
    # the refusal is right, but it comes as a Python traceback (ValueError from
    # OnnxClassifier.__init__) because load_model runs outside predict's try/except, unlike the
    # other refusals of predict ("predict: ...").
    from hf_cxr_mae.cli import main

    folder = tmp_path / "retrained"
    shutil.copytree(exported_in_place, folder)
    tiny_classifier(THREE_FINDINGS, head_std=2.0).save_pretrained(folder)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", str(folder), "--backend", "onnx", str(textured_pngs[0])])
    assert "exported from other weights" in str(exit_info.value.code)


def test_an_export_made_before_the_weights_record_is_not_run_silently_after_retraining(
    exported_in_place, textured_pngs, tmp_path, caplog
):
    # SILENT. An in-place export made by the previous release (its onnx/export.json has
    # weights_sha256 but no source_weights_sha256), then the model re-trained into the folder:
    # check_graphs_match_weights returns without a word when the record lacks the new key, so
    # `predict --backend onnx` and OnnxClassifier answer with the old graph's numbers under the
    # new model's config. Expected: refused, or at least a warning that it cannot be checked.
    import json
    import logging

    folder = tmp_path / "legacy"
    shutil.copytree(exported_in_place, folder)
    record_path = folder / "onnx" / "export.json"
    record = json.loads(record_path.read_text())
    record.pop("source_weights_sha256")
    record_path.write_text(json.dumps(record))
    tiny_classifier(THREE_FINDINGS, head_std=2.0).save_pretrained(folder)  # re-trained into the folder
    with caplog.at_level(logging.WARNING):
        try:
            OnnxClassifier(folder)
        except ValueError as err:
            assert "export" in str(err)
            return
    assert any("export" in r.getMessage() for r in caplog.records), "ran the old graph silently"
