"""What the recipes run: pre-training, fine-tuning, linear probing and evaluation.

Each ``run_*`` is a straight line (transformers-examples style): check arguments and the
checkpoint before reading any data, load data (an empty training split is refused, an empty
validation or test split skipped with a warning), build the model, set transforms, train, save
the model, its image processor and its card at the root of ``output_dir`` (before anything that
can fail after training), evaluate, then the card again with the metrics, and the push.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import torch
import transformers
from datasets import Dataset, DatasetDict, concatenate_datasets
from transformers import AutoConfig, set_seed

from ..attention import use_fast_attention
from ..checkpoint_files import checkpoint_problem
from ..configuration import CXRClassifierConfig, CXRMAEConfig
from ..data import label_names, load_cxr_dataset, load_pretraining_dataset
from ..data.cache import build_cache, split_cache_sizes
from ..data.core import log_label_counts, patient_split
from ..data.loading import SOURCES
from ..data.transforms import (
    SOURCE_NORMALIZATION,
    AugmentationSeeds,
    CXRCollator,
    batch_transform,
    create_transform,
    ten_crop_transform,
    undecoded_images,
    with_row_ids,
)
from ..hub import BackgroundPusher
from ..modeling import CXRMAEForPreTraining, CXRViTForImageClassification
from ..processing import build_image_processor, eval_resize_size
from .demo import make_demo_dataset
from .metrics import compute_metrics_fn, multilabel_metrics, single_label_metrics
from .trainer import (
    CXRTrainer,
    EpochCallback,
    HubPushCallback,
    ReconstructionPreviewCallback,
    RunSettingsCallback,
    last_complete_checkpoint,
)

logger = logging.getLogger("hf_cxr_mae")


def setup_logging(training_args) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    # Our own messages (label counts, resume, metrics) are INFO and must show by default on the
    # main process; "passive" otherwise inherits transformers' WARNING verbosity and hides them.
    ours = (
        logging.INFO if training_args.should_log and training_args.log_level == "passive" else level
    )
    logger.setLevel(ours)
    logging.getLogger("hf_cxr_mae.data").setLevel(ours)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


# Settings a resume may change without changing what the run computes (longer runs, logging,
# saving, evaluation, workers, caching, where things go).
_RESUME_MAY_CHANGE = {
    "output_dir", "logging_dir", "run_name", "resume_from_checkpoint", "auto_resume",
    "num_train_epochs", "max_steps", "per_device_eval_batch_size", "max_eval_samples",
    "dataloader_num_workers", "dataloader_prefetch_factor", "dataloader_pin_memory",
    "pixel_cache", "cache_dir", "preprocessing_num_workers", "report_to", "disable_tqdm",
    "preview_steps", "push_retries", "push_timeout", "push_to_hub", "hub_model_id",
    "hub_strategy", "hub_private_repo", "hub_token", "hub_always_push", "hub_revision",
}  # fmt: skip


def run_settings(model_args, data_args, training_args) -> dict[str, Any]:
    """What defines a run's numbers: model and data arguments and the TrainingArguments of the
    recipe (batch, LR schedule, optimizer, seed, precision), scrubbed like training_args.json."""
    from ..hub import RECIPE_FIELDS, scrub

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
    from .trainer import RUN_SETTINGS

    file = Path(path) / RUN_SETTINGS
    if settings is None or not file.is_file():
        return
    saved = json.loads(file.read_text())
    differ = [
        f"{k} {saved[k]!r} there, {v!r} now" for k, v in settings.items() if saved.get(k, v) != v
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


def _sources(data_args) -> list[tuple[str, str, dict[str, Any]]]:
    options = data_args.source_options()
    out = []
    for name, data_dir in zip(data_args.dataset, data_args.data_dir, strict=True):
        if name not in SOURCES:
            raise ValueError(f"Unknown --dataset {name!r}; choose from {sorted(SOURCES)}.")
        accepted = set(inspect.signature(SOURCES[name]).parameters)
        out.append((name, data_dir, {k: v for k, v in options.items() if k in accepted}))
    return out


def _demo_warning() -> None:
    logger.warning("=" * 72)
    logger.warning(
        "DEMO DATA: no --dataset given. Training on built-in SYNTHETIC images (not X-rays)."
    )
    logger.warning("Pass --dataset and --data_dir for real data (see recipes/configs/).")
    logger.warning("=" * 72)


def _truncate(ds: Dataset, n: int | None) -> Dataset:
    return ds.select(range(min(n, len(ds)))) if n else ds


def _cache(data: DatasetDict, data_args, training_args, settings, min_crop_scale: float = 1.0):
    """The pixel cache of each split, its shortest side sized from what the recipe takes from it
    unless ``--cache_size`` is given (then warned about if it loses detail): the training split
    keeps what its smallest random crop needs (``cache_size_for``), the others the evaluation
    resize (so their evaluation is identical to reading the files)."""
    if not data_args.pixel_cache:
        return data
    sizes = split_cache_sizes(
        data,
        settings.image_size,
        min_crop_scale,
        eval_resize_size(settings),
        data_args.cache_size,
    )
    with training_args.main_process_first(desc="building the pixel cache"):
        return DatasetDict(
            {
                split: build_cache(
                    ds,
                    size=sizes[split],
                    cache_dir=data_args.cache_dir,
                    num_proc=data_args.preprocessing_num_workers,
                )
                for split, ds in data.items()
            }
        )


def _collator(config, data_args, num_classes: int | None = None) -> CXRCollator:
    return CXRCollator(config.num_channels, data_args.mixup, data_args.cutmix, num_classes)


def source_transforms(config, data_args, mode: str, **kwargs: Any) -> dict[str, Any]:
    """Pre-training transforms per source with the official per-source normalisation
    (``SOURCE_NORMALIZATION``), or none with ``--pretrain_normalization model``."""
    if data_args.pretrain_normalization != "per_source":
        return {}
    return {
        name: create_transform(config, mode, mean=mean, std=std, **kwargs)
        for name, (mean, std) in SOURCE_NORMALIZATION.items()
    }


def _take_push(training_args) -> BackgroundPusher | None:
    """Our own push (retries, never raising, on a background thread), or None; the Trainer's own
    push is switched off. The token leaves ``training_args`` here, before the Trainer pickles them
    into ``training_args.bin`` (at the root and in every checkpoint): only the pusher keeps it."""
    token, training_args.hub_token = training_args.hub_token, None
    push, training_args.push_to_hub = bool(training_args.push_to_hub), False
    if not push:
        return None
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).name
    return BackgroundPusher(
        repo_id, training_args.hub_private_repo, token, training_args.push_retries
    )


def _push_callbacks(pusher: BackgroundPusher | None, training_args) -> list:
    """A per-save push for ``--hub_strategy`` every_save / checkpoint / all_checkpoints."""
    strategy = str(getattr(training_args.hub_strategy, "value", training_args.hub_strategy))
    if pusher is None or strategy == "end":
        return []
    return [HubPushCallback(pusher)]


def drop_empty_splits(data: DatasetDict, source: str) -> DatasetDict:
    """Refuse a missing or empty training split before anything trains; drop an empty
    validation or test split with a warning (it would fail only after all the training)."""
    if "train" not in data:
        raise ValueError(f"{source} has no training split (got splits {sorted(data)}).")
    if len(data["train"]) == 0:
        raise ValueError(
            f"The training split is empty (0 images) in {source}: nothing to train on."
        )
    for split in [k for k, v in data.items() if k != "train" and len(v) == 0]:
        logger.warning(
            "The %s split is empty (0 images) in %s: skipped, no %s evaluation.",
            split, source, split,
        )  # fmt: skip
    return DatasetDict({k: v for k, v in data.items() if k == "train" or len(v) > 0})


def without_validation(training_args) -> None:
    """No validation split: no evaluation during training and no best-model selection (never on
    test), with a warning; the final model is the last step's."""
    from transformers.trainer_utils import IntervalStrategy

    if (
        training_args.eval_strategy == IntervalStrategy.NO
        and not training_args.load_best_model_at_end
    ):
        return
    logger.warning(
        "There is no validation data: evaluation during training and best-model selection are "
        "off; the saved model is the last step's."
    )
    training_args.eval_strategy = IntervalStrategy.NO
    training_args.load_best_model_at_end = False


