"""Linear probing of a frozen MAE encoder, top to bottom: arguments and checkpoint checked, data,
model (the probe), transforms, Trainer with LARS, train, save (BatchNorm folded), test, publish."""

from __future__ import annotations

import copy
from typing import Any

from transformers import set_seed

from ..data.transforms import create_transform
from ..modeling import CXRViTForImageClassification
from ..processing import build_image_processor, data_settings
from .callbacks import EpochCallback, RunSettingsCallback
from .data_setup import cache_splits, classification_splits, collator, crop_scale
from .evaluation import write_test_report
from .logged_metrics import compute_metrics_fn
from .model_setup import check_source_checkpoint
from .optim import LARS
from .outputs import finish, run_card, save_outputs
from .probe import LinearProbe
from .resume import resolve_checkpoint, run_settings
from .run_setup import (
    classification_data,
    push_callbacks,
    select_on_defined_metric,
    setup_logging,
    take_push,
)
from .trainer import CXRTrainer


def run_linprobe(model_args, data_args, training_args) -> dict[str, Any]:
    """Linear probe of a frozen MAE encoder (cls token after the final norm, BatchNorm, Linear, LARS)."""
    setup_logging(training_args)
    pusher = take_push(training_args)
    if not model_args.model_name_or_path:
        raise ValueError("A linear probe needs --model_name_or_path (a pre-trained MAE).")
    check_source_checkpoint(model_args.model_name_or_path, model_args.architecture)
    set_seed(training_args.seed)

    data, had_test, names, problem_type = classification_data(data_args, training_args)
    select_on_defined_metric(data, names, problem_type, training_args)

    classifier = CXRViTForImageClassification.from_checkpoint(
        model_args.model_name_or_path,
        id2label=names,
        pooling="cls",
        drop_path_rate=0.0,
        layer_decay=1.0,  # no layer decay: only the head trains
        problem_type=problem_type,
        reinit_head=True,
    )
    probe = LinearProbe(classifier)
    settings = data_settings(classifier)
    crop = crop_scale(data_args, "linprobe")
    data = cache_splits(data, data_args, training_args, settings, crop[0])
    # MAE's linear probe: RandomResizedCrop + flip only.
    train_tf = create_transform(settings, "train", crop_scale=crop, auto_augment=None)
    train_ds, splits, seeds = classification_splits(
        data, names, problem_type, settings, train_tf, training_args.seed
    )
    head = [p for p in probe.parameters() if p.requires_grad]
    optimizer = LARS(head, lr=training_args.learning_rate, weight_decay=training_args.weight_decay)
    processor = build_image_processor(settings)

    defining = run_settings(model_args, data_args, training_args)
    trainer = CXRTrainer(
        model=probe,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=splits.get("validation"),
        data_collator=collator(settings, data_args, len(names)),
        compute_metrics=compute_metrics_fn(names, problem_type),
        optimizers=(optimizer, None),
        callbacks=[
            RunSettingsCallback(defining),
            EpochCallback(seeds),
            *push_callbacks(pusher, training_args),
        ],
    )
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(training_args, defining))

    # The BatchNorm folded into a copy: the probe itself still evaluates below.
    model = copy.deepcopy(probe).folded()
    card = run_card(
        "classifier", model.config, data_args, training_args, pusher,
        base_model=model_args.model_name_or_path,
    )  # fmt: skip
    arg_objects = (model_args, data_args, training_args)
    save_outputs(trainer, model, processor, card, arg_objects)
    metrics: dict[str, Any] = dict(result.metrics)
    card.report = write_test_report(trainer, splits, data, names, problem_type, had_test, metrics)
    finish(trainer, metrics, card, arg_objects, pusher)
    return metrics
