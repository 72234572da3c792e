"""Serving an ONNX export without PyTorch (``hf_cxr_mae.serving.onnx_runtime``): it imports neither torch
nor transformers, its config answers as transformers' does, its preprocessing gives the pixels
of transformers' image processor, and ``predict_proba`` on files, arrays and pixel values gives
the PyTorch model's probabilities."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from helpers import THREE_FINDINGS, save_classifier, textured_grey, tiny_classifier
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor

import hf_cxr_mae
from hf_cxr_mae import CXRClassifierConfig, CXRViTForImageClassification
from hf_cxr_mae.data.images import read_xray
from hf_cxr_mae.processing import build_image_processor
from hf_cxr_mae.serving.export import INT8_PROBABILITY_TOLERANCE, export_onnx
from hf_cxr_mae.serving.onnx_runtime import FolderConfig, OnnxClassifier
from hf_cxr_mae.serving.predict import load_model, predict_files

ROOT = REPO_ROOT


LABELS = ["Atelectasis", "Cardiomegaly", "Effusion"]


HEAVY = ("torch", "transformers", "datasets", "pandas")


# One grey level after normalisation by the CXR std: transformers' default (torchvision) backend
# resizes with its own bicubic kernel, which rounds some pixels to the next grey level.
ONE_GREY_LEVEL = 1 / 255 / 0.252


def run_python(code: str) -> dict:
    """``code`` in a fresh interpreter (the test process has torch loaded); its last line of
    output, read as JSON."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    operating_points = {"thresholds": {"Atelectasis": 0.3, "Cardiomegaly": 0.5, "Effusion": 0.6}}
    calibration = {"method": "temperature", "temperatures": {n: 1.5 for n in LABELS}}
    model = tiny_classifier(LABELS, operating_points=operating_points, calibration=calibration)
    return save_classifier(model, tmp_path_factory.mktemp("classifier"))


@pytest.fixture(scope="module")
def exported(classifier_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    export_onnx(classifier_dir, out, int8="dynamic")
    return out


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> list[Path]:
    """An 8-bit picture wider than tall and a 16-bit one taller than wide (resize both ways)."""
    folder = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    Image.fromarray(textured_grey(rng)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 4096, (150, 100), dtype=np.uint16)).save(folder / "tall.png")
    return [folder / "wide.png", folder / "tall.png"]


def transformers_pixels(folder: Path, paths, backend: str = "pil") -> np.ndarray:
    """What transformers' image processor of ``folder`` makes of the files, read as predict reads
    them (``read_xray``: one grey channel)."""
    processor = AutoImageProcessor.from_pretrained(folder, backend=backend)
    return processor([read_xray(p) for p in paths], return_tensors="np")["pixel_values"]


