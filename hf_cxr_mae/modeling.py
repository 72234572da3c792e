"""The MAE pre-training model and the ViT classifier (how a run builds them from its arguments:
``training/model_setup.py``).

Both models are thin subclasses of transformers classes: they add the official MAE
initialisation, input checks and builders, and save as the native classes
(``ViTMAEForPreTraining`` / ``BeitForImageClassification``), so checkpoints load anywhere
without this package or remote code. (Layer-wise LR decay lives in ``training/optim.py``.)
"""

from __future__ import annotations

import math
import re
from os import PathLike
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    BeitForImageClassification,
    BeitModel,
    PreTrainedModel,
    ViTMAEConfig,
    ViTMAEForPreTraining,
    ViTMAEModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.beit.modeling_beit import BeitEmbeddings
from transformers.models.vit_mae.modeling_vit_mae import (
    ViTMAEDecoder,
    ViTMAEEmbeddings,
    ViTMAEForPreTrainingOutput,
    build_2d_sinusoidal_position_embedding,
)

from .configuration import CXRClassifierConfig, CXRMAEConfig
from .constants import IGNORE_LABEL

# MAE fine-tuning initialises the new head with a tiny std so training starts near zero logits.
HEAD_INIT_STD = 2e-5


def sincos_pos_embed(grid_size: int, dim: int, cls_token: bool = True) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table, shape ``(1, grid_size**2 [+1], dim)``.

    Layout per position: ``[sin(x), cos(x), sin(y), cos(y)]`` with x the column, y the row,
    i.e. the official MAE layout (the one its released weights were trained with).
    """
    table = build_2d_sinusoidal_position_embedding(grid_size, grid_size, dim, cls_token=cls_token)
    half = dim // 2
    # transformers builds [sin(y), cos(y), sin(x), cos(x)]; MAE's weights expect x first.
    return torch.cat([table[:, half:], table[:, :half]], dim=1).unsqueeze(0)


def check_pixel_values(
    pixel_values: torch.Tensor, config: ViTMAEConfig, interpolate_pos_encoding: bool = False
) -> None:
    """Raise a clear ``ValueError`` when a batch does not fit the model."""
    channels, size, patch = config.num_channels, config.image_size, config.patch_size
    if pixel_values is None or pixel_values.ndim != 4 or pixel_values.shape[1] != channels:
        shape = None if pixel_values is None else tuple(pixel_values.shape)
        raise ValueError(
            f"Expected pixel_values of shape (batch, {channels}, {size}, {size}), got {shape}. "
            "X-rays are one channel: expand them with `x.expand(-1, 3, -1, -1)` (the image "
            "processor and `hf_cxr_mae` transforms do this)."
        )
    height, width = pixel_values.shape[-2:]
    if height % patch or width % patch:
        raise ValueError(
            f"Image size {height}x{width} is not a multiple of the patch size {patch}."
        )
    if not interpolate_pos_encoding and (height, width) != (size, size):
        raise ValueError(
            f"Expected {size}x{size} images, got {height}x{width}; pass "
            "interpolate_pos_encoding=True to run at another size."
        )


def _xavier_linear_(weight: torch.Tensor) -> None:
    """Xavier-uniform on a weight viewed as a Linear ``(out, -1)`` (MAE's patch projection init)."""
    if getattr(weight, "_is_hf_initialized", False):
        return
    fan_out, fan_in = weight.shape[0], weight[0].numel()
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    init.uniform_(weight, -bound, bound)


class _MAEInitMixin:
    """The official MAE initialisation, replacing transformers' normal(0.02) defaults.

    transformers 5.x builds ``ViTMAEForPreTraining`` with zero, frozen position embeddings and
    zero cls / mask tokens (its embedding init is skipped once the patch projection is flagged
    as initialised). Here each module is initialised on its own, so order cannot skip it.
    Guarded ``transformers.initialization`` functions leave loaded weights untouched.
    """

    config: ViTMAEConfig

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            _xavier_linear_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (ViTMAEEmbeddings, BeitEmbeddings)):
            grid = self.config.image_size // self.config.patch_size
            pos = module.position_embeddings
            if pos is not None:
                init.copy_(pos, sincos_pos_embed(grid, pos.shape[-1]).to(pos.dtype))
            init.normal_(module.cls_token, std=self.config.initializer_range)
        elif isinstance(module, ViTMAEDecoder):
            grid = self.config.image_size // self.config.patch_size
            pos = module.decoder_pos_embed
            init.copy_(pos, sincos_pos_embed(grid, pos.shape[-1]).to(pos.dtype))
            init.normal_(module.mask_token, std=self.config.initializer_range)


