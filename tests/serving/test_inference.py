"""Fast classifier inference (``hf_cxr_mae.serving.inference``): bf16 and fp32 fast paths give the saved
model's logits (not timed)."""

import pytest
import torch
from conftest import TINY

from hf_cxr_mae import CXRClassifierConfig, CXRViTForImageClassification
from hf_cxr_mae.serving.inference import fast_classifier


@pytest.mark.parametrize("preset", [TINY, "vit-small-patch16"])
def test_fast_classifier_logits_match(preset):
    model = CXRViTForImageClassification(
        CXRClassifierConfig.from_preset(preset, num_labels=14)
    ).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.05)
    size = model.config.image_size
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        expected = model(x).logits
    fast = fast_classifier(model, dtype=torch.bfloat16)
    torch.testing.assert_close(fast(x), expected, atol=5e-2, rtol=5e-2)
    assert torch.corrcoef(torch.stack([fast(x).flatten(), expected.flatten()]))[0, 1] > 0.999
    exact = fast_classifier(model, dtype=torch.float32)
    torch.testing.assert_close(exact(x), expected, atol=1e-5, rtol=1e-5)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched
