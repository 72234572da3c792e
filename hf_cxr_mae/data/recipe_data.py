"""The data side of the recipes: the ``--dataset`` sources, the DEMO data, empty splits, sample
limits, the pixel cache of each split, the collator and each split's transform."""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset, DatasetDict, concatenate_datasets

from ..constants import eval_resize_size
from .cache import build_cache, split_cache_sizes
from .demo import make_demo_dataset
from .label_stats import log_label_counts
from .loading import SOURCES, load_cxr_dataset, load_pretraining_dataset, loader_options
from .near_duplicates import check_near_duplicates
from .splits import patient_split, split_or_all
from .transforms import (
    SOURCE_NORMALIZATION,
    AugmentationSeeds,
    CXRCollator,
    batch_transform,
    create_transform,
    undecoded_images,
    with_row_ids,
)

logger = logging.getLogger("hf_cxr_mae")


def sources(data_args) -> list[tuple[str, str, dict[str, Any]]]:
    """``(name, data_dir, options)`` per ``--dataset``, each with the options its loader takes."""
    options = data_args.source_options()
    out = []
    for name, data_dir in zip(data_args.dataset, data_args.data_dir, strict=True):
        if name not in SOURCES:
            raise ValueError(f"Unknown --dataset {name!r}; choose from {sorted(SOURCES)}.")
        accepted = loader_options(name)
        out.append((name, data_dir, {k: v for k, v in options.items() if k in accepted}))
    return out


def source_name(data_args) -> str:
    """The data as error messages name it: ``nih14 at /data/nih`` or ``the DEMO data``."""
    if not data_args.dataset:
        return "the DEMO data"
    return ", ".join(
        f"{n} at {d}" for n, d in zip(data_args.dataset, data_args.data_dir, strict=True)
    )


def demo_warning() -> None:
    logger.warning("=" * 72)
    logger.warning(
        "DEMO DATA: no --dataset given. Training on built-in SYNTHETIC images (not X-rays)."
    )
    logger.warning("Pass --dataset and --data_dir for real data (see recipes/configs/).")
    logger.warning("=" * 72)


def truncate(ds: Dataset, n: int | None) -> Dataset:
    """The first ``n`` rows (all without a limit)."""
    return ds.select(range(min(n, len(ds)))) if n else ds


def truncate_splits(data: DatasetDict, data_args) -> DatasetDict:
    """``--max_train_samples`` on the training split, ``--max_eval_samples`` on the others."""
    return DatasetDict(
        {
            k: truncate(
                v, data_args.max_train_samples if k == "train" else data_args.max_eval_samples
            )
            for k, v in data.items()
        }
    )