class _NativeSaveMixin:
    """Write the parent transformers class into ``config.architectures`` so the checkpoint is native."""

    _native_architecture: str

    def save_pretrained(self, save_directory: str | PathLike, *args: Any, **kwargs: Any) -> None:
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.config.architectures = [self._native_architecture]
            self.config.save_pretrained(save_directory)


class CXRMAEModel(_MAEInitMixin, ViTMAEModel):
    """MAE encoder (``ViTMAEModel``) with the official initialisation."""

    config_class = CXRMAEConfig


class CXRMAEForPreTraining(_NativeSaveMixin, _MAEInitMixin, ViTMAEForPreTraining):
    """Masked autoencoder for pre-training, saved as a standard ``vit_mae`` checkpoint.

    The loss is the mean squared error over masked patches only (per-patch normalised targets
    with ``config.norm_pix_loss``), as in the MAE paper.
    """

    config_class = CXRMAEConfig
    _native_architecture = "ViTMAEForPreTraining"

    def __init__(self, config: ViTMAEConfig) -> None:
        # Skip ViTMAEForPreTraining.__init__ so the encoder is built once, as our subclass.
        PreTrainedModel.__init__(self, config)
        self.config = config
        self.vit = CXRMAEModel(config)
        self.decoder = ViTMAEDecoder(
            config, num_patches=self.vit.embeddings.patch_embeddings.num_patches
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Any,
    ) -> ViTMAEForPreTrainingOutput:
        check_pixel_values(pixel_values, self.config, bool(interpolate_pos_encoding))
        return super().forward(
            pixel_values, noise=noise, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )


class _CXRBeitModel(_MAEInitMixin, BeitModel):
    """BEiT encoder initialised like an MAE encoder (used inside the classifier)."""