def select_on_defined_metric(data: DatasetDict, names: list[str], problem_type: str, args) -> None:
    """Pick the best model on validation loss when validation's mAUC can never be defined (no
    finding with both positive and negative images, e.g. a tiny split): the Trainer would
    otherwise stop at the first evaluation, after a whole epoch, on a missing ``eval_mauc``."""
    if "validation" not in data or args.metric_for_best_model not in ("mauc", "eval_mauc"):
        return
    validation = data["validation"]
    if problem_type == "single_label_classification":
        defined = len(set(validation["label"])) > 1
    else:
        rows = validation["labels"]
        defined = any(
            {1.0, 0.0} <= {row[n] for row in rows} for n in names
        )  # -1 (uncertain) counts as neither
    if defined:
        return
    logger.warning(
        "No finding has both positive and negative images in the validation split (%d images): "
        "its mAUC is undefined, so the best model is picked on validation loss instead.",
        len(validation),
    )
    args.metric_for_best_model, args.greater_is_better = "loss", False


def _source_name(data_args) -> str:
    if not data_args.dataset:
        return "the DEMO data"
    return ", ".join(
        f"{n} at {d}" for n, d in zip(data_args.dataset, data_args.data_dir, strict=True)
    )


def _skipped_test(had_test: bool) -> dict[str, Any]:
    """metrics.json (and the card) of a run whose test split was empty or absent."""
    why = "the test split is empty" if had_test else "the dataset has no test split"
    return {"split": None, "num_images": 0, "skipped": f"No test evaluation: {why}"}


