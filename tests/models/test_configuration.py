"""The configurations (``hf_cxr_mae.configuration``): presets match the official models, unknown
presets list the valid names, the classifier config saves as native BEiT, extra fields survive,
bad values are named."""

import json

import pytest
from transformers import AutoConfig, BeitConfig, ViTMAEConfig

from hf_cxr_mae import CXRClassifierConfig, CXRMAEConfig, preset_names
from hf_cxr_mae.constants import eval_resize_size

OFFICIAL = {
    # name: (width, depth, heads, mlp, dec width, dec depth, dec heads)
    "vit-small-patch16-dec512d2b": (384, 12, 6, 1536, 512, 2, 16),
    "vit-base-patch16-dec512d8b": (768, 12, 12, 3072, 512, 8, 16),
    "vit-large-patch16-dec512d8b": (1024, 24, 16, 4096, 512, 8, 16),
}


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_presets_match_official_models(name):
    c = CXRMAEConfig.from_preset(name)
    got = (
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.intermediate_size,
        c.decoder_hidden_size,
        c.decoder_num_hidden_layers,
        c.decoder_num_attention_heads,
    )
    assert got == OFFICIAL[name]
    assert (c.patch_size, c.image_size, c.mask_ratio, c.layer_norm_eps) == (16, 224, 0.90, 1e-6)
    assert c.image_mean == [0.5056] * 3 and c.image_std == [0.252] * 3
    assert eval_resize_size(c) == 256
    assert isinstance(c, ViTMAEConfig) and c.model_type == "vit_mae"


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError) as err:
        CXRMAEConfig.from_preset("vit-huge")
    for name in preset_names():
        assert name in str(err.value)


def test_classifier_config_accepts_encoder_alias_and_overrides():
    c = CXRClassifierConfig.from_preset(
        "vit-base-patch16", id2label=dict(enumerate("abc")), drop_path_rate=0.1
    )
    assert (c.hidden_size, c.num_hidden_layers) == (768, 12)
    assert c.num_labels == 3 and c.label2id == {"a": 0, "b": 1, "c": 2}
    assert c.problem_type == "multi_label_classification"
    assert c.drop_path_rate == 0.1 and c.layer_decay == 0.55 and c.pooling == "mean"
    assert isinstance(c, ViTMAEConfig)


def test_classifier_config_saves_as_native_beit(tmp_path):
    c = CXRClassifierConfig.from_preset(
        "vit-small-patch16", id2label={0: "x", 1: "y"}, pooling="cls"
    )
    c.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "beit"
    assert "decoder_hidden_size" not in raw and "mask_ratio" not in raw
    native = AutoConfig.from_pretrained(tmp_path)
    assert type(native) is BeitConfig
    assert native.use_mean_pooling is False and native.layer_scale_init_value == 0.0
    assert native.layer_decay == 0.55  # recipe fields survive
    back = CXRClassifierConfig.from_pretrained(tmp_path)
    assert back.pooling == "cls" and back.id2label == {0: "x", 1: "y"}


def test_mae_config_extra_fields_survive(tmp_path):
    CXRMAEConfig.from_preset("vit-small-patch16-dec512d2b", mask_ratio=0.8).save_pretrained(
        tmp_path
    )
    native = AutoConfig.from_pretrained(tmp_path)
    assert type(native) is ViTMAEConfig
    assert native.mask_ratio == 0.8 and native.preset == "vit-small-patch16-dec512d2b"
    assert native.image_mean == [0.5056] * 3


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"mask_ratio": 0.0}, "mask_ratio"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"image_size": 230}, "multiple of patch_size"),
        ({"image_mean": [0.5]}, "image_mean"),
    ],
)
def test_bad_mae_config_values(kwargs, words):
    with pytest.raises(ValueError, match=words):
        CXRMAEConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"pooling": "max"}, "pooling"),
        ({"layer_decay": 0.0}, "layer_decay"),
        ({"drop_path_rate": 1.0}, "drop_path"),
    ],
)
def test_bad_classifier_config_values(kwargs, words):
    with pytest.raises(ValueError, match=words):
        CXRClassifierConfig(**kwargs)
