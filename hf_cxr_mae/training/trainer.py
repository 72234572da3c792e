"""``CXRTrainer``: the Trainer with MAE's optimizer groups, LR schedule, loss and logs."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from ..modeling import classification_loss, layer_decay_param_groups
from .schedule import warmup_cosine_scheduler

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# torch.save writes zip archives; a CRC check of every member finds truncated or emptied files.
_ZIPPED = ("optimizer.pt", "scheduler.pt")


def _safetensors_problem(path: Path) -> str | None:
    """None if the safetensors header parses and its tensors end exactly at the end of the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path.name} is truncated ({size} bytes)"
        n = int.from_bytes(head, "little")
        if n > size - 8:
            return f"{path.name} is truncated (header of {n} bytes, file of {size})"
        try:
            header = json.loads(f.read(n))
            offsets = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
            return f"{path.name} has an unreadable header ({type(err).__name__}: {err})"
    end = max(offsets, default=0)
    if 8 + n + end != size:
        return f"{path.name} is truncated or padded ({size} bytes, header says {8 + n + end})"
    return None


def _zip_problem(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        return f"{path.name} is unreadable ({err or 'empty or truncated'})"
    return f"{path.name} is corrupt (bad member {bad})" if bad else None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"{path.name} is not valid JSON ({err})"
    return None


def _weights_problem(folder: Path) -> str | None:
    weights = next((folder / n for n in _WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        return f"no model weights (none of {', '.join(_WEIGHTS)})"
    if weights.name == "pytorch_model.bin":
        return _zip_problem(weights)
    if weights.name == "model.safetensors":
        return _safetensors_problem(weights)
    if problem := _json_problem(weights):  # a sharded checkpoint's index
        return problem
    shards = sorted(set(json.loads(weights.read_text()).get("weight_map", {}).values()))
    if missing := [s for s in shards if not (folder / s).is_file()]:
        return f"missing weight shard(s) {missing}"
    return next(filter(None, (_safetensors_problem(folder / s) for s in shards)), None)


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """None if ``path`` is a checkpoint the Trainer can resume exactly from, else what is wrong.

    Every file a resume reads must be there and readable: ``trainer_state.json`` (parsed), the
    weights (safetensors header and size, or each shard of an index), ``optimizer.pt``,
    ``scheduler.pt`` and the RNG states (zip integrity). The Trainer would otherwise crash on a
    truncated file, or silently resume with a fresh optimizer when ``optimizer.pt`` is missing.
    """
    folder = Path(path)
    if not folder.is_dir():
        return "no such folder"
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (interrupted while saving)"
    if problem := _json_problem(state):
        return problem
    if problem := _weights_problem(folder):
        return problem
    rng = sorted(folder.glob("rng_state*.pth"))
    if not rng:
        return "no rng_state*.pth (the resumed run could not draw what the original did)"
    for name in [*_ZIPPED, *(p.name for p in rng)]:
        if not (folder / name).is_file():
            return f"no {name}"
        if problem := _zip_problem(folder / name):
            return problem
    return None


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
    """Adds: AdamW over layer-decay groups (no decay on biases, norms, position embeddings, cls
    token), warmup + half-cycle cosine per step down to ``min_lr``, BCE that skips ignored (-1)
    targets for any classifier (ours, timm wrappers), and images/s, mask ratio in the logs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_log = (time.perf_counter(), 0)
        self.add_callback(_ThroughputClock(self))

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


class _ThroughputClock(TrainerCallback):
    """Starts the images/s clock when training starts, at the step it starts from: a resumed run
    counts only the steps it runs itself, not those restored from the checkpoint."""

    def __init__(self, trainer: CXRTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._last_log = (time.perf_counter(), state.global_step)


class EpochCallback(TrainerCallback):
    """Keeps ``AugmentationSeeds.epoch`` equal to the epoch being trained (resumes included)."""

    def __init__(self, seeds) -> None:
        self.seeds = seeds

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.seeds.epoch = math.floor((state.epoch or 0.0) + 1e-6)


class HubPushCallback(TrainerCallback):
    """``--hub_strategy every_save`` (or checkpoint / all_checkpoints): push each saved
    checkpoint's model files as a commit. The push (and its retries) runs on the pusher's
    background thread: a save only queues a snapshot, so a slow or failing Hub never stalls
    training."""

    def __init__(self, pusher) -> None:
        self.pusher = pusher  # a hub.BackgroundPusher

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.pusher.submit(
                folder, f"Training in progress, step {state.global_step}", snapshot=True
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