def _write_card(output_dir: str, card: dict[str, Any], arg_objects: tuple, training_args, pusher):
    """README.md (the card) and training_args.json (scrubbed of secrets and local paths)."""
    from ..hub import non_default_args, write_card, write_training_args

    write_training_args(output_dir, *arg_objects)
    write_card(
        output_dir,
        model_name=training_args.hub_model_id or Path(output_dir).name,
        hyperparameters=non_default_args(*arg_objects),
        repo_id=pusher.repo_id if pusher else None,
        **card,
    )


def save_outputs(
    trainer, model, processor, card: dict[str, Any], arg_objects: tuple, pusher, training_args
) -> None:
    """The trained model, its processor, card and arguments at the root of ``output_dir``, right
    after training: nothing that runs later (evaluation, metrics, push) can lose them."""
    if model is None:
        trainer.save_model()  # the final (or best) model
    elif trainer.is_world_process_zero():
        model.save_pretrained(training_args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        _write_card(training_args.output_dir, card, arg_objects, training_args, pusher)


def publish(
    output_dir: str, card: dict[str, Any], arg_objects: tuple, pusher, training_args
) -> None:
    """The card again (now with the metrics) and, when asked, the push; waits a bounded time for
    the pushes still running in the background and logs how they went. Main process only."""
    _write_card(output_dir, card, arg_objects, training_args, pusher)
    if pusher is None:
        return
    example = make_demo_dataset(num_train=1, num_validation=0, num_test=0, size=256)["train"][0]
    example["image"].save(Path(output_dir) / "example.png")  # the widget's: synthetic, no patient
    pusher.submit(output_dir, "Upload model from hf-cxr-mae")
    pusher.close(training_args.push_timeout)


def _finish(
    trainer, training_args, metrics: dict[str, Any], card: dict[str, Any], arg_objects, pusher
) -> None:
    """After evaluation: all_results.json, then the card with metrics and the push."""
    trainer.log_metrics("all", metrics)
    trainer.save_metrics("all", metrics, combined=False)
    if trainer.is_world_process_zero():
        publish(training_args.output_dir, card, arg_objects, pusher, training_args)


# --------------------------------------------------------------------------------------- pretrain


def run_pretrain(model_args, data_args, training_args) -> dict[str, Any]:
    """MAE pre-training. Returns the metrics (train loss, eval loss)."""
    setup_logging(training_args)
    pusher = _take_push(training_args)
    if model_args.model_name_or_path:
        source_type = _source_model_type(model_args.model_name_or_path)
        if source_type != "vit_mae":
            raise ValueError(
                f"{model_args.model_name_or_path} is a {source_type!r} checkpoint; pre-training continues a 'vit_mae' one."
            )
        model = CXRMAEForPreTraining.from_pretrained(
            model_args.model_name_or_path, mask_ratio=model_args.mask_ratio
        )
        config = model.config
    else:
        overrides = {"mask_ratio": model_args.mask_ratio, "norm_pix_loss": model_args.norm_pix_loss}
        if model_args.image_size:
            overrides["image_size"] = model_args.image_size
        config = CXRMAEConfig.from_preset(model_args.preset, **overrides)
        model = None
    set_seed(training_args.seed)

    if data_args.dataset:
        images = load_pretraining_dataset(_sources(data_args))
        # A small patient-disjoint hold-out for the eval loss and the reconstruction previews.
        images, held_out = patient_split(
            images, max(1, min(1000, len(images) // 100)), training_args.seed
        )
    else:
        _demo_warning()
        demo = make_demo_dataset(num_train=data_args.demo_size, seed=training_args.seed)
        images = concatenate_datasets([demo["train"], demo["validation"]]).remove_columns("labels")
        held_out = demo["test"].remove_columns("labels")
    images = _truncate(images, data_args.max_train_samples)
    held_out = _truncate(held_out, data_args.max_eval_samples)
    if len(images) == 0:
        raise ValueError(f"No images to pre-train on in {_source_name(data_args)}.")
    crop = (data_args.crop_min_scale or 0.5, 1.0)
    images, held_out = _cache(
        DatasetDict(train=images, validation=held_out), data_args, training_args, config, crop[0]
    ).values()

    model = use_fast_attention(model or CXRMAEForPreTraining(config))
    seeds = AugmentationSeeds(training_args.seed)
    train_ds = with_row_ids(undecoded_images(images)).with_transform(
        batch_transform(
            create_transform(config, "pretrain", crop_scale=crop),
            seeds=seeds,
            source_transforms=source_transforms(config, data_args, "pretrain", crop_scale=crop),
        )
    )
    eval_ds = with_row_ids(undecoded_images(held_out)).with_transform(
        batch_transform(
            create_transform(config, "eval"),
            source_transforms=source_transforms(config, data_args, "eval"),
        )
    )
    preview = _collator(config, data_args)([eval_ds[i] for i in range(min(4, len(eval_ds)))])[
        "pixel_values"
    ]
    processor = build_image_processor(config)
    defining = run_settings(model_args, data_args, training_args)
    trainer = CXRTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=_collator(config, data_args),
        processing_class=processor,
        callbacks=[
            RunSettingsCallback(defining),
            ReconstructionPreviewCallback(
                preview, training_args.output_dir, training_args.preview_steps
            ),
            EpochCallback(seeds),
            *_push_callbacks(pusher, training_args),
        ],
    )
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(training_args, defining))
    card = {"kind": "pretrain", "config": config, "datasets": data_args.dataset or ["demo"]}
    arg_objects = (model_args, data_args, training_args)
    save_outputs(trainer, None, processor, card, arg_objects, pusher, training_args)
    metrics = {**result.metrics, **trainer.evaluate()}
    _finish(trainer, training_args, metrics, card, arg_objects, pusher)
    return metrics


# --------------------------------------------------------------------------------------- finetune


def _source_model_type(path: str) -> str:
    try:
        return AutoConfig.from_pretrained(path).model_type
    except OSError as err:
        hint = (
            " (the demo fine-tuning starts from recipes/pretrain.py's demo output: run it first)"
            if "demo" in path
            else ""
        )
        raise ValueError(
            f"Cannot load --model_name_or_path {path!r}: no such folder, and not found on the Hub{hint}. {err}"
        ) from err


def _check_classifier_source(model_args) -> None:
    """Refuse a checkpoint of another architecture before any data is read."""
    if not model_args.model_name_or_path:
        return
    model_type = _source_model_type(model_args.model_name_or_path)
    allowed = {"vit": ("vit_mae", "beit"), "densenet121": ("timm_wrapper",)}[
        model_args.architecture
    ]
    if model_type not in allowed:
        raise ValueError(
            f"{model_args.model_name_or_path} is a {model_type!r} checkpoint; --architecture "
            f"{model_args.architecture} starts from {' or '.join(allowed)}."
        )


def load_labelled_data(data_args, seed: int) -> DatasetDict:
    if not data_args.dataset:
        _demo_warning()
        data = make_demo_dataset(num_train=data_args.demo_size, seed=seed)
    elif len(data_args.dataset) != 1:
        raise ValueError(f"Fine-tuning and evaluation take one --dataset, got {data_args.dataset}.")
    else:
        name, data_dir, options = _sources(data_args)[0]
        if name == "imagefolder":  # a layout without class folders is an error, not unlabelled
            options["labelled"] = True
        data = load_cxr_dataset(name, data_dir, **options)
    log_label_counts(data)  # before training: a typo'd or empty class shows here
    return data


def problem_type_of(dataset: Dataset) -> str:
    """``single_label_classification`` for a ``label`` (ClassLabel) column, else multi-label."""
    return (
        "single_label_classification"
        if "label" in dataset.column_names
        else "multi_label_classification"
    )


def classification_splits(
    data: DatasetDict, names: list[str], problem_type: str, settings, train_transform, seed: int
):
    """The training split with seeded augmentation, the others with the eval transform."""
    order = names if problem_type == "multi_label_classification" else None
    seeds = AugmentationSeeds(seed)
    # Undecoded images and row ids: a file that fails to decode is named with its row.
    train = with_row_ids(undecoded_images(data["train"])).with_transform(
        batch_transform(train_transform, order, seeds)
    )
    evaluate = batch_transform(create_transform(settings, "eval"), order)
    others = {
        k: with_row_ids(undecoded_images(v)).with_transform(evaluate)
        for k, v in data.items()
        if k != "train"
    }
    return train, others, seeds


def build_classifier(model_args, names: list[str], problem_type: str):
    """The model to fine-tune: ViT (from an MAE, a classifier or scratch) or timm DenseNet-121."""
    id2label = dict(enumerate(names))
    if model_args.architecture == "densenet121":
        from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

        if model_args.model_name_or_path:
            return TimmWrapperForImageClassification.from_pretrained(
                model_args.model_name_or_path, id2label=id2label, problem_type=problem_type
            )
        config = TimmWrapperConfig(
            architecture="densenet121",
            num_labels=len(names),
            id2label=id2label,
            problem_type=problem_type,
        )
        return TimmWrapperForImageClassification(config)
    overrides: dict[str, Any] = {
        "drop_path_rate": model_args.drop_path_rate,
        "pooling": model_args.pooling,
        "problem_type": problem_type,
    }
    if model_args.image_size:
        overrides["image_size"] = model_args.image_size
    if model_args.model_name_or_path:
        return CXRViTForImageClassification.from_checkpoint(
            model_args.model_name_or_path,
            id2label=names,
            reinit_head=model_args.reinit_head,
            **overrides,
        )
    return CXRViTForImageClassification(
        CXRClassifierConfig.from_preset(model_args.preset, id2label=id2label, **overrides)
    )


def data_settings(model) -> SimpleNamespace:
    """image_size / mean / std / crop_pct / channels of any classifier (ours carry them; CNNs get CXR ones)."""
    cfg = model.config
    ours = CXRClassifierConfig()
    return SimpleNamespace(
        image_size=getattr(cfg, "image_size", 224),
        image_mean=getattr(cfg, "image_mean", ours.image_mean),
        image_std=getattr(cfg, "image_std", ours.image_std),
        crop_pct=getattr(cfg, "crop_pct", ours.crop_pct),
        num_channels=getattr(cfg, "num_channels", 3),
    )


def full_metrics(trainer, dataset, names: list[str], problem_type: str) -> dict[str, Any]:
    """Per-finding metrics (AUROC, AP, counts, undefined) of a split, for metrics.json."""
    prediction = trainer.predict(dataset, metric_key_prefix="predict")
    compute = (
        single_label_metrics
        if problem_type == "single_label_classification"
        else multilabel_metrics
    )
    out = compute(prediction.predictions, prediction.label_ids, names)
    out["num_images"] = len(prediction.label_ids)
    return out


def _test_report(
    trainer, splits: dict, names: list[str], problem_type: str, had_test: bool, metrics: dict
) -> dict[str, Any]:
    """Test metrics (into ``metrics``) and metrics.json, once, with the model chosen on
    validation; without test images, a metrics.json that says there was no test evaluation."""
    if "test" in splits:
        metrics.update(trainer.evaluate(splits["test"], metric_key_prefix="test"))
        report = {**full_metrics(trainer, splits["test"], names, problem_type), "split": "test"}
    else:
        report = _skipped_test(had_test)
    if trainer.is_world_process_zero():
        Path(trainer.args.output_dir, "metrics.json").write_text(json.dumps(report, indent=2))
    return report


def run_finetune(model_args, data_args, training_args) -> dict[str, Any]:
    """Fine-tune a classifier; best epoch chosen on validation, test evaluated once at the end."""
    setup_logging(training_args)
    pusher = _take_push(training_args)
    _check_classifier_source(model_args)
    set_seed(training_args.seed)
    data = load_labelled_data(data_args, training_args.seed)
    had_test = "test" in data
    data = drop_empty_splits(data, _source_name(data_args))
    if "validation" not in data:
        without_validation(training_args)
    names = label_names(data["train"])
    problem_type = problem_type_of(data["train"])
    model = build_classifier(model_args, names, problem_type)
    if model_args.architecture == "vit":
        use_fast_attention(model)
    if model.config.num_labels != len(names):
        raise ValueError(
            f"The model has {model.config.num_labels} labels but the dataset has {len(names)} ({names})."
        )
    data = DatasetDict(
        {
            k: _truncate(
                v, data_args.max_train_samples if k == "train" else data_args.max_eval_samples
            )
            for k, v in data.items()
        }
    )
    select_on_defined_metric(data, names, problem_type, training_args)
    settings = data_settings(model)
    crop = (data_args.crop_min_scale or 0.08, 1.0)
    data = _cache(data, data_args, training_args, settings, crop[0])
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
            *_push_callbacks(pusher, training_args),
        ],
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=splits.get("validation"),
        data_collator=_collator(settings, data_args, len(names)),
        processing_class=processor,
        compute_metrics=compute_metrics_fn(names, problem_type),
    )
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(training_args, defining))
    card = {
        "kind": "classifier",
        "config": model.config,
        "datasets": data_args.dataset or ["demo"],
        "report": {},
        "base_model": model_args.model_name_or_path or None,
        "uncertainty": data_args.uncertainty,
    }
    arg_objects = (model_args, data_args, training_args)
    save_outputs(trainer, None, processor, card, arg_objects, pusher, training_args)
    metrics: dict[str, Any] = dict(result.metrics)
    if "validation" in splits:
        metrics.update(trainer.evaluate(splits["validation"], metric_key_prefix="eval"))
    card["report"] = _test_report(trainer, splits, names, problem_type, had_test, metrics)
    _finish(trainer, training_args, metrics, card, arg_objects, pusher)
    return metrics


