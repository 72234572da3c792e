"""Resuming a run: the settings that define it (saved beside each checkpoint), and which
checkpoint to resume, refused when it belongs to another run or has trained past this one's end."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import transformers

from ..checkpoint_files import checkpoint_problem
from ..model_card import RECIPE_FIELDS, scrub
from .callbacks import RUN_SETTINGS
from .trainer import last_complete_checkpoint

logger = logging.getLogger("hf_cxr_mae")


# Settings a resume may change without changing what the run computes (longer runs, logging,
# saving, evaluation, workers, caching, where things go).
_RESUME_MAY_CHANGE = {
    "output_dir", "logging_dir", "run_name", "resume_from_checkpoint", "auto_resume",
    "num_train_epochs", "max_steps", "per_device_eval_batch_size", "max_eval_samples",
    "dataloader_num_workers", "dataloader_prefetch_factor", "dataloader_pin_memory",
    "pixel_cache", "cache_dir", "preprocessing_num_workers", "report_to", "disable_tqdm",
    "preview_steps", "push_retries", "push_timeout", "push_to_hub", "hub_model_id",
    "hub_strategy", "hub_private_repo", "hub_token", "hub_always_push", "hub_revision",
    # Fitted after training, on its final model: no bearing on the weights trained.
    "operating_point", "operating_target", "temperature_scaling", "bootstrap_resamples",
}  # fmt: skip


def run_settings(model_args, data_args, training_args) -> dict[str, Any]:
    """What defines a run's numbers: model and data arguments and the TrainingArguments of the
    recipe (batch, LR schedule, optimizer, seed, precision), scrubbed like training_args.json."""
    ours = {f.name for f in dataclasses.fields(training_args)} - {
        f.name for f in dataclasses.fields(transformers.TrainingArguments)
    }
    fields = {"data_seed", "adam_epsilon", "dataloader_drop_last"} | RECIPE_FIELDS | ours
    out: dict[str, Any] = {}
    for obj in (model_args, data_args):
        out.update({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    out.update({k: getattr(training_args, k) for k in sorted(fields)})
    out = {k: v for k, v in out.items() if k not in _RESUME_MAY_CHANGE and not k.startswith("_")}
    return json.loads(json.dumps(scrub(out), default=str))


def check_same_run(path: str, settings: dict[str, Any] | None, explicit: bool) -> None:
    """Refuse to auto-resume a checkpoint saved with other settings (a different seed, LR, batch,
    data or augmentation): the result would be neither run. An explicit
    ``--resume_from_checkpoint`` goes on, with a warning naming each difference."""
    file = Path(path) / RUN_SETTINGS
    if settings is None or not file.is_file():
        return
    saved = json.loads(file.read_text())
    # A setting the checkpoint does not record (saved by an older version, before the setting
    # existed) is unknown, not equal: its default then may have been other behaviour.
    differ = [
        f"{k} {saved[k]!r} there, {v!r} now" if k in saved else f"{k} not recorded there, {v!r} now"
        for k, v in settings.items()
        if k not in saved or saved[k] != v
    ]
    if not differ:
        return
    text = f"{path} was saved by a run with other settings ({'; '.join(differ)})"
    if explicit:
        logger.warning("%s; resuming it anyway, as --resume_from_checkpoint asks.", text)
        return
    raise ValueError(
        f"{text}: resuming it would mix two runs. Rerun with the same settings, name it with "
        "--resume_from_checkpoint to resume it anyway, or use a new --output_dir."
    )


def check_not_past_end(path: str, training_args) -> None:
    """Refuse a checkpoint that has trained past this run's end (``--max_steps`` or
    ``--num_train_epochs`` lowered): the Trainer would run no step and save the longer run's
    weights under this run's settings."""
    max_steps = getattr(training_args, "max_steps", -1)
    epochs = getattr(training_args, "num_train_epochs", None)
    if max_steps <= 0 and epochs is None:
        return
    state = json.loads((Path(path) / "trainer_state.json").read_text())
    step, epoch = int(state.get("global_step", 0)), float(state.get("epoch") or 0.0)
    if max_steps > 0:
        past, end = step > max_steps, f"--max_steps {max_steps}"
    else:
        past, end = epoch > epochs + 1e-6, f"--num_train_epochs {epochs}"
    if past:
        raise ValueError(
            f"{path} has trained {step} steps ({epoch:g} epochs), past this run's end ({end}): "
            "resuming it would save the longer run's weights as this one's. Use a new "
            "--output_dir, or name an earlier checkpoint with --resume_from_checkpoint."
        )


def resolve_checkpoint(training_args, settings: dict[str, Any] | None = None) -> str | None:
    """``--resume_from_checkpoint`` if given (must be complete and readable), else the newest
    complete and readable one in ``output_dir`` (corrupt newer ones are skipped with a warning)
    if it was saved with the same ``settings`` (``check_same_run``)."""
    if training_args.resume_from_checkpoint:
        path = training_args.resume_from_checkpoint
        if problem := checkpoint_problem(path):
            raise ValueError(f"--resume_from_checkpoint {path} cannot be resumed: {problem}.")
        check_same_run(path, settings, explicit=True)
        check_not_past_end(path, training_args)
        return path
    if getattr(training_args, "auto_resume", True):
        found = last_complete_checkpoint(training_args.output_dir)
        if found:
            check_same_run(found, settings, explicit=False)
            check_not_past_end(found, training_args)
            logger.info("Resuming from %s", found)
        return found
    return None
