"""Serving an ONNX export without PyTorch: ``hf_cxr_mae.onnx_runtime`` imports neither torch nor
transformers, its config answers as transformers' does, its preprocessing gives the pixels of
transformers' image processor, and ``predict_proba`` on files gives the PyTorch model's
probabilities."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import save_classifier, textured_grey, tiny_classifier
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor

import hf_cxr_mae
from hf_cxr_mae import CXRClassifierConfig, CXRViTForImageClassification
from hf_cxr_mae.data.images import read_xray
from hf_cxr_mae.export import INT8_PROBABILITY_TOLERANCE, export_onnx
from hf_cxr_mae.onnx_runtime import FolderConfig, OnnxClassifier
from hf_cxr_mae.processing import build_image_processor

ROOT = Path(__file__).resolve().parents[1]
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
        "import json, sys, hf_cxr_mae.onnx_runtime\n"
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
        "from hf_cxr_mae.onnx_runtime import OnnxClassifier\n"
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
