"""What the optimizers get: parameter groups with layer-wise LR decay (MAE / BEiT fine-tuning),
and LARS, the optimizer of MAE's linear probe (SGD momentum with a layer-wise trust ratio)."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling. Matrices get weight decay and the trust ratio
    ``trust * ||w|| / ||update||``; biases and other 1-D parameters get neither."""

    def __init__(
        self,
        params,
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust: float = 0.001,
    ) -> None:
        super().__init__(
            params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "trust": trust}
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    ratio = torch.where(
                        (w_norm > 0) & (u_norm > 0),
                        group["trust"] * w_norm / u_norm,
                        torch.ones_like(w_norm),
                    )
                    update = update * ratio
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _layer_id(name: str, num_layers: int) -> int:
    """0 for embeddings, i+1 for block i, num_layers+1 for everything above the blocks."""
    if ".embeddings." in f".{name}":
        return 0
    match = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


_NO_DECAY = re.compile(r"(position_embeddings|decoder_pos_embed|cls_token)$")
# Position embeddings only: what stays exempt when the tokens are decayed (the official
# pre-training keeps them fixed, so they are frozen and never reach the optimizer anyway).
_NO_DECAY_POSITIONS = re.compile(r"(position_embeddings|decoder_pos_embed)$")


def layer_decay_param_groups(
    model: nn.Module,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
    lr: float | None = None,
    decay_tokens: bool = False,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise LR decay (MAE / BEiT fine-tuning).

    Each group's ``lr_scale`` is ``layer_decay ** (num_layers + 1 - layer_id)``: patch and
    position embeddings and the cls token are layer 0, block ``i`` is layer ``i + 1``, the
    final / pooling norm and head (and an MAE decoder) are the top. Biases, norms, position
    embeddings and the cls token get no weight decay (official fine-tuning). With
    ``decay_tokens`` the cls token is decayed like any parameter of two or more dimensions, as
    the mask token always is (official pre-training). With ``lr`` each group also gets ``lr * lr_scale``.
    Frozen parameters are left out.
    """
    exempt = _NO_DECAY_POSITIONS if decay_tokens else _NO_DECAY
    num_layers = getattr(model.config, "num_hidden_layers", 0)  # 0: not a ViT, one scale for all
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = _layer_id(name, num_layers)
        no_decay = param.ndim == 1 or bool(exempt.search(name))
        group = groups.setdefault(
            (layer, no_decay),
            {
                "params": [],
                "param_names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": layer_decay ** (num_layers + 1 - layer),
                "layer_id": layer,
            },
        )
        group["params"].append(param)
        group["param_names"].append(name)
    out = [groups[key] for key in sorted(groups)]
    if lr is not None:
        for group in out:
            group["lr"] = lr * group["lr_scale"]
    return out
