"""The accuracy rows of benchmarks/inference.py score the held-out X-rays as `predict` would."""

import importlib.util
from pathlib import Path

import numpy as np
import torch
from conftest import REPO_ROOT, TINY

from hf_cxr_mae import CXRClassifierConfig, CXRViTForImageClassification
from hf_cxr_mae.data import NIH14_LABELS, load_cxr_dataset
from hf_cxr_mae.serving.predict import predict_files

_SCRIPT = REPO_ROOT / "benchmarks" / "finetuned_vit_s.py"


_spec = importlib.util.spec_from_file_location("finetuned_vit_s", _SCRIPT)


finetuned_vit_s = importlib.util.module_from_spec(_spec)


_spec.loader.exec_module(finetuned_vit_s)


def test_held_out_images_match_predict_on_real_xrays(nih_dir):
    # The labels in another order than the dataset's: targets must follow the model's.
    names = list(reversed(NIH14_LABELS))
    config = CXRClassifierConfig.from_preset(TINY, id2label=dict(enumerate(names)))
    model = CXRViTForImageClassification(config).eval()
    pixels, targets, got_names = finetuned_vit_s.held_out_images(
        model, nih_dir, split="test", limit=5
    )
    assert got_names == names and pixels.shape[0] == targets.shape[0] == 5

    test = load_cxr_dataset("nih14", nih_dir, image_dir="images")["test"].select(range(5))
    paths = [Path(row["image"].filename) for row in test]
    expected = np.array([[row["labels"][n] for n in names] for row in test])
    np.testing.assert_array_equal(targets, expected)
    results, failures = predict_files(model, paths, fast=False)
    assert not failures
    with torch.no_grad():
        probs = model(pixel_values=torch.from_numpy(pixels)).logits.sigmoid().numpy()
    from_predict = np.array([[r.probabilities[n] for n in names] for r in results])
    np.testing.assert_allclose(probs, from_predict, atol=1e-6)
