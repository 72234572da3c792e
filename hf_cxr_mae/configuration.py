"""Configurations for chest X-ray MAE pre-training and multi-label classification.

Both configs subclass :class:`transformers.ViTMAEConfig`, so every encoder field keeps its
transformers name and meaning. They differ in what they serialise as:

* :class:`CXRMAEConfig` keeps ``model_type="vit_mae"``: a pre-training checkpoint is a plain
  ``vit_mae`` checkpoint that ``AutoModel`` / ``AutoModelForPreTraining`` load natively.
* :class:`CXRClassifierConfig` serialises as ``model_type="beit"`` with the BEiT switches that make
  ``BeitForImageClassification`` compute MAE's fine-tuning head exactly (mean pooling + LayerNorm,
  absolute position embeddings, no relative bias, no layer scale). ``AutoModelForImageClassification``
  and ``pipeline("image-classification")`` load it with no remote code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import ViTMAEConfig

# Mean / std of chest X-ray intensities (scaled to [0, 1]) used by the paper's code.
CXR_MEAN = 0.5056
CXR_STD = 0.252
# The paper's masking ratio: the one default for pre-training (config and recipe). Showing a
# trained MAE's reconstructions uses that MAE's own ``config.mask_ratio`` unless asked otherwise.
MASK_RATIO = 0.90

# One readable table, timm-style. Names follow the official code's model names.
# enc: (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size)
# dec: (decoder_hidden_size, decoder_num_hidden_layers, decoder_num_attention_heads,
#       decoder_intermediate_size)
_PRESETS: dict[str, dict[str, Any]] = {
    "vit-small-patch16-dec512d2b": {"enc": (384, 12, 6, 1536), "dec": (512, 2, 16, 2048)},
    "vit-base-patch16-dec512d8b": {"enc": (768, 12, 12, 3072), "dec": (512, 8, 16, 2048)},
    "vit-large-patch16-dec512d8b": {"enc": (1024, 24, 16, 4096), "dec": (512, 8, 16, 2048)},
    # Tiny model for tests and the CPU demo: 64 px images, 8 px patches (64 tokens).
    "vit-test-patch8-dec32d1b": {
        "enc": (64, 2, 4, 128),
        "dec": (32, 1, 4, 64),
        "image_size": 64,
        "patch_size": 8,
    },
}


_MAE_ONLY_FIELDS = (
    "decoder_hidden_size",
    "decoder_num_hidden_layers",
    "decoder_num_attention_heads",
    "decoder_intermediate_size",
    "mask_ratio",
    "norm_pix_loss",
)


# The valid range of each model / recipe setting that is checked both as a flag and in a config:
# (test, what the error says it must be).
_VALID: dict[str, tuple[Callable[[Any], bool], str]] = {
    "mask_ratio": (lambda v: 0.0 < v < 1.0, "in (0, 1)"),
    "drop_path_rate": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "layer_decay": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "pooling": (lambda v: v in ("mean", "cls"), "'mean' or 'cls'"),
}


def check_setting(name: str, value: Any, flag: str | None = None) -> None:
    """Refuse a ``mask_ratio`` / ``drop_path_rate`` / ``layer_decay`` / ``pooling`` out of its
    range, named as the user gave it (``flag``, e.g. ``--mask_ratio``) or as the config field."""
    valid, what = _VALID[name]
    if not valid(value):
        raise ValueError(f"{flag or name} must be {what}, got {value!r}.")


def preset_names() -> list[str]:
    """Names accepted by ``from_preset`` (encoder-only aliases such as ``vit-small-patch16`` too)."""
    return list(_PRESETS)


def preset_kwargs(name: str) -> dict[str, Any]:
    """Config fields of a named preset.

    ``name`` is a full preset name or its encoder prefix (``vit-small-patch16`` matches
    ``vit-small-patch16-dec512d2b``), since a classifier has no decoder.
    """
    matches = [key for key in _PRESETS if key == name or key.startswith(name + "-dec")]
    if len(matches) != 1:
        raise ValueError(f"Unknown preset {name!r}. Valid presets: {', '.join(_PRESETS)}.")
    spec = _PRESETS[matches[0]]
    hidden, layers, heads, mlp = spec["enc"]
    dec_hidden, dec_layers, dec_heads, dec_mlp = spec["dec"]
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": mlp,
        "decoder_hidden_size": dec_hidden,
        "decoder_num_hidden_layers": dec_layers,
        "decoder_num_attention_heads": dec_heads,
        "decoder_intermediate_size": dec_mlp,
        "image_size": spec.get("image_size", 224),
        "patch_size": spec.get("patch_size", 16),
        "preset": matches[0],
    }


class _PresetMixin:
    @classmethod
    def from_preset(cls, name: str, **overrides: Any):
        """Build a config from a named preset, any field overridable by keyword."""
        kwargs = preset_kwargs(name)
        kwargs.update(overrides)
        return cls(**kwargs)

    def _validate_cxr_fields(self) -> None:
        size = self.image_size
        if isinstance(size, (list, tuple)):
            raise ValueError(f"image_size must be a single int (square images), got {size!r}.")
        if size % self.patch_size:
            raise ValueError(
                f"image_size={size} is not a multiple of patch_size={self.patch_size}."
            )
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ValueError(
                f"image_mean / image_std need {self.num_channels} values (one per channel), got "
                f"{list(self.image_mean)} / {list(self.image_std)}."
            )
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}.")


class CXRMAEConfig(_PresetMixin, ViTMAEConfig):
    """MAE pre-training config with the paper's defaults (mask 90%, eps 1e-6, CXR mean/std).

    Example::

        config = CXRMAEConfig.from_preset("vit-small-patch16-dec512d2b")
    """

    model_type = "vit_mae"

    layer_norm_eps: float = 1e-6
    mask_ratio: float | int = MASK_RATIO
    decoder_num_hidden_layers: int = 2
    image_mean: list[float] | tuple[float, ...] = (CXR_MEAN, CXR_MEAN, CXR_MEAN)
    image_std: list[float] | tuple[float, ...] = (CXR_STD, CXR_STD, CXR_STD)
    crop_pct: float = 224 / 256
    preset: str | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.image_mean = list(self.image_mean)
        self.image_std = list(self.image_std)
        check_setting("mask_ratio", self.mask_ratio)
        self._validate_cxr_fields()


class CXRClassifierConfig(_PresetMixin, ViTMAEConfig):
    """Multi-label (or single-label) ViT classifier config; saved as a native BEiT config.

    ``pooling="mean"`` is MAE's fine-tuning head (mean of patch tokens, LayerNorm, Linear);
    ``pooling="cls"`` takes the final-norm cls token. ``drop_path_rate`` and the ``layer_decay``
    the model was fine-tuned with (recorded by the recipes; 1.0: none) travel with the model.
    """

    model_type = "beit"

    layer_norm_eps: float = 1e-6
    drop_path_rate: float | int = 0.2
    pooling: str = "mean"
    layer_decay: float | int = 0.55
    image_mean: list[float] | tuple[float, ...] = (CXR_MEAN, CXR_MEAN, CXR_MEAN)
    image_std: list[float] | tuple[float, ...] = (CXR_STD, CXR_STD, CXR_STD)
    crop_pct: float = 224 / 256
    preset: str | None = None
    # Fixed BEiT switches: this combination is exactly a ViT with MAE's head.
    use_mean_pooling: bool = True
    use_absolute_position_embeddings: bool = True
    use_relative_position_bias: bool = False
    use_shared_relative_position_bias: bool = False
    use_mask_token: bool = False
    layer_scale_init_value: float | int = 0.0

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.problem_type is None:
            self.problem_type = "multi_label_classification"
        check_setting("pooling", self.pooling)
        self.use_mean_pooling = self.pooling == "mean"
        if self.use_relative_position_bias or self.use_shared_relative_position_bias:
            raise ValueError("CXRClassifierConfig does not support BEiT relative position bias.")
        if self.layer_scale_init_value:
            raise ValueError("CXRClassifierConfig does not support layer scale (MAE has none).")
        if not self.use_absolute_position_embeddings:
            raise ValueError("CXRClassifierConfig needs absolute position embeddings.")
        check_setting("drop_path_rate", self.drop_path_rate)
        check_setting("layer_decay", self.layer_decay)
        self.image_mean = list(self.image_mean)
        self.image_std = list(self.image_std)
        if self.id2label is not None and not self.label2id:
            self.label2id = {name: int(idx) for idx, name in self.id2label.items()}
        self._validate_cxr_fields()

    def to_dict(self) -> dict[str, Any]:
        # A classifier has no decoder and no masking: keep those MAE fields out of config.json.
        out = super().to_dict()
        for key in _MAE_ONLY_FIELDS:
            out.pop(key, None)
        return out

    @classmethod
    def from_mae_config(cls, mae_config: ViTMAEConfig, **overrides: Any) -> CXRClassifierConfig:
        """Classifier config with the encoder of an MAE config (decoder fields dropped)."""
        keys = [
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "hidden_act",
            "layer_norm_eps",
            "image_size",
            "patch_size",
            "num_channels",
            "qkv_bias",
            "initializer_range",
            "preset",
            "image_mean",
            "image_std",
            "crop_pct",
        ]
        kwargs = {k: getattr(mae_config, k) for k in keys if hasattr(mae_config, k)}
        kwargs.update(overrides)
        return cls(**kwargs)