# --------------------------------------------------------------------------------------- linprobe


class LinearProbe(torch.nn.Module):
    """Frozen encoder (eval mode) -> pooled feature -> BatchNorm (no affine) -> Linear (MAE's probe)."""

    def __init__(self, classifier: CXRViTForImageClassification) -> None:
        super().__init__()
        self.classifier = classifier
        self.config = classifier.config
        self.norm = torch.nn.BatchNorm1d(classifier.config.hidden_size, affine=False, eps=1e-6)
        for p in classifier.beit.parameters():
            p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.beit.eval()  # frozen features: no dropout / drop path
        return self

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import ImageClassifierOutput

        with torch.no_grad():
            features = self.classifier.beit(pixel_values).pooler_output
        return ImageClassifierOutput(logits=self.classifier.classifier(self.norm(features)))

    def folded(self) -> CXRViTForImageClassification:
        """The classifier with the BatchNorm folded into its Linear: a plain native checkpoint."""
        head = self.classifier.classifier
        scale = 1.0 / torch.sqrt(self.norm.running_var + self.norm.eps)
        with torch.no_grad():
            bias = head.bias - head.weight @ (self.norm.running_mean * scale)
            head.weight.mul_(scale)
            head.bias.copy_(bias)
        return self.classifier


def run_linprobe(model_args, data_args, training_args) -> dict[str, Any]:
    """Linear probe of a frozen MAE encoder (cls token after the final norm, BatchNorm, Linear, LARS)."""
    from .optim import LARS

    setup_logging(training_args)
    pusher = _take_push(training_args)
    if not model_args.model_name_or_path:
        raise ValueError("A linear probe needs --model_name_or_path (a pre-trained MAE).")
    _check_classifier_source(model_args)
    set_seed(training_args.seed)
    data = load_labelled_data(data_args, training_args.seed)
    had_test = "test" in data
    data = drop_empty_splits(data, _source_name(data_args))
    if "validation" not in data:
        without_validation(training_args)
    names = label_names(data["train"])
    problem_type = problem_type_of(data["train"])
    select_on_defined_metric(data, names, problem_type, training_args)
    classifier = CXRViTForImageClassification.from_checkpoint(
        model_args.model_name_or_path,
        id2label=names,
        pooling="cls",
        drop_path_rate=0.0,
        problem_type=problem_type,
        reinit_head=True,
    )
    probe = LinearProbe(classifier)
    settings = data_settings(classifier)
    crop = (data_args.crop_min_scale or 0.08, 1.0)
    data = _cache(data, data_args, training_args, settings, crop[0])
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
        data_collator=_collator(settings, data_args, len(names)),
        compute_metrics=compute_metrics_fn(names, problem_type),
        optimizers=(optimizer, None),
        callbacks=[
            RunSettingsCallback(defining),
            EpochCallback(seeds),
            *_push_callbacks(pusher, training_args),
        ],
    )
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(training_args, defining))
    # The BatchNorm folded into a copy: the probe itself still evaluates below.
    model = copy.deepcopy(probe).folded()
    card = {
        "kind": "classifier",
        "config": model.config,
        "datasets": data_args.dataset or ["demo"],
        "report": {},
        "base_model": model_args.model_name_or_path,
    }
    arg_objects = (model_args, data_args, training_args)
    save_outputs(trainer, model, processor, card, arg_objects, pusher, training_args)
    metrics: dict[str, Any] = dict(result.metrics)
    card["report"] = _test_report(trainer, splits, names, problem_type, had_test, metrics)
    _finish(trainer, training_args, metrics, card, arg_objects, pusher)
    return metrics


