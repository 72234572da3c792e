"""MAE pre-training, top to bottom: arguments and checkpoint checked, data, model, transforms,
Trainer, train, save, evaluate, publish."""

from __future__ import annotations

from typing import Any

from datasets import DatasetDict
from transformers import set_seed

from ..attention import use_fast_attention
from ..modeling import CXRMAEForPreTraining
from ..processing import build_image_processor
from .callbacks import EpochCallback, ReconstructionPreviewCallback, RunSettingsCallback
from .data_setup import (
    cache_splits,
    collator,
    crop_scale,
    load_pretraining_images,
    pretraining_splits,
    preview_normalization,
)
from .model_setup import build_pretraining_model
from .outputs import finish, run_card, save_outputs
from .resume import resolve_checkpoint, run_settings
from .run_setup import push_callbacks, setup_logging, take_push
from .trainer import CXRTrainer


def run_pretrain(model_args, data_args, training_args) -> dict[str, Any]:
    """MAE pre-training. Returns the metrics (train loss, eval loss)."""
    setup_logging(training_args)
    pusher = take_push(training_args)
    model, config = build_pretraining_model(model_args)  # a continued checkpoint is checked
    set_seed(training_args.seed)

    images, held_out = load_pretraining_images(data_args, training_args.seed)
    crop = crop_scale(data_args, "pretrain")
    images, held_out = cache_splits(
        DatasetDict(train=images, validation=held_out), data_args, training_args, config, crop[0]
    ).values()

    model = use_fast_attention(model or CXRMAEForPreTraining(config))
    train_ds, eval_ds, seeds = pretraining_splits(
        images, held_out, config, data_args, training_args.seed, crop
    )
    preview = collator(config, data_args)([eval_ds[i] for i in range(min(4, len(eval_ds)))])[
        "pixel_values"
    ]
    preview_norms = preview_normalization(held_out, len(preview), data_args)
    processor = build_image_processor(config)
    defining = run_settings(model_args, data_args, training_args)
    trainer = CXRTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator(config, data_args),
        processing_class=processor,
        callbacks=[
            RunSettingsCallback(defining),
            ReconstructionPreviewCallback(
                preview, training_args.output_dir, training_args.preview_steps, preview_norms
            ),
            EpochCallback(seeds),
            *push_callbacks(pusher, training_args),
        ],
    )
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(training_args, defining))

    card = run_card("pretrain", config, data_args, training_args, pusher)
    arg_objects = (model_args, data_args, training_args)
    save_outputs(trainer, None, processor, card, arg_objects)
    metrics = {**result.metrics, **trainer.evaluate()}
    finish(trainer, metrics, card, arg_objects, pusher)
    return metrics
