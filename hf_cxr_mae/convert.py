"""Official MAE / timm checkpoints -> our native formats.

Sources: the official medical_mae pre-training checkpoint (``MaskedAutoencoderViT`` keys), its
fine-tuned classifiers (timm ``VisionTransformer`` with ``fc_norm`` + ``head``, or ``norm`` and the
cls token), and timm-format safetensors of the same models, whatever the file's suffix (its format
and declared sizes are checked first, in ``checkpoint_files``). The architecture is read from
tensor shapes; a tensor that does not fit it, or a source key that is not used, fails the
conversion naming it; the converted model is checked by a forward pass before anything is written.
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .checkpoint_files import CheckpointError, checkpoint_format, refused_global

# timm block sub-module -> transformers (ViTMAE / BEiT share these names in 5.x).
_BLOCK_MAP = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_BLOCK_KEY = re.compile(r"^(?:blocks|decoder_blocks)\.(\d+)\.(.+)\.(weight|bias)$")
HEAD_DIM = 64  # the official ViT-S/B/L models all use 64-wide heads (not readable from shapes)
DECODER_HEADS = 16


def _split_block_key(
    key: str, value: torch.Tensor, prefix: str, keep_k_bias: bool
) -> dict[str, torch.Tensor]:
    match = _BLOCK_KEY.match(key)
    if match is None:
        raise KeyError(f"Unknown key {key!r} in the source checkpoint.")
    index, module, kind = match.groups()
    base = f"{prefix}{index}."
    if module == "attn.qkv":
        q, k, v = value.chunk(3, dim=0)
        out = {f"{base}attention.q_proj.{kind}": q, f"{base}attention.v_proj.{kind}": v}
        if kind == "weight" or keep_k_bias:
            out[f"{base}attention.k_proj.{kind}"] = k
        return out
    if module not in _BLOCK_MAP:
        raise KeyError(f"Unknown key {key!r} in the source checkpoint.")
    return {f"{base}{_BLOCK_MAP[module]}.{kind}": value}


def timm_vit_to_classifier(
    state_dict: dict[str, torch.Tensor], origin: dict[str, str] | None = None
) -> dict[str, torch.Tensor]:
    """A timm ``VisionTransformer`` state dict (MAE fine-tuned) -> ``BeitForImageClassification`` keys.

    ``fc_norm`` (global-pool head) maps to the mean-pooling norm, ``norm`` (cls-token head) to the
    final norm. Raises ``KeyError`` naming any key it does not know. ``origin``, when given, is
    filled with the source key of each output key.
    """
    fixed = {
        "cls_token": "beit.embeddings.cls_token",
        "pos_embed": "beit.embeddings.position_embeddings",
        "patch_embed.proj.weight": "beit.embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "beit.embeddings.patch_embeddings.projection.bias",
        "fc_norm.weight": "beit.pooler.layernorm.weight",
        "fc_norm.bias": "beit.pooler.layernorm.bias",
        "norm.weight": "beit.layernorm.weight",
        "norm.bias": "beit.layernorm.bias",
        "head.weight": "classifier.weight",
        "head.bias": "classifier.bias",
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in fixed:
            piece = {fixed[key]: value}
        else:
            # BEiT has no key bias; dropping it is exact (softmax ignores a per-query constant).
            piece = _split_block_key(key, value, "beit.layers.", keep_k_bias=False)
        out.update(piece)
        if origin is not None:
            origin.update(dict.fromkeys(piece, key))
    return out


def official_mae_to_ours(
    state_dict: dict[str, torch.Tensor], origin: dict[str, str] | None = None
) -> dict[str, torch.Tensor]:
    """Official ``MaskedAutoencoderViT`` keys -> ``CXRMAEForPreTraining`` state-dict keys
    (``origin`` as in ``timm_vit_to_classifier``)."""
    fixed = {
        "cls_token": "vit.embeddings.cls_token",
        "pos_embed": "vit.embeddings.position_embeddings",
        "patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
        "norm.weight": "vit.layernorm.weight",
        "norm.bias": "vit.layernorm.bias",
        "decoder_embed.weight": "decoder.decoder_embed.weight",
        "decoder_embed.bias": "decoder.decoder_embed.bias",
        "mask_token": "decoder.mask_token",
        "decoder_pos_embed": "decoder.decoder_pos_embed",
        "decoder_norm.weight": "decoder.decoder_norm.weight",
        "decoder_norm.bias": "decoder.decoder_norm.bias",
        "decoder_pred.weight": "decoder.decoder_pred.weight",
        "decoder_pred.bias": "decoder.decoder_pred.bias",
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in fixed:
            piece = {fixed[key]: value}
        elif key.startswith("decoder_blocks."):
            piece = _split_block_key(key, value, "decoder.decoder_layers.", keep_k_bias=True)
        else:
            piece = _split_block_key(key, value, "vit.layers.", keep_k_bias=True)
        out.update(piece)
        if origin is not None:
            origin.update(dict.fromkeys(piece, key))
    return out


def load_source(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a PyTorch (``torch.load(weights_only=True)``, plus ``argparse.Namespace`` for
    the ``args`` entry of training dictionaries) or safetensors file, whatever its suffix; the
    ``model`` / ``state_dict`` entry of a training dictionary."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder; give the checkpoint file (.pth / .safetensors) inside it."
        )
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    if checkpoint_format(path) == "safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        # MAE-style training dictionaries hold {'args': argparse.Namespace}: a plain attribute
        # container that runs no code when unpickled; it is the only class allowed beyond tensors.
        # An open file, not the path: torch.load picks a reader by suffix (".safetensors").
        with torch.serialization.safe_globals([argparse.Namespace]), path.open("rb") as file:
            data = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err) and "Weights only load failed" not in str(err):
            raise CheckpointError(f"{path}: a corrupt PyTorch checkpoint ({err}).") from err
        found = refused_global(err)
        raise CheckpointError(
            f"{path} needs arbitrary unpickling (it holds Python objects beyond tensors"
            f"{f': global {found}' if found else ''}), which can run code: a pickle the safe "
            "loader refused. Re-save its state dict with torch.save(state_dict) or as safetensors."
        ) from err
    except (RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: a corrupt PyTorch checkpoint ({err}).") from err
    if isinstance(data, dict):
        for key in ("model", "state_dict", "model_state"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a dictionary of tensors.")
    tensors = {k.removeprefix("module."): v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors (keys: {list(data)[:10]}).")
    return tensors


def _count(prefix: str, state: dict[str, torch.Tensor]) -> int:
    return len({int(m.group(1)) for k in state if (m := re.match(rf"^{prefix}\.(\d+)\.", k))})


def _tensor(state: dict[str, torch.Tensor], key: str, ndim: int) -> torch.Tensor:
    """``state[key]``, checked to exist with ``ndim`` dimensions (the architecture is read from it)."""
    if key not in state:
        raise CheckpointError(f"The checkpoint has no {key!r}, needed to read the architecture.")
    if state[key].ndim != ndim:
        raise CheckpointError(
            f"{key} has shape {tuple(state[key].shape)}; a ViT checkpoint has {ndim} dimensions there."
        )
    return state[key]


def check_shapes(
    model: torch.nn.Module, mapped: dict[str, torch.Tensor], origin: dict[str, str], what: str
) -> None:
    """Every converted tensor has the shape the architecture read from the checkpoint needs;
    otherwise one sentence per source key: expected and found shape."""
    expected = model.state_dict()
    wrong: dict[str, str] = {}
    for key, value in mapped.items():
        if key in expected and expected[key].shape != value.shape:
            source_key = origin.get(key, key)
            # A fused qkv tensor is checked through its q / k / v parts: say which part.
            part = (
                f" (its {key.split('.')[-2]} part)"
                if source_key.endswith(("qkv.weight", "qkv.bias"))
                else ""
            )
            wrong.setdefault(
                source_key,
                f"{source_key}{part}: expected shape {tuple(expected[key].shape)}, "
                f"found {tuple(value.shape)}",
            )
    if wrong:
        lines = list(wrong.values())
        raise CheckpointError(
            f"{len(lines)} tensor(s) do not fit the architecture read from patch_embed, pos_embed "
            f"and blocks.0 ({what}):\n  " + "\n  ".join(lines[:20])
        )


def infer_encoder(state: dict[str, torch.Tensor], num_heads: int | None = None) -> dict[str, Any]:
    """Encoder fields from tensor shapes (heads from the 64-wide head convention unless given)."""
    proj = _tensor(state, "patch_embed.proj.weight", 4)
    hidden, channels, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    if proj.shape[3] != patch:
        raise CheckpointError(
            f"patch_embed.proj.weight has non-square patches {tuple(proj.shape)}."
        )
    tokens = _tensor(state, "pos_embed", 3).shape[1] - 1
    grid = round(tokens**0.5)
    if grid * grid != tokens:
        raise CheckpointError(
            f"pos_embed has {tokens} patch positions (+1 cls), not a square grid: shape "
            f"{tuple(state['pos_embed'].shape)}."
        )
    _tensor(state, "blocks.0.mlp.fc1.weight", 2)
    return {
        "hidden_size": hidden,
        "num_hidden_layers": _count("blocks", state),
        "num_attention_heads": num_heads or hidden // HEAD_DIM,
        "intermediate_size": state["blocks.0.mlp.fc1.weight"].shape[0],
        "patch_size": patch,
        "image_size": grid * patch,
        "num_channels": channels,
        "layer_norm_eps": 1e-6,
    }


LABEL_PRESETS = {
    "nih14": "NIH14_LABELS",
    "chexpert5": "CHEXPERT5_LABELS",
    "chexpert14": "CHEXPERT14_LABELS",
}


def resolve_labels(labels: str | list[str] | None, num_outputs: int) -> list[str]:
    """``nih14`` / ``chexpert5`` / ``chexpert14``, a comma-separated string or a list."""
    from .data import labels as label_sets

    if labels is None:
        names = [f"LABEL_{i}" for i in range(num_outputs)]
    elif isinstance(labels, str) and labels in LABEL_PRESETS:
        names = list(getattr(label_sets, LABEL_PRESETS[labels]))
    else:
        names = labels.split(",") if isinstance(labels, str) else list(labels)
    if len(names) != num_outputs:
        raise ValueError(
            f"The checkpoint's head has {num_outputs} outputs but {len(names)} labels were given: {names}."
        )
    return names


def convert_checkpoint(
    source: str | Path,
    output_dir: str | Path,
    labels: str | list[str] | None = None,
    num_heads: int | None = None,
    decoder_num_heads: int = DECODER_HEADS,
    problem_type: str = "multi_label_classification",
) -> Any:
    """Convert an official / timm checkpoint file into ``output_dir`` (model, image processor, card)."""
    from .configuration import CXRClassifierConfig, CXRMAEConfig
    from .model_card import write_conversion_card
    from .modeling import CXRMAEForPreTraining, CXRViTForImageClassification
    from .processing import build_image_processor

    state = load_source(source)
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        raise ValueError(
            f"{source} is not a ViT checkpoint (no patch_embed / pos_embed): keys {sorted(state)[:8]}..."
        )
    try:
        fields = infer_encoder(state, num_heads)
        origin: dict[str, str] = {}
        if "decoder_embed.weight" in state:
            kind = "mae"
            config = CXRMAEConfig(
                **fields,
                decoder_hidden_size=_tensor(state, "decoder_embed.weight", 2).shape[0],
                decoder_num_hidden_layers=_count("decoder_blocks", state),
                decoder_num_attention_heads=decoder_num_heads,
                decoder_intermediate_size=_tensor(
                    state, "decoder_blocks.0.mlp.fc1.weight", 2
                ).shape[0],
            )
            model = CXRMAEForPreTraining(config)
            mapped = official_mae_to_ours(state, origin)
        elif "head.weight" in state:
            kind = "classifier"
            pooling = "mean" if "fc_norm.weight" in state else "cls"
            names = resolve_labels(labels, _tensor(state, "head.weight", 2).shape[0])
            config = CXRClassifierConfig(
                **fields,
                pooling=pooling,
                id2label=dict(enumerate(names)),
                problem_type=problem_type,
            )
            model = CXRViTForImageClassification(config)
            mapped = timm_vit_to_classifier(state, origin)
        else:
            raise ValueError(
                f"{source}: neither an MAE (decoder_embed) nor a classifier (head) checkpoint."
            )
        check_shapes(model, mapped, origin, _summary(fields))
    except CheckpointError as err:  # name the file once, in front
        raise CheckpointError(f"{source}: {err}") from err
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"Conversion of {source} left keys unmatched: missing {missing}, unexpected {unexpected}."
        )
    _check_forward(model, kind, state, fields)
    out = Path(output_dir)
    model.save_pretrained(out)
    build_image_processor(model.config).save_pretrained(out)
    write_conversion_card(out, model.config, kind, Path(source).name)
    return model


def _summary(fields: dict[str, Any]) -> str:
    return (
        f"width {fields['hidden_size']}, {fields['num_hidden_layers']} blocks, MLP "
        f"{fields['intermediate_size']}, patch {fields['patch_size']}, {fields['image_size']} px"
    )


def _check_forward(
    model, kind: str, state: dict[str, torch.Tensor], fields: dict[str, Any]
) -> None:
    """Run the converted model once; a classifier must match timm on the same weights (1e-4)."""
    size = fields["image_size"]
    x = torch.randn(
        2, fields["num_channels"], size, size, generator=torch.Generator().manual_seed(0)
    )
    model.eval()
    with torch.no_grad():
        if kind == "mae":
            loss = model(x).loss
            if not torch.isfinite(loss):
                raise ValueError("The converted MAE produces a non-finite loss.")
            return
        from functools import partial

        from timm.models.vision_transformer import VisionTransformer

        reference = VisionTransformer(
            img_size=size, patch_size=fields["patch_size"], in_chans=fields["num_channels"],
            embed_dim=fields["hidden_size"], depth=fields["num_hidden_layers"], num_heads=fields["num_attention_heads"],
            mlp_ratio=fields["intermediate_size"] / fields["hidden_size"], qkv_bias=True,
            global_pool="avg" if "fc_norm.weight" in state else "token",
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_classes=state["head.weight"].shape[0],
        ).eval()  # fmt: skip
        reference.load_state_dict(state)
        gap = (reference(x) - model(pixel_values=x).logits).abs().max().item()
    if gap > 1e-4:
        raise ValueError(
            f"Converted logits differ from timm's by {gap:.2e} (> 1e-4): is --num_heads right?"
        )