# --------------------------------------------------------------------------------------- evaluate


class TenCrop(torch.nn.Module):
    """Averages a classifier's logits over ten crops (the corners, the centre and their mirrors)."""

    def __init__(self, model: torch.nn.Module, num_channels: int) -> None:
        super().__init__()
        self.model, self.config, self.num_channels = model, model.config, num_channels

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import ImageClassifierOutput

        b, n = pixel_values.shape[:2]
        flat = pixel_values.flatten(0, 1).expand(-1, self.num_channels, -1, -1)
        return ImageClassifierOutput(
            logits=self.model(pixel_values=flat).logits.view(b, n, -1).mean(1)
        )


def check_same_validation(model_path: str, data_args, training_args) -> None:
    """A validation split carved from training data depends on ``validation_size`` (real data
    is split with the loaders' fixed seed; the DEMO images themselves depend on ``seed``):
    evaluating ``validation`` with other values than the fine-tuning's (its training_args.json)
    would score images the model was trained on."""
    file = Path(model_path) / "training_args.json"
    if training_args.split != "validation" or not file.is_file():
        return
    trained = json.loads(file.read_text())
    now = {"validation_size": data_args.validation_size}
    if not data_args.dataset:
        now["seed"] = training_args.seed
    if differ := [f"--{k} {trained[k]!r}" for k, v in now.items() if trained.get(k, v) != v]:
        raise ValueError(
            f"{model_path} was fine-tuned with {' '.join(differ)} (now "
            f"{', '.join(f'{k} {v!r}' for k, v in now.items())}): the validation split is carved "
            f"with those, so pass them too, or the 'validation' images include training images."
        )


