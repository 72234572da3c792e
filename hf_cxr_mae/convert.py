"""Official MAE / timm checkpoints -> our native formats (key mapping)."""

from __future__ import annotations

import re

import torch

# timm block sub-module -> transformers (ViTMAE / BEiT share these names in 5.x).
_BLOCK_MAP = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_BLOCK_KEY = re.compile(r"^(?:blocks|decoder_blocks)\.(\d+)\.(.+)\.(weight|bias)$")


def _split_block_key(
    key: str, value: torch.Tensor, prefix: str, keep_k_bias: bool
) -> dict[str, torch.Tensor]:
    match = _BLOCK_KEY.match(key)
    if match is None:
        raise KeyError(key)
    index, module, kind = match.groups()
    base = f"{prefix}{index}."
    if module == "attn.qkv":
        q, k, v = value.chunk(3, dim=0)
        out = {f"{base}attention.q_proj.{kind}": q, f"{base}attention.v_proj.{kind}": v}
        if kind == "weight" or keep_k_bias:
            out[f"{base}attention.k_proj.{kind}"] = k
        return out
    if module not in _BLOCK_MAP:
        raise KeyError(key)
    return {f"{base}{_BLOCK_MAP[module]}.{kind}": value}


def timm_vit_to_classifier(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``VisionTransformer`` state dict (MAE fine-tuned) -> ``BeitForImageClassification`` keys.

    ``fc_norm`` (global-pool head) maps to the mean-pooling norm, ``norm`` (cls-token head) to the
    final norm. Raises ``KeyError`` naming any key it does not know.
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
            out[fixed[key]] = value
        else:
            # BEiT has no key bias; dropping it is exact (softmax ignores a per-query constant).
            out.update(_split_block_key(key, value, "beit.layers.", keep_k_bias=False))
    return out
