"""Evaluating a classifier on one split, top to bottom: arguments checked, model, data,
transforms (optionally ten-crop), prediction, the report (metrics.json, roc.png, report.md with
calibration, the stored operating points and subgroups); and the test report that ends a
fine-tuning run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict

from ..attention import use_fast_attention
from ..data import label_names
from ..data.loading import loader_default
from ..data.source_arguments import RENAMED
from ..data.splits import ALL_SPLITS
from ..data.transforms import (
    CXRCollator,
    batch_transform,
    create_transform,
    ten_crop_transform,
    undecoded_images,
    with_row_ids,
)
from ..evaluation import reports
from ..evaluation.external import check_not_training_data, prepare_external
from ..evaluation.reports import metadata_groups, write_metrics_json
from ..processing import data_settings, problem_type_of
from ..serving.inference import TenCrop
from ..serving.predict import load_classifier
from .data_setup import cache_splits, collator, evaluation_split, load_labelled_data
from .outputs import skipped_test
from .postprocess import logits_of
from .run_setup import setup_logging
from .trainer import CXRTrainer

logger = logging.getLogger("hf_cxr_mae")


def check_same_validation(model_path: str, data_args, training_args) -> None:
    """A validation split carved from training data depends on ``validation_size`` (real data
    is split with the loaders' fixed seed; the DEMO images themselves depend on ``seed``):
    evaluating ``validation`` with other values than the fine-tuning's (its training_args.json)
    would score images the model was trained on."""
    file = Path(model_path) / "training_args.json"
    if training_args.split != "validation" or not file.is_file():
        return
    trained = json.loads(file.read_text())
    now = {"validation_size": data_args.validation_size, "split_seed": data_args.split_seed}
    if not data_args.dataset:
        now["seed"] = training_args.seed

    def effective(key: str, value: Any) -> Any:
        """None means the loader's own default: the same split as that value given."""
        if value is not None or not data_args.dataset:
            return value
        return loader_default(data_args.dataset[0], RENAMED.get(key, key))

    differ = [
        f"--{k} {trained[k]!r}"
        for k, v in now.items()
        if k in trained and effective(k, trained[k]) != effective(k, v)
    ]
    if differ:
        raise ValueError(
            f"{model_path} was fine-tuned with {' '.join(differ)} (now "
            f"{', '.join(f'{k} {v!r}' for k, v in now.items())}): the validation split is carved "
            f"with those, so pass them too, or the 'validation' images include training images."
        )


def labels_in_row_order(dataset: Dataset, names: list[str], problem_type: str) -> np.ndarray:
    """The dataset's labels as the Trainer returns them (class indices, or multi-hot rows in
    ``names`` order), read from Arrow without touching the images."""
    column = "label" if problem_type == "single_label_classification" else "labels"
    values = dataset.select_columns([column]).with_format("arrow")[:][column].to_pylist()
    if column == "label":
        return np.asarray(values, dtype=np.float64)
    return np.asarray([[row[n] for n in names] for row in values], dtype=np.float64)


def check_row_order(label_ids: np.ndarray, dataset: Dataset, names: list[str], problem_type: str):
    """Predictions must come back in the dataset's row order, or subgroups (read from the
    dataset's metadata columns) would be paired with other images' predictions. The labels the
    Trainer returned with them are compared with the dataset's own, row by row."""
    expected = labels_in_row_order(dataset, names, problem_type)
    got = np.asarray(label_ids, dtype=np.float64)
    if got.size == expected.size:
        got = got.reshape(expected.shape)
    if got.shape != expected.shape or not np.array_equal(got, expected):
        rows = (
            np.flatnonzero((got != expected).reshape(len(expected), -1).any(-1))[:5].tolist()
            if got.shape == expected.shape
            else []
        )
        raise RuntimeError(
            f"The predictions' labels differ from the dataset's (first rows {rows}, shapes "
            f"{got.shape} vs {expected.shape}): they are not in row order, so subgroups cannot "
            "be paired with them."
        )


def write_test_report(
    trainer, splits: dict, data: DatasetDict, names: list[str], problem_type: str,
    had_test: bool, metrics: dict, fitted: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The end of fine-tuning: the test split predicted once with the model chosen (and
    post-processed) on validation, its metrics into ``metrics`` and the full report (metrics.json
    with intervals, calibration, the stored operating points and subgroups; report.md and its
    figures); without test images, a metrics.json that says there was no test evaluation."""
    args = trainer.args
    if "test" not in splits:
        report = skipped_test(had_test)
        if trainer.is_world_process_zero():
            write_metrics_json(args.output_dir, report)
        return report
    prediction = trainer.predict(splits["test"], metric_key_prefix="test")
    metrics.update(prediction.metrics)
    trainer.log(prediction.metrics)
    check_row_order(prediction.label_ids, data["test"], names, problem_type)
    report: dict[str, Any] = {"split": "test"}
    if trainer.is_world_process_zero():
        report = reports.write_report(
            args.output_dir, logits_of(prediction), prediction.label_ids, names, "test",
            problem_type, n_resamples=args.bootstrap_resamples, seed=args.seed,
            extra={"fitted_on_validation": fitted} if fitted else None,
            groups=metadata_groups(data["test"]), config=trainer.model.config,
        )  # fmt: skip
    return report


def run_evaluate(model_args, data_args, training_args) -> dict[str, Any]:
    """Evaluate a classifier on one split: ``output_dir`` gets metrics.json (AUROC / AP per finding,
    mAUC, bootstrap 95% CIs, counts), roc.png, report.md (and confusion_matrix.png, single-label)."""
    setup_logging(training_args)
    if not model_args.model_name_or_path:
        raise ValueError("evaluate needs --model_name_or_path (a classifier folder or Hub id).")
    check_same_validation(model_args.model_name_or_path, data_args, training_args)
    if training_args.split == ALL_SPLITS and data_args.dataset:  # every image: not its own data
        for source, data_dir, _ in data_args.sources():
            check_not_training_data(model_args.model_name_or_path, source, data_dir)

    # The serving loader: a clear error for an encoder without a head or an ONNX-only export.
    model = load_classifier(model_args.model_name_or_path)
    if model.config.model_type == "beit":
        use_fast_attention(model)  # the kernels fine-tuning evaluated with: the same numbers

    data = load_labelled_data(data_args, training_args.seed)
    split = training_args.split
    dataset = evaluation_split(data, split, data_args)
    names = label_names(dataset)
    model_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    external = None
    if training_args.label_map:  # data of another source: only the findings both define alike
        external = prepare_external(
            model, model_args.model_name_or_path, dataset, training_args.label_map,
            *(data_args.sources()[0][:2] if data_args.dataset else (None, None)), split,
            data_args.source_options(),
        )  # fmt: skip
        names = external.findings
    elif sorted(model_names) == sorted(names) and problem_type_of(dataset).startswith("multi"):
        if model_names != names:  # the same findings in another order: matched by name
            logger.info("The dataset lists the model's findings in another order: matched by name.")
        names = model_names
    elif model_names != names:
        raise ValueError(
            f"The model's labels {model_names} differ from the dataset's {names}. For data of "
            "another source, pass --label_map auto (the harmonised label table) or a FILE."
        )
    problem_type = problem_type_of(dataset)
    settings = data_settings(model)
    dataset = cache_splits(DatasetDict({split: dataset}), data_args, training_args, settings)[split]
    if external is not None:
        dataset, problem_type = external.apply(dataset), "multi_label_classification"

    order = names if problem_type.startswith("multi") else None
    dataset = with_row_ids(undecoded_images(dataset))
    if training_args.tta == "ten_crop":
        dataset = dataset.with_transform(batch_transform(ten_crop_transform(settings), order))
        evaluated, batches = TenCrop(model, settings.num_channels), CXRCollator(num_channels=1)
    else:
        dataset = dataset.with_transform(batch_transform(create_transform(settings, "eval"), order))
        evaluated, batches = model, collator(settings, data_args)
    if external is not None:
        evaluated = external.wrap(evaluated)
    trainer = CXRTrainer(model=evaluated, args=training_args, data_collator=batches)
    prediction = trainer.predict(dataset, metric_key_prefix="predict")
    check_row_order(prediction.label_ids, dataset, names, problem_type)

    report: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        extra = {"model": str(model_args.model_name_or_path), "tta": training_args.tta or None}
        if external is not None:
            extra["external_validation"] = external.block
        report = reports.write_report(
            training_args.output_dir, logits_of(prediction), prediction.label_ids, names, split,
            problem_type, n_resamples=training_args.bootstrap_resamples, seed=training_args.seed,
            extra=extra, groups=metadata_groups(dataset), config=model.config,
        )  # fmt: skip
        logger.info(
            "mAUC %s on %s (%d images) -> %s",
            report.get("mauc"),
            split,
            report["num_images"],
            training_args.output_dir,
        )
    return report
