"""The MAE learning-rate schedule: linear warmup, then a half-cycle cosine down to ``min_lr``."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_at_step(
    step: int, base_lr: float, warmup_steps: float, total_steps: int, min_lr: float = 0.0
) -> float:
    """Absolute LR after ``step`` optimizer steps (MAE's per-iteration rule, in steps; a
    fractional ``warmup_steps`` is ``warmup_epochs x steps per epoch`` exactly)."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    base_lr: float,
    warmup_steps: float,
    total_steps: int,
    min_lr: float = 0.0,
) -> LambdaLR:
    """A ``LambdaLR`` following ``lr_at_step``. Each group's LR is scaled by its own initial LR
    (``lr_scale`` of layer decay), min LR included, as MAE's per-group scaling does."""

    def factor(step: int) -> float:
        return lr_at_step(step, base_lr, warmup_steps, total_steps, min_lr) / base_lr

    return LambdaLR(optimizer, factor)
