"""Fine-tuning a classifier, top to bottom: arguments and checkpoint checked, data, model,
transforms, Trainer, train, save, evaluate on validation, fit temperature scaling and operating
points there (never on test) and save again, evaluate test once, publish."""

from __future__ import annotations

from typing import Any

from transformers import set_seed

from ..attention import use_fast_attention
from ..data.transforms import create_transform
from ..processing import build_image_processor, clear_postprocessing, data_settings
from .callbacks import EpochCallback, RunSettingsCallback
from .data_setup import (
    cache_splits,
    classification_splits,
    collator,
    crop_scale,
    truncate_splits,
)
from .evaluation import write_test_report
from .logged_metrics import compute_metrics_fn
from .model_setup import build_classifier, check_source_checkpoint
from .outputs import finish, run_card, save_outputs
from .postprocess import fit_on_validation, resave_model, warn_nothing_fitted
from .resume import resolve_checkpoint, run_settings
from .run_setup import (
    classification_data,
    push_callbacks,
    select_on_defined_metric,
    setup_logging,
    take_push,
)
from .trainer import CXRTrainer


def run_finetune(model_args, data_args, training_args) -> dict[str, Any]:
    """Fine-tune a classifier; best epoch chosen on validation, test evaluated once at the end."""
    setup_logging(training_args)
    pusher = take_push(training_args)
    check_source_checkpoint(model_args.model_name_or_path, model_args.architecture)
    set_seed(training_args.seed)

    data, had_test, names, problem_type = classification_data(data_args, training_args)

    model = build_classifier(model_args, names, problem_type, training_args.layer_decay)
    clear_postprocessing(model.config)  # a source classifier's thresholds are not this model's
    if model_args.architecture == "vit":
        use_fast_attention(model)
    if model.config.num_labels != len(names):
        raise ValueError(
            f"The model has {model.config.num_labels} labels but the dataset has {len(names)} ({names})."
        )

    data = truncate_splits(data, data_args)
    select_on_defined_metric(data, names, problem_type, training_args)
    settings = data_settings(model)
    crop = crop_scale(data_args, "finetune")
    data = cache_splits(data, data_args, training_args, settings, crop[0])
    train_tf = create_transform(
        settings,
        "train",
        crop_scale=crop,
        auto_augment=data_args.auto_augment or None,
        re_prob=data_args.reprob,
        randaug_interpolation=data_args.randaug_interpolation,
    )
    train_ds, splits, seeds = classification_splits(
        data, names, problem_type, settings, train_tf, training_args.seed
    )
    processor = build_image_processor(settings)

    defining = run_settings(model_args, data_args, training_args)
    trainer = CXRTrainer(
        callbacks=[
            RunSettingsCallback(defining),
            EpochCallback(seeds),
            *push_callbacks(pusher, training_args),
        ],
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=splits.get("validation"),
        data_collator=collator(settings, data_args, len(names)),
        processing_class=processor,
        compute_metrics=compute_metrics_fn(names, problem_type),
    )
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(training_args, defining))

    card = run_card(
        "classifier", model.config, data_args, training_args, pusher,
        base_model=model_args.model_name_or_path or None, uncertainty=data_args.uncertainty,
    )  # fmt: skip
    arg_objects = (model_args, data_args, training_args)
    save_outputs(trainer, None, processor, card, arg_objects)
    metrics: dict[str, Any] = dict(result.metrics)
    fitted: dict[str, Any] = {}
    if "validation" in splits:
        validation = trainer.predict(splits["validation"], metric_key_prefix="eval")
        metrics.update(validation.metrics)
        trainer.log(validation.metrics)
        fitted = fit_on_validation(
            trainer, splits["validation"], validation, names, problem_type, training_args
        )
        if fitted:
            resave_model(trainer, weights="temperature_scaling" in fitted)
    else:
        warn_nothing_fitted(training_args, problem_type)
    card.report = write_test_report(
        trainer, splits, data, names, problem_type, had_test, metrics, fitted
    )
    finish(trainer, metrics, card, arg_objects, pusher)
    return metrics
