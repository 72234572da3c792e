"""``CXRTrainer``: the Trainer with MAE's optimizer groups, LR schedule, loss and logs."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from ..checkpoint_files import checkpoint_problem
from ..modeling import classification_loss
from .callbacks import ThroughputClock, connect_previews
from .optim import layer_decay_param_groups
from .saving import checkpoint_save
from .schedule import warmup_cosine_scheduler

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` that is complete and readable (``checkpoint_problem``), else None.

    Newer checkpoints that are incomplete (a crash during save) or corrupt are passed over with a
    warning naming each one and why, never resumed.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = sorted(
        (
            (int(m.group(1)), p)
            for p in folder.iterdir()
            if p.is_dir() and (m := _CHECKPOINT.match(p.name))
        ),
        reverse=True,
    )
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        logger.warning("Skipping checkpoint %s: %s. Trying an older one.", path, problem)
    return None


class CXRTrainer(Trainer):
    """Adds: AdamW over layer-decay groups (no decay on biases, norms, position embeddings; the cls
    token decayed only with ``token_weight_decay``, as the official pre-training does),
    warmup + half-cycle cosine per step down to ``min_lr``, the last partial batch dropped in
    training only (``dataloader_drop_last``), BCE that skips ignored (-1)
    targets for any classifier (ours, timm wrappers), and images/s, mask ratio in the logs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_log = (time.perf_counter(), 0)
        self.add_callback(ThroughputClock(self))
        connect_previews(self.callback_handler)

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            model = self.model if model is None else model
            args = self.args
            decay = getattr(args, "layer_decay", None) or 1.0
            groups = layer_decay_param_groups(
                model,
                args.weight_decay,
                decay,
                lr=args.learning_rate,
                decay_tokens=getattr(args, "token_weight_decay", False),
            )
            self.optimizer = torch.optim.AdamW(
                groups,
                lr=args.learning_rate,
                betas=(args.adam_beta1, args.adam_beta2),
                eps=args.adam_epsilon,
            )
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ):
        if self.lr_scheduler is None:
            args = self.args
            if args.warmup_steps:
                warmup = args.get_warmup_steps(num_training_steps)
            else:
                # Exactly warmup_epochs of steps, fractional if need be: the official schedule
                # is a function of the fractional epoch (step / steps per epoch).
                warmup = getattr(args, "warmup_epochs", 0.0) * self.steps_per_epoch()
            self.lr_scheduler = warmup_cosine_scheduler(
                optimizer or self.optimizer,
                args.learning_rate,
                warmup,
                num_training_steps,
                getattr(args, "min_lr", 0.0),
            )
        return self.lr_scheduler

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch, as the Trainer's data loader gives them: with
        ``dataloader_drop_last`` (the official recipe) floor(N / global batch), else one more for
        the last partial batch."""
        return steps_per_epoch(
            len(self.train_dataset),
            self.args.per_device_train_batch_size,
            self.args.world_size,
            self.args.gradient_accumulation_steps,
            self.args.dataloader_drop_last,
        )

    def _get_dataloader(self, dataset, description, batch_size, *args: Any, **kwargs: Any):
        # transformers applies dataloader_drop_last to evaluation too, which would leave images
        # out of the validation and test metrics: drop only in training.
        is_training = kwargs.get("is_training", args[1] if len(args) > 1 else False)
        drop = bool(self.args.dataloader_drop_last)
        too_small = hasattr(dataset, "__len__") and len(dataset) < batch_size * self.args.world_size
        if drop and is_training and too_small:
            raise ValueError(
                f"The training set has {len(dataset)} images, fewer than one global batch of "
                f"{batch_size * self.args.world_size}: with --dataloader_drop_last (the official "
                "recipe) no step would run. Lower --per_device_train_batch_size or pass "
                "--dataloader_drop_last false."
            )
        self.args.dataloader_drop_last = drop and is_training
        try:
            return super()._get_dataloader(dataset, description, batch_size, *args, **kwargs)
        finally:
            self.args.dataloader_drop_last = drop

    def _save_checkpoint(self, model, trial) -> None:
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        with checkpoint_save(folder):
            super()._save_checkpoint(model, trial)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        config = getattr(self.accelerator.unwrap_model(model), "config", None)
        if "labels" not in inputs or config is None or not hasattr(config, "problem_type"):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = classification_loss(outputs.logits, labels, config.problem_type)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # a training log: add throughput and the mask ratio
            now, step = time.perf_counter(), self.state.global_step
            last_time, last_step = self._last_log
            if step > last_step:
                samples = (
                    (step - last_step) * self.args.effective_batch_size
                    if hasattr(self.args, "effective_batch_size")
                    else 0
                )
                logs["images_per_second"] = round(samples / (now - last_time), 2)
            self._last_log = (now, step)
            ratio = getattr(getattr(self.model, "config", None), "mask_ratio", None)
            if ratio is not None and getattr(self.model.config, "model_type", "") == "vit_mae":
                logs["mask_ratio"] = ratio
        super().log(logs, *args, **kwargs)


def steps_per_epoch(
    num_samples: int,
    per_device_batch_size: int,
    world_size: int = 1,
    gradient_accumulation_steps: int = 1,
    drop_last: bool = True,
) -> int:
    """Optimizer steps per epoch of the Trainer's sharded loader: batches per process are
    floor (``drop_last``) or ceil of N / (per-device batch x processes); an epoch's last
    accumulation window steps even when short, as the Trainer does."""
    global_batch = per_device_batch_size * world_size
    batches = num_samples // global_batch if drop_last else math.ceil(num_samples / global_batch)
    return math.ceil(batches / gradient_accumulation_steps)