class CXRViTForImageClassification(_NativeSaveMixin, _MAEInitMixin, BeitForImageClassification):
    """ViT classifier with MAE's fine-tuning head, saved as native ``BeitForImageClassification``.

    Multi-label: sigmoid per finding, BCE-with-logits on float multi-hot targets; entries equal to
    ``IGNORE_LABEL`` (-1) are left out of the loss. Single-label: cross-entropy.
    Stochastic depth rises linearly from 0 to ``config.drop_path_rate`` over the blocks.
    """

    config_class = CXRClassifierConfig
    _native_architecture = "BeitForImageClassification"

    def __init__(self, config: CXRClassifierConfig) -> None:
        PreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.beit = _CXRBeitModel(config, add_pooling_layer=True)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "classifier", None):
            init.trunc_normal_(module.weight, std=HEAD_INIT_STD)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Any,
    ) -> ImageClassifierOutput:
        check_pixel_values(pixel_values, self.config, interpolate_pos_encoding)
        outputs = super().forward(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        if labels is not None:
            outputs.loss = classification_loss(outputs.logits, labels, self.config.problem_type)
        return outputs

    @classmethod
    def from_checkpoint(
        cls,
        source: PreTrainedModel | str | PathLike,
        id2label: dict[int, str] | list[str] | None = None,
        reinit_head: bool = False,
        **config_overrides: Any,
    ) -> CXRViTForImageClassification:
        """Build a classifier from a pre-trained MAE or another classifier (object, path or repo id).

        From an MAE: encoder weights kept, position embeddings resized (bicubic) to
        ``image_size`` if it differs, new head (std 2e-5) and new pooling norm. From a classifier:
        everything kept; a different label count is refused unless ``reinit_head=True``.
        """
        if isinstance(id2label, (list, tuple)):
            id2label = dict(enumerate(id2label))
        source_model = _load_source(source)
        src_cfg = source_model.config
        if isinstance(source_model, BeitForImageClassification):
            config = CXRClassifierConfig.from_dict(src_cfg.to_dict(), **config_overrides)
            if id2label is not None:
                config.id2label = id2label
                config.label2id = {v: k for k, v in id2label.items()}
            same_labels = config.num_labels == src_cfg.num_labels
            if not same_labels and not reinit_head:
                raise ValueError(
                    f"The checkpoint has a {src_cfg.num_labels}-label head "
                    f"({list(src_cfg.id2label.values())}) but {config.num_labels} labels were asked "
                    f"for ({list(config.id2label.values())}). Pass reinit_head=True "
                    "(--reinit_head in the recipes) to start a new head."
                )
            state = source_model.state_dict()
            if not same_labels or reinit_head:
                state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        else:
            overrides = dict(config_overrides)
            if id2label is not None:
                overrides["id2label"] = id2label
            config = CXRClassifierConfig.from_mae_config(src_cfg, **overrides)
            encoder = source_model.vit if hasattr(source_model, "vit") else source_model
            state = {
                "beit." + k: v
                for k, v in encoder.state_dict().items()
                # BEiT has no key bias: softmax ignores a per-query constant, so this is exact.
                if not k.endswith("k_proj.bias") and not k.startswith("layernorm.")
            }
            if config.pooling == "cls":
                # Token pooling uses the encoder's final norm; mean pooling gets a fresh one.
                state.update(
                    {"beit.layernorm." + k: v for k, v in encoder.layernorm.state_dict().items()}
                )
        model = cls(config)
        key = "beit.embeddings.position_embeddings"
        grid = config.image_size // config.patch_size
        if key in state and state[key].shape[1] != grid * grid + 1:
            state[key] = resize_pos_embed(state[key], grid)
        missing, unexpected = model.load_state_dict(state, strict=False)
        allowed_missing = re.compile(r"^(classifier\.|beit\.pooler\.|beit\.layernorm\.)")
        bad = [k for k in missing if not allowed_missing.match(k)]
        if bad or unexpected:
            raise ValueError(
                f"Checkpoint does not fit the classifier: missing {bad}, unexpected {unexpected}."
            )
        return model


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None
) -> torch.Tensor:
    """BCE-with-logits over non-ignored entries (multi-label) or cross-entropy (single-label;
    class indices or, after mixup, class probabilities)."""
    if problem_type == "single_label_classification":
        if labels.ndim == 2 and labels.is_floating_point():
            return F.cross_entropy(logits, labels.to(logits.dtype))
        return F.cross_entropy(logits, labels.long().view(-1))
    labels = labels.to(logits.dtype)
    valid = labels != IGNORE_LABEL
    loss = F.binary_cross_entropy_with_logits(logits, labels.clamp(min=0), reduction="none")
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: int) -> torch.Tensor:
    """Bicubic resize of a ``(1, 1 + g*g, D)`` position table to ``new_grid``; cls row kept."""
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    old_grid = math.isqrt(patch_pos.shape[1])
    dim = patch_pos.shape[-1]
    grid = patch_pos.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos], dim=1)


def _load_source(source: PreTrainedModel | str | PathLike) -> PreTrainedModel:
    if isinstance(source, PreTrainedModel):
        model = source
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(source)
        model_type = config.model_type
        if model_type == "vit_mae":
            full = "ViTMAEForPreTraining" in (config.architectures or [])
            model = (ViTMAEForPreTraining if full else ViTMAEModel).from_pretrained(source)
        elif model_type == "beit":
            model = BeitForImageClassification.from_pretrained(source)
        else:
            raise ValueError(
                f"{source} is a {model_type!r} checkpoint; expected a ViT MAE ('vit_mae') or a "
                "classifier saved by hf_cxr_mae ('beit')."
            )
    if isinstance(model, BeitForImageClassification):
        cfg = model.config
        if (
            cfg.use_relative_position_bias
            or cfg.use_shared_relative_position_bias
            or cfg.layer_scale_init_value
        ):
            raise ValueError(
                "This BEiT checkpoint uses relative position bias or layer scale; it is not an MAE ViT."
            )
        return model
    if not isinstance(model, (ViTMAEModel, ViTMAEForPreTraining)):
        raise ValueError(
            f"Cannot build a classifier from a {type(model).__name__}; expected a ViT MAE."
        )
    return model