def pretraining_images(
    source_list: list[tuple[str, str, dict[str, Any]]], seed: int
) -> tuple[Dataset, Dataset]:
    """The sources' pre-training images and the patient-disjoint hold-out carved from them (1%,
    1 to 1000 images). ``hf-cxr-mae cache --recipe pretrain`` caches exactly these two."""
    images = load_pretraining_dataset(source_list)
    return patient_split(images, max(1, min(1000, len(images) // 100)), seed)


def load_pretraining_images(data_args, seed: int) -> tuple[Dataset, Dataset]:
    """The images to pre-train on and a small patient-disjoint hold-out (eval loss and
    reconstruction previews), sample limits applied; none to pre-train on is an error."""
    if data_args.dataset:
        images, held_out = pretraining_images(sources(data_args), seed)
    else:
        demo_warning()
        demo = make_demo_dataset(num_train=data_args.demo_size, seed=seed)
        images = concatenate_datasets([demo["train"], demo["validation"]]).remove_columns("labels")
        held_out = demo["test"].remove_columns("labels")
    images = truncate(images, data_args.max_train_samples)
    held_out = truncate(held_out, data_args.max_eval_samples)
    if len(images) == 0:
        raise ValueError(f"No images to pre-train on in {source_name(data_args)}.")
    return images, held_out


def load_labelled_data(data_args, seed: int) -> DatasetDict:
    """The labelled splits of the one ``--dataset`` (or the DEMO data), label counts logged."""
    if not data_args.dataset:
        demo_warning()
        data = make_demo_dataset(num_train=data_args.demo_size, seed=seed)
    elif len(data_args.dataset) != 1:
        raise ValueError(f"Fine-tuning and evaluation take one --dataset, got {data_args.dataset}.")
    else:
        name, data_dir, options = sources(data_args)[0]
        if name == "imagefolder":  # a layout without class folders is an error, not unlabelled
            options["labelled"] = True
        data = load_cxr_dataset(name, data_dir, **options)
    log_label_counts(data)  # before training: a typo'd or empty class shows here
    return data


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


def evaluation_split(data: DatasetDict, split: str, data_args) -> Dataset:
    """The one split to evaluate (``all``: every image, see ``split_or_all``), refused when
    absent or empty, ``--max_eval_samples`` applied."""
    chosen = split_or_all(data, split)
    if len(chosen) == 0:
        raise ValueError(
            f"The {split} split is empty (0 images) in {source_name(data_args)}: nothing to evaluate."
        )
    return truncate(chosen, data_args.max_eval_samples)


def cache_splits(
    data: DatasetDict, data_args, training_args, settings, min_crop_scale: float = 1.0
) -> DatasetDict:
    """The pixel cache of each split, its shortest side sized from what the recipe takes from it
    unless ``--cache_size`` is given (then warned about if it loses detail): the training split
    keeps what its smallest random crop needs (``cache_size_for``), the others the evaluation
    resize (so their evaluation is identical to reading the files). An image of one split that
    is a re-encoded or resized copy of another split's is refused (``check_near_duplicates``,
    on the hashes the cache keeps; ``--on_bad skip`` leaves the copy out of the less held-out
    split)."""
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
        cached = {
            split: build_cache(
                ds,
                size=sizes[split],
                cache_dir=data_args.cache_dir,
                num_proc=data_args.preprocessing_num_workers,
            )
            for split, ds in data.items()
        }
    if not data_args.dataset:  # the DEMO pictures share one drawing: alike by design, no leak
        return DatasetDict(cached)
    return DatasetDict(check_near_duplicates(cached, data_args.on_bad or "raise"))


def collator(config, data_args, num_classes: int | None = None) -> CXRCollator:
    """Batches with the run's channels and MixUp / CutMix."""
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


def preview_normalization(
    held_out: Dataset, count: int, data_args
) -> list[tuple[tuple[float, ...], tuple[float, ...]] | None] | None:
    """The (mean, std) each of the first ``count`` held-out images was normalised with, so that
    previews undo the right one; None when every image uses the model's (as ``batch_transform``
    does for a source without its own statistics)."""
    if data_args.pretrain_normalization != "per_source" or "source" not in held_out.column_names:
        return None
    sources_ = held_out.select(range(count))["source"]
    if not any(s in SOURCE_NORMALIZATION for s in sources_):
        return None
    return [SOURCE_NORMALIZATION.get(s) for s in sources_]


def pretraining_splits(
    images: Dataset, held_out: Dataset, config, data_args, seed: int, crop: tuple[float, float]
) -> tuple[Dataset, Dataset, AugmentationSeeds]:
    """The pre-training images with seeded random crops, the hold-out with the eval transform."""
    seeds = AugmentationSeeds(seed)
    train = with_row_ids(undecoded_images(images)).with_transform(
        batch_transform(
            create_transform(config, "pretrain", crop_scale=crop),
            seeds=seeds,
            source_transforms=source_transforms(config, data_args, "pretrain", crop_scale=crop),
        )
    )
    evaluation = with_row_ids(undecoded_images(held_out)).with_transform(
        batch_transform(
            create_transform(config, "eval"),
            source_transforms=source_transforms(config, data_args, "eval"),
        )
    )
    return train, evaluation, seeds


def classification_splits(
    data: DatasetDict, names: list[str], problem_type: str, settings, train_transform, seed: int
) -> tuple[Dataset, dict[str, Dataset], AugmentationSeeds]:
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
