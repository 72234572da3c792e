"""``hf-cxr-mae predict`` and ``pipeline("image-classification")`` give the same answer for a
JPEG stored sideways with an EXIF orientation tag (transformers applies the tag; so do we), and
the demo analyses the same upright picture."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import save_classifier, textured_grey, tiny_classifier
from PIL import Image
from transformers import pipeline

from hf_cxr_mae.serving.demo import Analyzer
from hf_cxr_mae.serving.predict import load_model, predict_files

LABELS = ["A", "B", "C"]
STORED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return save_classifier(tiny_classifier(LABELS), tmp_path_factory.mktemp("classifier"))


def sideways_jpeg(path, orientation: int) -> None:
    """A 90 x 120 textured picture with a bright corner, stored turned, tag set to undo it."""
    pixels = textured_grey(np.random.default_rng(0))
    pixels[:30, :40] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).transpose(STORED[orientation]).save(path, quality=95, exif=exif)


@pytest.mark.parametrize("orientation", [6, 8])
def test_predict_equals_the_pipeline_on_an_exif_rotated_jpeg(classifier_dir, tmp_path, orientation):
    """Before, predict read the stored (sideways) pixels: its probabilities differed from the
    pipeline's by up to 0.07 on this tiny model."""
    path = tmp_path / "sideways.jpg"
    sideways_jpeg(path, orientation)
    results, failures = predict_files(load_model(str(classifier_dir)), [path], fast=False)
    assert failures == []
    ours = results[0].probabilities
    classify = pipeline("image-classification", model=str(classifier_dir), top_k=len(LABELS))
    theirs = {s["label"]: s["score"] for s in classify(str(path))}
    np.testing.assert_allclose([ours[n] for n in LABELS], [theirs[n] for n in LABELS], atol=1e-6)


def test_the_demo_analyses_the_upright_picture(classifier_dir, tmp_path):
    """The demo reads uploads with read_xray: the status names the upright size (w x h)."""
    path = tmp_path / "sideways.jpg"
    sideways_jpeg(path, 6)
    *_, status = Analyzer(str(classifier_dir)).analyze(str(path))
    assert "Image 120x90." in status


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_onnx_serving_turns_an_opened_pil_image_upright_as_its_path(tmp_path, mode):
    """``OnnxClassifier.predict_proba`` takes PIL images too: an image opened by the caller keeps
    its EXIF tag, which transformers' ``load_image`` applies; a grey image skipped the reader and
    was served sideways."""
    from hf_cxr_mae.data.images import read_xray
    from hf_cxr_mae.serving.onnx_runtime import _image

    path = tmp_path / "sideways.jpg"
    sideways_jpeg(path, 6)
    opened = Image.open(path)
    opened = opened if mode == "L" else opened.convert("RGB")
    if mode == "RGB":  # convert() drops nothing of the tag: keep it to be sure it is read
        opened.info["exif"] = Image.open(path).info["exif"]
    upright = _image(opened)
    assert upright.size == (120, 90)  # width x height of the upright 90-row picture
    np.testing.assert_array_equal(np.asarray(upright), np.asarray(read_xray(path)))