def test_importing_the_runtime_imports_neither_torch_nor_transformers():
    found = run_python(
        "import json, sys, hf_cxr_mae.serving.onnx_runtime\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    assert found == []


def test_the_package_names_load_lazily_and_all_of_them_resolve():
    got = run_python(
        "import json, sys, hf_cxr_mae\n"
        "before = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "from hf_cxr_mae import CXRViTForImageClassification, CXR_MEAN\n"
        "print(json.dumps({'before': before, 'after': 'torch' in sys.modules,\n"
        "    'mean': CXR_MEAN, 'version': hf_cxr_mae.__version__}))"
    )
    assert got == {"before": [], "after": True, "mean": 0.5056, "version": "0.1.0"}
    assert len(hf_cxr_mae.__all__) == 13
    for name in hf_cxr_mae.__all__:
        assert getattr(hf_cxr_mae, name) is not None
    assert hf_cxr_mae.CXRViTForImageClassification is CXRViTForImageClassification
    assert set(hf_cxr_mae.__all__) <= set(dir(hf_cxr_mae)) and "__version__" in dir(hf_cxr_mae)
    assert hf_cxr_mae.modeling.CXRViTForImageClassification is CXRViTForImageClassification
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        hf_cxr_mae.nothing_here  # noqa: B018
    with pytest.raises(ImportError):
        exec("from hf_cxr_mae import nothing_here", {})


def test_serving_files_without_torch_gives_the_pytorch_probabilities(
    classifier_dir, exported, pngs
):
    # The child serves as a hospital server would: onnxruntime, numpy and Pillow only.
    got = run_python(
        "import json, sys\n"
        "from hf_cxr_mae.serving.onnx_runtime import OnnxClassifier\n"
        "out = {}\n"
        "for variant in ('fp32', 'dynamic'):\n"
        f"    model = OnnxClassifier({str(exported)!r}, variant=variant)\n"
        f"    p = model.predict_proba({[str(p) for p in pngs]!r})\n"
        "    out[variant] = [p.tolist(), str(p.dtype)]\n"
        f"out['heavy'] = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(json.dumps(out))"
    )
    assert got["heavy"] == []
    pixels = torch.from_numpy(transformers_pixels(exported, pngs))
    model = CXRViTForImageClassification.from_pretrained(classifier_dir).eval()
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits.sigmoid().numpy()
    assert expected.std() > 0.05  # the images and findings get different probabilities
    for variant, tolerance in (("fp32", 1e-4), ("dynamic", INT8_PROBABILITY_TOLERANCE)):
        probabilities, dtype = got[variant]
        assert dtype == "float32"
        np.testing.assert_allclose(probabilities, expected, atol=tolerance, rtol=0)


def test_numpy_in_numpy_out_and_torch_in_torch_out(exported, pngs):
    model = OnnxClassifier(exported, variant="fp32")
    pixels = model.preprocess(pngs)
    logits = model(pixels)
    assert isinstance(logits, np.ndarray) and logits.dtype == np.float32
    assert logits.shape == (2, len(LABELS))
    from_torch = model(torch.from_numpy(pixels).double())
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float32
    np.testing.assert_array_equal(from_torch.numpy(), logits)
    # Pixels, files and PIL images give the same probabilities; one file needs no list.
    by_file = model.predict_proba(pngs)
    np.testing.assert_array_equal(model.predict_proba(pixels), by_file)
    np.testing.assert_array_equal(model.predict_proba([Image.open(p) for p in pngs]), by_file)
    # (batch 1 against batch 2: ONNX Runtime's kernels may sum in another order)
    np.testing.assert_allclose(model.predict_proba(pngs[1]), by_file[1:], atol=1e-6, rtol=0)


def test_a_single_label_model_gets_softmax(tmp_path, pngs):
    model = tiny_classifier(["normal", "pneumonia", "covid"])
    model.config.problem_type = "single_label_classification"
    folder = save_classifier(model, tmp_path / "classifier")
    export_onnx(folder, tmp_path / "exported")
    onnx_model = OnnxClassifier(tmp_path / "exported")
    pixels = onnx_model.preprocess(pngs)
    with torch.no_grad():
        expected = model(pixel_values=torch.from_numpy(pixels)).logits.softmax(-1).numpy()
    got = onnx_model.predict_proba(pixels)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_the_config_answers_as_the_transformers_config(exported):
    ours, theirs = OnnxClassifier(exported).config, AutoConfig.from_pretrained(exported)
    for key in ("id2label", "label2id", "num_labels", "problem_type", "model_type",
                "architectures", "image_size", "image_mean", "image_std", "crop_pct",
                "num_channels", "operating_points", "calibration"):  # fmt: skip
        assert getattr(ours, key) == getattr(theirs, key), key
    assert ours.id2label[2] == "Effusion" and ours.num_labels == 3
    assert getattr(ours, "not_a_key", "default") == getattr(theirs, "not_a_key", "default")
    # Read-only: neither setting nor changing what was read alters it.
    with pytest.raises(AttributeError, match="read-only"):
        ours.problem_type = "single_label_classification"
    ours.operating_points["thresholds"]["Atelectasis"] = 0.9
    assert ours.operating_points["thresholds"]["Atelectasis"] == 0.3
    # A bare config.json (a label count, no names) gets transformers' defaults.
    bare = FolderConfig({"num_labels": 3})
    assert bare.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert bare.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    assert bare.problem_type is None and bare.architectures is None


@pytest.mark.parametrize("preset", ["vit-test-patch8-dec32d1b", "vit-small-patch16-dec512d2b"])
def test_preprocessing_gives_the_transformers_pixels_on_real_xrays(
    preset, exported, nih_dir, tmp_path
):
    """64 px (512 -> 73, crop 64) and 224 px (512 -> 256, crop 224) on real NIH PNGs (some RGBA).
    Measured on 64 images: the PIL backend exactly (max difference 0), the default torchvision
    backend within one grey level (0.0156 at 64 px on 0.3% of the values, 1.2e-7 at 224 px)."""
    folder = tmp_path / "folder"
    shutil.copytree(exported, folder)  # preprocess reads preprocessor_config.json, not the graph
    build_image_processor(CXRClassifierConfig.from_preset(preset)).save_pretrained(folder)
    paths = sorted((nih_dir / "images").glob("*.png"))[:64]
    assert len(paths) == 64
    ours = OnnxClassifier(folder).preprocess(paths)
    size = CXRClassifierConfig.from_preset(preset).image_size
    assert ours.shape == (64, 3, size, size) and ours.dtype == np.float32
    assert np.abs(ours - transformers_pixels(folder, paths, "pil")).max() == 0
    default_backend = transformers_pixels(folder, paths, "torchvision")
    assert np.abs(ours - default_backend).max() <= ONE_GREY_LEVEL + 1e-5


def test_predict_proba_refuses_a_uint8_batch_as_pixel_values(exported_in_place, textured_pngs):
    # SILENT. A user holding a batch of raw 8-bit pictures (N, 3, H, W) already at the model's
    # size calls predict_proba(batch): it is taken as normalised pixel values (0..255 instead of
    # about -2..2) and probabilities come back without a word. uint8 can never be normalised
    # pixel values.
    model = OnnxClassifier(exported_in_place, variant="fp32")
    raw = np.stack([np.asarray(Image.open(p).resize((64, 64))) for p in textured_pngs])
    batch = np.repeat(raw[:, None], 3, axis=1)  # (3, 3, 64, 64) uint8
    with pytest.raises((ValueError, TypeError), match=r"uint8|pixel values|normali[sz]ed"):
        model.predict_proba(batch)


def test_predict_proba_takes_a_grey_numpy_image_as_a_pil_image(exported_in_place, textured_pngs):
    # UNCLEAR. predict_proba([array]) with a (H, W) uint8 X-ray (how most code holds an image)
    # fails deep in PIL with "TypeError: expected str, bytes or os.PathLike object, not
    # ndarray"; the class advertises "numpy in, numpy out".
    model = OnnxClassifier(exported_in_place, variant="fp32")
    array = np.asarray(Image.open(textured_pngs[0]))
    expected = model.predict_proba([Image.fromarray(array)])
    np.testing.assert_allclose(model.predict_proba([array]), expected, atol=1e-6)


def test_predict_proba_of_no_images(exported_in_place):
    # UNCLEAR. A serving loop whose folder is empty this minute calls predict_proba([]) and gets
    # "ValueError: need at least one array to stack" from numpy. Expected: an empty
    # (0, findings) array, or a message saying no images were given.
    model = OnnxClassifier(exported_in_place, variant="fp32")
    try:
        got = model.predict_proba([])
    except ValueError as err:
        assert "image" in str(err), f"message does not say what is wrong: {err}"
    else:
        assert got.shape == (0, len(THREE_FINDINGS))


def test_predict_proba_on_one_channel_pixel_values(exported_in_place, textured_pngs):
    # UNCLEAR. predict (the CLI) feeds grey (N, 1, H, W) pixels repeated over the model's
    # channels; predict_proba with the same one-channel pixels fails inside ONNX Runtime:
    # "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input:
    # pixel_values ... index: 1 Got: 1 Expected: 3".
    model = OnnxClassifier(exported_in_place, variant="fp32")
    pixels = model.preprocess(textured_pngs)
    expected = model.predict_proba(pixels)
    try:
        got = model.predict_proba(np.ascontiguousarray(pixels[:, :1]))
    except Exception as err:  # a refusal is fine when it says channels, in our words
        assert "channel" in str(err) and "ONNXRuntimeError" not in str(err), str(err)
    else:
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_predict_and_predict_proba_agree_on_an_exported_hub_vit(tmp_path, textured_pngs):
    # SILENT. A hospital engineer exports a stock transformers ViT classifier (its
    # preprocessor_config.json: ViTImageProcessor, squash to 32x32, mean/std 0.5).
    # OnnxClassifier.predict_proba preprocesses by that file; `hf-cxr-mae predict` on the same
    # ONNX folder preprocesses by data_settings(config) (CXR mean/std, shortest side
    # image_size/0.875, centre crop). Same folder, same files, two sets of probabilities
    # (measured: up to 0.0085 apart on this tiny model; pixels up to 1.5 std apart).
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, id2label={0: "a", 1: "b"},
        problem_type="multi_label_classification",
    )  # fmt: skip
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.05)
    model.save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    export_onnx(tmp_path / "vit", tmp_path / "exported")
    by_cli, failures = predict_files(load_model(str(tmp_path / "exported"), "onnx"), textured_pngs)
    assert not failures
    cli = np.array([list(r.probabilities.values()) for r in by_cli])
    served = OnnxClassifier(tmp_path / "exported", variant="fp32").predict_proba(textured_pngs)
    np.testing.assert_allclose(served, cli, atol=1e-3, rtol=0)


