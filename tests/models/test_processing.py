"""The image processor saved beside every checkpoint and the post-processing stored with it
(``hf_cxr_mae.processing``): X-ray image modes, a temperature folded into the head equals
dividing the logits (and loads natively), and flagged findings use the stored thresholds."""

import numpy as np
import pytest
import torch
from conftest import TINY
from helpers import sigmoid
from PIL import Image
from transformers import AutoModelForImageClassification

from hf_cxr_mae import CXRClassifierConfig, build_image_processor
from hf_cxr_mae.data.images import read_xray
from hf_cxr_mae.modeling import CXRViTForImageClassification
from hf_cxr_mae.processing import flagged_findings, fold_temperature


def test_image_processor_handles_xray_modes(tmp_path):
    config = CXRClassifierConfig.from_preset(TINY)
    processor = build_image_processor(config)
    gray = (np.random.default_rng(0).random((100, 80)) * 255).astype(np.uint8)
    ref = processor(Image.fromarray(gray), return_tensors="pt")["pixel_values"]
    assert ref.shape == (1, 3, 64, 64)
    assert torch.equal(ref[:, 0], ref[:, 2])
    for image in [Image.fromarray(gray).convert("RGB"), Image.fromarray(gray).convert("RGBA")]:
        torch.testing.assert_close(processor(image, return_tensors="pt")["pixel_values"], ref)
    # 16-bit: read_xray scales by the image's range before the (8-bit) processor.
    wide = gray.astype(np.uint16) * 257
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode.startswith("I")
    out = processor(read_xray(path), return_tensors="pt")["pixel_values"]
    stretched = (
        ((gray.astype(float) - gray.min()) * 255 / (gray.max() - gray.min()))
        .round()
        .astype(np.uint8)
    )
    torch.testing.assert_close(
        out, processor(Image.fromarray(stretched), return_tensors="pt")["pixel_values"]
    )


def test_folded_temperature_equals_dividing_the_logits_and_loads_natively(tmp_path):
    names = ["A", "B", "C"]
    model = CXRViTForImageClassification(
        CXRClassifierConfig.from_preset(TINY, id2label=dict(enumerate(names)))
    ).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        model.classifier.bias.copy_(torch.tensor([0.3, -1.0, 2.0]))
    pixels = torch.randn(5, 3, model.config.image_size, model.config.image_size)
    with torch.no_grad():
        before = model(pixel_values=pixels).logits.double().numpy()
    temperatures = {"A": 2.5, "B": 0.4, "C": 1.0}
    fold_temperature(model, temperatures)
    model.save_pretrained(tmp_path)

    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "BeitForImageClassification"  # no remote code, no subclass
    with torch.no_grad():
        after = torch.sigmoid(loaded(pixel_values=pixels).logits).double().numpy()
    t = np.array([temperatures[n] for n in names])
    np.testing.assert_allclose(after, sigmoid(before / t), atol=1e-6, rtol=0)
    assert loaded.config.calibration == {
        "method": "temperature",
        "fitted_on": "validation",
        "temperatures": temperatures,
    }
    with pytest.raises(ValueError, match="missing"):
        fold_temperature(model, {"A": 1.0})
    with pytest.raises(ValueError, match="invalid"):
        fold_temperature(model, {"A": 1.0, "B": 0.0, "C": 1.0})


def test_flagged_findings_uses_the_stored_thresholds():
    config = CXRClassifierConfig.from_preset(TINY, id2label=dict(enumerate("ABC")))
    assert flagged_findings(config, {"A": 0.9}) is None  # no operating points stored
    config.operating_points = {
        "method": "youden",
        "target": None,
        "fitted_on": "validation",
        "thresholds": {"A": 0.5, "B": 0.2, "C": None},
    }
    flags = flagged_findings(config, {"A": 0.5, "B": 0.1999, "C": 0.99})
    assert flags == {"A": True, "B": False}  # >= threshold; C had none on validation


def test_clearing_postprocessing_drops_calibration_and_operating_points(tmp_path):
    """A fine-tune from a calibrated, thresholded classifier: both were fitted for the source's
    weights, so both go (the saved config.json has neither, and no finding is flagged), and the
    rest of the config stays."""
    import json

    from hf_cxr_mae.processing import POSTPROCESSING_KEYS, clear_postprocessing

    config = CXRClassifierConfig.from_preset(TINY, id2label=dict(enumerate("AB")))
    config.calibration = {"method": "temperature", "fitted_on": "validation",
                          "temperatures": {"A": 2.0}}  # fmt: skip
    config.operating_points = {"method": "youden", "target": None, "fitted_on": "validation",
                               "thresholds": {"A": 0.5, "B": 0.2}}  # fmt: skip
    before = {k: v for k, v in config.to_dict().items() if k not in POSTPROCESSING_KEYS}
    clear_postprocessing(config)
    assert not hasattr(config, "calibration") and not hasattr(config, "operating_points")
    assert POSTPROCESSING_KEYS == ("calibration", "operating_points")
    assert flagged_findings(config, {"A": 0.9, "B": 0.9}) is None
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "calibration" not in saved and "operating_points" not in saved
    assert config.to_dict() == before
    clear_postprocessing(config)  # nothing left to clear: no error
