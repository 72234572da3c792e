"""``CXRTrainer``: the Trainer with MAE's optimizer groups, LR schedule, loss and logs."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer, TrainerCallback

from ..checkpoint_files import checkpoint_problem
from ..modeling import classification_loss
from .optim import layer_decay_param_groups
from .schedule import warmup_cosine_scheduler

if TYPE_CHECKING:
    from PIL import Image

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


# How a full disk (or quota) shows: OSError's errno; safetensors' "... (os error 28)"; torch.save's
# zip writer only says "unexpected pos ..." or "file write failed", so there the free space tells.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_WORDS = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")
_NEARLY_FULL = 1 << 20  # bytes free


def _disk_is_full(err: BaseException, folder: Path) -> bool:
    if getattr(err, "errno", None) in _DISK_FULL or any(w in str(err) for w in _DISK_FULL_WORDS):
        return True
    try:
        return shutil.disk_usage(folder if folder.exists() else folder.parent).free < _NEARLY_FULL
    except OSError:
        return False


@contextlib.contextmanager
def checkpoint_save(folder: Path) -> Iterator[None]:
    """Around the writing of checkpoint ``folder``: when the disk fills up, its
    ``trainer_state.json`` is removed, so that auto-resume skips the half-written checkpoint
    (``checkpoint_problem``: "no trainer_state.json") for the last complete one, and the error
    names the folder in words instead of the writer's own ("unexpected pos 576 vs 534")."""
    try:
        yield
    except Exception as err:
        if not _disk_is_full(err, folder):
            raise
        with contextlib.suppress(OSError):
            (folder / "trainer_state.json").unlink(missing_ok=True)
        raise OSError(
            errno.ENOSPC,
            f"No space left on {folder}: saving this checkpoint failed ({err}). It is incomplete "
            f"and a rerun skips it, resuming from the last complete checkpoint in {folder.parent}. "
            "Free space (or keep fewer checkpoints: --save_total_limit), then run again.",
        ) from err


class CXRTrainer(Trainer):
    """Adds: AdamW over layer-decay groups (no decay on biases, norms, position embeddings; the cls
    token decayed only with ``token_weight_decay``, as the official pre-training does),
    warmup + half-cycle cosine per step down to ``min_lr``, the last partial batch dropped in
    training only (``dataloader_drop_last``), BCE that skips ignored (-1)
    targets for any classifier (ours, timm wrappers), and images/s, mask ratio in the logs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_log = (time.perf_counter(), 0)
        self.add_callback(_ThroughputClock(self))
        _connect_previews(self.callback_handler)

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


RUN_SETTINGS = "run_settings.json"


class RunSettingsCallback(TrainerCallback):
    """Writes the settings that define the run (``run_settings.json``) into each checkpoint, so
    a resume can tell whether it continues the same run (see ``resume.check_same_run``)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            with checkpoint_save(folder):
                (folder / RUN_SETTINGS).write_text(json.dumps(self.settings, indent=2))


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


PREVIEW_TAG = "train/reconstruction"


class ReconstructionPreviewCallback(TrainerCallback):
    """Writes original / masked / reconstruction grids of fixed images as PNG every ``every``
    steps (0: at each checkpoint) and at the end, and sends each grid to the experiment trackers
    the run reports to (TensorBoard, trackio) under ``PREVIEW_TAG`` at its global step.

    ``CXRTrainer`` hands it the trackers' callbacks (``trackers``); with a plain ``Trainer`` it
    writes the PNGs only."""

    def __init__(
        self,
        pixel_values: torch.Tensor,
        output_dir: str,
        every: int = 0,
        normalization: list[tuple[Sequence[float], Sequence[float]] | None] | None = None,
    ) -> None:
        self.pixel_values, self.every = pixel_values, every
        # Each image's (mean, std) when sources are normalised differently; None: the model's.
        self.normalization = normalization
        self.folder = Path(output_dir) / "previews"
        self.trackers: list[TrainerCallback] = []
        self._written_step: int | None = None

    def _write(self, args, state, model) -> None:
        # One grid per step: the last step's save and the end of training would repeat it.
        if not state.is_world_process_zero or model is None:
            return
        if state.global_step == self._written_step:
            return
        from ..visualization import reconstruction_grid

        device = next(model.parameters()).device
        grid = reconstruction_grid(
            model, self.pixel_values.to(device), scale=2, normalization=self.normalization
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        grid.save(self.folder / f"step-{state.global_step:07d}.png")
        self._written_step = state.global_step
        report_image(self.trackers, PREVIEW_TAG, grid, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self._write(args, state, model)

    def on_save(self, args, state, control, model=None, **kwargs):
        if not self.every:
            self._write(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._write(args, state, model)


def report_image(
    trackers: Sequence[TrainerCallback], tag: str, image: Image.Image, step: int
) -> None:
    """Send a PIL image to the trackers among ``trackers`` that are open: TensorBoard's writer
    (``add_image`` at ``step``) and trackio's current run (a ``trackio.Image`` beside
    ``train/global_step``, the step axis the Trainer's trackio logs use)."""
    import numpy as np
    from transformers.integrations import TensorBoardCallback, TrackioCallback

    for tracker in trackers:
        if isinstance(tracker, TensorBoardCallback) and tracker.tb_writer is not None:
            pixels = np.asarray(image.convert("RGB"))
            tracker.tb_writer.add_image(tag, pixels, step, dataformats="HWC")
            tracker.tb_writer.flush()
        elif isinstance(tracker, TrackioCallback):
            import trackio

            if trackio.context_vars.current_run.get() is not None:
                media = trackio.Image(image, caption=f"step {step}")
                trackio.log({tag: media, "train/global_step": step})


def _connect_previews(handler) -> None:
    """Give each preview callback the run's tracker callbacks, and run it before them: the
    trackers close at the end of training (TensorBoard's writer, trackio's run), so the final
    grid, written at ``on_train_end`` too, must reach them first."""
    from transformers.integrations import TensorBoardCallback, TrackioCallback

    callbacks = handler.callbacks
    trackers = [c for c in callbacks if isinstance(c, (TensorBoardCallback, TrackioCallback))]
    previews = [c for c in callbacks if isinstance(c, ReconstructionPreviewCallback)]
    if not previews or not trackers:
        return
    for preview in previews:
        preview.trackers = trackers
    rest = [c for c in callbacks if c not in previews]
    first = rest.index(trackers[0])
    handler.callbacks[:] = rest[:first] + previews + rest[first:]