def _with_processor(inplace: Path, folder: Path, **changes) -> Path:
    """A copy of the exported folder whose preprocessor_config.json has ``changes`` (a value of
    None removes the key)."""
    import json

    shutil.copytree(inplace, folder)
    settings = json.loads((folder / "preprocessor_config.json").read_text())
    for key, value in changes.items():
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    return folder


def test_preprocess_fills_absent_keys_with_the_processors_defaults(exported_in_place, textured_pngs, tmp_path):
    # SILENT. A preprocessor_config.json without do_rescale / do_normalize / resample (written
    # by hand or another tool; transformers' BitImageProcessor then rescales, normalises and
    # resizes bicubic by default). preprocess reads an absent key as "off": raw 0..255 pixels
    # (max 214 instead of about 1) go into the graph, probabilities come back without a word.
    from transformers import AutoImageProcessor

    from hf_cxr_mae.data.images import read_xray

    folder = _with_processor(
        exported_in_place, tmp_path / "minimal", do_rescale=None, do_normalize=None, resample=None
    )
    theirs = AutoImageProcessor.from_pretrained(folder, backend="pil")
    expected = theirs([read_xray(p) for p in textured_pngs], return_tensors="np")["pixel_values"]
    try:
        ours = OnnxClassifier(folder, variant="fp32").preprocess(textured_pngs)
    except ValueError as err:  # refusing to guess is fine when it names the keys
        assert "do_rescale" in str(err) or "do_normalize" in str(err), str(err)
    else:
        np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_preprocess_reads_an_old_style_integer_size(exported_in_place, textured_pngs, tmp_path):
    # UNCLEAR. Older processor configs hold "size": 73 and "crop_size": 64 (ints; transformers
    # reads them as shortest_edge 73 and a 64x64 crop). predict_proba fails with "TypeError:
    # argument of type 'int' is not iterable", naming neither the file nor the key.
    from transformers import AutoImageProcessor

    from hf_cxr_mae.data.images import read_xray

    folder = _with_processor(exported_in_place, tmp_path / "old", size=73, crop_size=64)
    theirs = AutoImageProcessor.from_pretrained(folder, backend="pil")
    expected = theirs([read_xray(p) for p in textured_pngs], return_tensors="np")["pixel_values"]
    try:
        ours = OnnxClassifier(folder, variant="fp32").preprocess(textured_pngs)
    except ValueError as err:
        assert "size" in str(err) and "preprocessor_config" in str(err), str(err)
    else:
        np.testing.assert_allclose(ours, expected, atol=1e-5)


