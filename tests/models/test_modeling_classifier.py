"""The ViT classifier (``hf_cxr_mae.modeling``): logits equal to timm's and a native reload, the
pipeline's sigmoid score per finding, starting from an MAE checkpoint (at another size too),
refused checkpoints, multi- and single-label losses, drop path and bad input."""

from functools import partial

import numpy as np
import pytest
import timm
import torch
from conftest import TINY
from timm.layers import resample_abs_pos_embed
from transformers import AutoModelForImageClassification, BeitForImageClassification, pipeline

from hf_cxr_mae import (
    IGNORE_LABEL,
    CXRClassifierConfig,
    CXRMAEConfig,
    CXRMAEForPreTraining,
    CXRViTForImageClassification,
    build_image_processor,
)
from hf_cxr_mae.convert import timm_vit_to_classifier
from hf_cxr_mae.data.images import read_xray

NIH14 = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]


def timm_vit(global_pool: str) -> torch.nn.Module:
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=64,
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=4,
        mlp_ratio=2.0,
        qkv_bias=True,
        global_pool=global_pool,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_classes=14,
    )
    with torch.no_grad():  # random everything, key bias and norms included, so nothing hides
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("global_pool, pooling", [("avg", "mean"), ("token", "cls")])
def test_logits_match_timm_and_native_reload(global_pool, pooling, tmp_path):
    reference = timm_vit(global_pool)
    config = CXRClassifierConfig.from_preset(TINY, id2label=dict(enumerate(NIH14)), pooling=pooling)
    ours = CXRViTForImageClassification(config).eval()
    ours.load_state_dict(timm_vit_to_classifier(reference.state_dict()), strict=True)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(ours(x).logits, expected, atol=1e-4, rtol=0)
    ours.save_pretrained(tmp_path)
    native = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(native) is BeitForImageClassification
    assert native.config.architectures == ["BeitForImageClassification"]
    with torch.no_grad():
        torch.testing.assert_close(native(x).logits, expected, atol=1e-4, rtol=0)


def _saved_classifier(tmp_path):
    model = CXRViTForImageClassification(
        CXRClassifierConfig.from_preset(TINY, id2label=dict(enumerate(NIH14)))
    )
    with torch.no_grad():  # a non-trivial head so the scores differ per finding
        model.classifier.weight.normal_(0, 0.5)
    model.save_pretrained(tmp_path)
    build_image_processor(model.config).save_pretrained(tmp_path)
    return model


def test_pipeline_gives_a_sigmoid_score_per_finding(tmp_path, nih_dir):
    model = _saved_classifier(tmp_path).eval()
    classify = pipeline("image-classification", model=str(tmp_path), top_k=len(NIH14))
    png = sorted((nih_dir / "images").glob("*.png"))[0]
    scores = classify(str(png))
    assert sorted(s["label"] for s in scores) == sorted(NIH14)
    assert all(0 < s["score"] < 1 for s in scores)
    assert abs(sum(s["score"] for s in scores) - 1) > 1e-3  # independent sigmoids, not a softmax
    # Same numbers as our model on the processor's tensor.
    processor = build_image_processor(model.config)
    with torch.no_grad():
        probs = torch.sigmoid(model(**processor(read_xray(png), return_tensors="pt")).logits)[0]
    by_name = {s["label"]: s["score"] for s in scores}
    np.testing.assert_allclose([by_name[n] for n in NIH14], probs.numpy(), atol=1e-5)


def test_from_mae_keeps_encoder_and_starts_small_head():
    mae = CXRMAEForPreTraining(CXRMAEConfig.from_preset(TINY)).eval()
    clf = CXRViTForImageClassification.from_checkpoint(mae, id2label=NIH14, pooling="cls").eval()
    assert clf.config.num_labels == 14 and clf.config.id2label[13] == "Hernia"
    assert clf.classifier.weight.std().item() < 1e-4 and torch.all(clf.classifier.bias == 0)
    torch.testing.assert_close(clf.beit.layers[1].mlp.fc2.weight, mae.vit.layers[1].mlp.fc2.weight)
    # With no masking, the cls-token feature equals the MAE encoder's (key bias dropped exactly).
    mae.vit.config.mask_ratio = 0.0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            clf.beit(x).pooler_output, mae.vit(x).last_hidden_state[:, 0], atol=1e-5, rtol=0
        )


