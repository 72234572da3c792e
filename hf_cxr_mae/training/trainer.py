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
from transformers import Trainer, TrainerCallback

from ..modeling import classification_loss, layer_decay_param_groups
from .schedule import warmup_cosine_scheduler

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` that finished saving, else None.

    The Trainer writes ``trainer_state.json`` last, so a folder without it (a crash during save)
    is incomplete and is passed over with a warning, never resumed.
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
        has_weights = any(
            (path / n).is_file()
            for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
        )
        if (path / "trainer_state.json").is_file() and has_weights:
            return str(path)
        logger.warning("Ignoring incomplete checkpoint %s (interrupted while saving).", path)
    return None


class CXRTrainer(Trainer):
    """Adds: AdamW over layer-decay groups (no decay on biases, norms, position embeddings, cls
    token), warmup + half-cycle cosine per step down to ``min_lr``, BCE that skips ignored (-1)
    targets for any classifier (ours, timm wrappers), and images/s, mask ratio in the logs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_log = (time.perf_counter(), 0)

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            model = self.model if model is None else model
            args = self.args
            decay = getattr(args, "layer_decay", None) or 1.0
            groups = layer_decay_param_groups(
                model, args.weight_decay, decay, lr=args.learning_rate
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
                warmup = math.ceil(getattr(args, "warmup_epochs", 0.0) * self.steps_per_epoch())
            self.lr_scheduler = warmup_cosine_scheduler(
                optimizer or self.optimizer,
                args.learning_rate,
                warmup,
                num_training_steps,
                getattr(args, "min_lr", 0.0),
            )
        return self.lr_scheduler

    def steps_per_epoch(self) -> float:
        args = self.args
        per_step = (
            args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
        )
        return len(self.train_dataset) / per_step

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


class EpochCallback(TrainerCallback):
    """Keeps ``AugmentationSeeds.epoch`` equal to the epoch being trained (resumes included)."""

    def __init__(self, seeds) -> None:
        self.seeds = seeds

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.seeds.epoch = math.floor((state.epoch or 0.0) + 1e-6)


class HubPushCallback(TrainerCallback):
    """``--hub_strategy every_save`` (or checkpoint / all_checkpoints): push each saved
    checkpoint's model files as a commit, with retries; a failure is logged, training goes on."""

    def __init__(self, repo_id: str, private: bool | None, token: str | None, retries: int) -> None:
        self.repo_id, self.private, self.token, self.retries = repo_id, private, token, retries

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from ..hub import push_folder

            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            push_folder(
                folder,
                self.repo_id,
                self.private,
                self.token,
                f"Training in progress, step {state.global_step}",
                self.retries,
            )


class ReconstructionPreviewCallback(TrainerCallback):
    """Writes original / masked / reconstruction grids of fixed images as PNG (and to TensorBoard
    when it reports there) every ``every`` steps (0: at each checkpoint) and at the end."""

    def __init__(self, pixel_values: torch.Tensor, output_dir: str, every: int = 0) -> None:
        self.pixel_values, self.every = pixel_values, every
        self.folder = Path(output_dir) / "previews"

    def _write(self, args, state, model) -> None:
        if not state.is_world_process_zero or model is None:
            return
        from ..visualization import reconstruction_grid

        device = next(model.parameters()).device
        grid = reconstruction_grid(model, self.pixel_values.to(device), scale=2)
        self.folder.mkdir(parents=True, exist_ok=True)
        grid.save(self.folder / f"step-{state.global_step:07d}.png")
        if "tensorboard" in (args.report_to or []):
            try:
                import numpy as np
                from torch.utils.tensorboard import SummaryWriter

                with SummaryWriter(args.logging_dir) as writer:
                    writer.add_image("reconstruction", np.asarray(grid)[None], state.global_step)
            except ImportError:
                pass

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self._write(args, state, model)

    def on_save(self, args, state, control, model=None, **kwargs):
        if not self.every:
            self._write(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._write(args, state, model)