def _fake_export(folder: Path, labels: list[str]) -> Path:
    """An export folder whose config.json is a tiny classifier's with ``labels`` and whose
    ``onnx/model.onnx`` is not a graph: what is checked before ONNX Runtime reads the graph."""
    save_classifier(tiny_classifier(labels), folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"not a graph")
    return folder


def test_an_export_naming_two_outputs_alike_is_refused(tmp_path):
    """As for PyTorch folders: one name for two outputs would report one's probability as the
    other's (results are keyed by name)."""
    folder = _fake_export(tmp_path / "deploy", ["Atelectasis", "Effusion", "Mass", "Effusion"])
    expected = f"{folder}: config.json's id2label names several outputs alike ('Effusion' at 1, 3)"
    with pytest.raises(ValueError, match=re.escape(expected)):
        OnnxClassifier(folder)


def test_a_graph_name_that_is_a_folder_is_named(tmp_path):
    """``onnx/model.onnx`` made a folder used to be passed over, and the error was about missing
    safetensors weights."""
    folder = _fake_export(tmp_path / "deploy", ["Atelectasis", "Effusion"])
    graph = folder / "onnx" / "model.onnx"
    graph.unlink()
    graph.mkdir()
    expected = f"{graph} is not a file (a folder?): an ONNX graph is one file."
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_model(str(folder))
    with pytest.raises(ValueError, match=re.escape(expected)):
        OnnxClassifier(folder)


def test_without_onnxruntime_predict_names_the_extra(tmp_path, monkeypatch):
    """Loading a graph imported ``onnxruntime.capi`` directly: without onnxruntime, predict and
    the demo ended in a ModuleNotFoundError traceback instead of the line naming the extra."""
    from hf_cxr_mae.cli import main as cli

    folder = _fake_export(tmp_path / "deploy", ["Atelectasis", "Effusion"])
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    # Its submodules too: another test may have imported them into this process already.
    for name in [m for m in sys.modules if m.split(".")[0] == "onnxruntime"] + ["onnxruntime"]:
        monkeypatch.setitem(sys.modules, name, None)
    commands = (["predict", "--model", str(folder), str(image)], ["demo", "--model", str(folder)])
    for command in commands:
        with pytest.raises(SystemExit) as refused:
            cli(command)
        assert refused.value.code == (
            f"{command[0]}: Running an ONNX export needs onnxruntime, which is not installed: "
            "pip install 'hf-cxr-mae[onnx]'"
        )