def test_from_mae_path_at_larger_size_interpolates_positions(tmp_path):
    mae = CXRMAEForPreTraining(CXRMAEConfig.from_preset(TINY))
    mae.save_pretrained(tmp_path)
    clf = CXRViTForImageClassification.from_checkpoint(
        str(tmp_path), id2label=NIH14, image_size=128
    )
    pos = clf.beit.embeddings.position_embeddings
    assert pos.shape == (1, 1 + 16 * 16, 64)
    expected = resample_abs_pos_embed(
        mae.vit.embeddings.position_embeddings.detach(),
        (16, 16),
        num_prefix_tokens=1,
        interpolation="bicubic",
        antialias=False,
    )
    torch.testing.assert_close(pos.detach(), expected, atol=1e-5, rtol=0)
    assert clf(torch.randn(1, 3, 128, 128)).logits.shape == (1, 14)


def test_label_count_mismatch_is_refused_unless_reinit(tmp_path):
    _saved_classifier(tmp_path)
    with pytest.raises(ValueError, match=r"14-label head.*5 labels.*reinit_head=True"):
        CXRViTForImageClassification.from_checkpoint(str(tmp_path), id2label=list("abcde"))
    clf = CXRViTForImageClassification.from_checkpoint(
        str(tmp_path), id2label=list("abcde"), reinit_head=True
    )
    assert clf.classifier.weight.shape == (5, 64) and clf.classifier.weight.std() < 1e-4
    same = CXRViTForImageClassification.from_checkpoint(str(tmp_path))
    assert same.classifier.weight.std() > 0.1  # kept


def test_other_architecture_is_refused(tmp_path):
    from transformers import ViTConfig, ViTModel

    ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'vit' checkpoint"):
        CXRViTForImageClassification.from_checkpoint(str(tmp_path), id2label=NIH14)


def test_multilabel_loss_and_ignored_entries():
    clf = CXRViTForImageClassification(
        CXRClassifierConfig.from_preset(TINY, id2label=dict(enumerate("abc")))
    )
    x = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([[1, 0, 1], [0, 0, 1]])  # ints are accepted
    out = clf(x, labels=labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels.float())
    torch.testing.assert_close(out.loss, expected)
    masked = torch.tensor([[1, IGNORE_LABEL, 1], [0, 0, IGNORE_LABEL]])
    keep = masked != IGNORE_LABEL
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        out.logits[keep], masked[keep].float()
    )
    torch.testing.assert_close(clf(x, labels=masked).loss, expected)


def test_single_label_uses_cross_entropy():
    config = CXRClassifierConfig.from_preset(
        TINY, id2label=dict(enumerate("abcd")), problem_type="single_label_classification"
    )
    clf = CXRViTForImageClassification(config)
    x, labels = torch.randn(3, 3, 64, 64), torch.tensor([0, 3, 1])
    out = clf(x, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


def test_drop_path_rises_linearly():
    config = CXRClassifierConfig.from_preset("vit-small-patch16", drop_path_rate=0.2, num_labels=2)
    clf = CXRViTForImageClassification(config)
    rates = [getattr(layer.drop_path, "drop_prob", 0.0) for layer in clf.beit.layers]
    np.testing.assert_allclose(rates, np.linspace(0, 0.2, 12), atol=1e-9)


def test_classifier_bad_input():
    clf = CXRViTForImageClassification(CXRClassifierConfig.from_preset(TINY, num_labels=2))
    with pytest.raises(ValueError, match="expand"):
        clf(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        clf(torch.randn(1, 3, 66, 66), interpolate_pos_encoding=True)