def run_evaluate(model_args, data_args, training_args) -> dict[str, Any]:
    """Evaluate a classifier on one split: ``output_dir`` gets metrics.json (AUROC / AP per finding,
    mAUC, bootstrap 95% CIs, counts), roc.png, report.md (and confusion_matrix.png, single-label)."""
    from transformers import AutoModelForImageClassification

    from ..reports import write_report

    setup_logging(training_args)
    if not model_args.model_name_or_path:
        raise ValueError("evaluate needs --model_name_or_path (a classifier folder or Hub id).")
    check_same_validation(model_args.model_name_or_path, data_args, training_args)
    model = AutoModelForImageClassification.from_pretrained(model_args.model_name_or_path)
    if model.config.model_type == "beit":
        use_fast_attention(model)  # the kernels fine-tuning evaluated with: the same numbers
    data = load_labelled_data(data_args, training_args.seed)
    split = training_args.split
    if split not in data:
        raise ValueError(f"Split {split!r} not in the dataset; it has {list(data)}.")
    if len(data[split]) == 0:
        raise ValueError(
            f"The {split} split is empty (0 images) in {_source_name(data_args)}: nothing to evaluate."
        )
    names = label_names(data[split])
    model_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if model_names != names:
        raise ValueError(f"The model's labels {model_names} differ from the dataset's {names}.")
    problem_type = problem_type_of(data[split])
    settings = data_settings(model)
    dataset = _cache(
        DatasetDict({split: _truncate(data[split], data_args.max_eval_samples)}),
        data_args,
        training_args,
        settings,
    )[split]
    order = names if problem_type.startswith("multi") else None
    dataset = with_row_ids(undecoded_images(dataset))
    if training_args.tta == "ten_crop":
        dataset = dataset.with_transform(batch_transform(ten_crop_transform(settings), order))
        evaluated, collator = TenCrop(model, settings.num_channels), CXRCollator(num_channels=1)
    else:
        dataset = dataset.with_transform(batch_transform(create_transform(settings, "eval"), order))
        evaluated, collator = model, _collator(settings, data_args)
    trainer = CXRTrainer(model=evaluated, args=training_args, data_collator=collator)
    prediction = trainer.predict(dataset, metric_key_prefix="predict")
    report: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        extra = {"model": str(model_args.model_name_or_path), "tta": training_args.tta or None}
        report = write_report(
            training_args.output_dir, prediction.predictions, prediction.label_ids, names, split, problem_type,
            n_resamples=training_args.bootstrap_resamples, seed=training_args.seed, extra=extra,
        )  # fmt: skip
        logger.info(
            "mAUC %s on %s (%d images) -> %s",
            report.get("mauc"),
            split,
            report["num_images"],
            training_args.output_dir,
        )
    return report
