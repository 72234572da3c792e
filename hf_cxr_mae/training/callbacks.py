"""The Trainer callbacks of a run: the images/s clock, the augmentation epoch, the run settings
and the Hub push written at each save, and the reconstruction previews sent to the trackers."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback

from .saving import checkpoint_save

if TYPE_CHECKING:
    from PIL import Image

    from .trainer import CXRTrainer


class ThroughputClock(TrainerCallback):
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
        from ..figures import reconstruction_grid

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


def connect_previews(handler) -> None:
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
