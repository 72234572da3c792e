"""The data side of the recipes: their data arguments (the dataset spec, cache and
augmentation), the DEMO data, empty splits, sample limits, the pixel cache of each split, the
collator and each split's transform."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from datasets import Dataset, DatasetDict, concatenate_datasets

from ..constants import eval_resize_size
from ..data.cache import build_cache, split_cache_sizes
from ..data.demo import make_demo_dataset
from ..data.label_stats import log_label_counts
from ..data.loading import load_labelled, load_pretraining_dataset
from ..data.near_duplicates import check_near_duplicates
from ..data.source_arguments import SourceArguments
from ..data.splits import patient_split, split_or_all
from ..data.transforms import (
    CROP_MIN_SCALE,
    SOURCE_NORMALIZATION,
    AugmentationSeeds,
    CXRCollator,
    batch_transform,
    create_transform,
    undecoded_images,
    with_row_ids,
)

if TYPE_CHECKING:
    from .arguments import CXRTrainingArguments

logger = logging.getLogger("hf_cxr_mae")


@dataclass
class DataArguments(SourceArguments):
    """The dataset spec (``SourceArguments``) plus the recipes' pixel cache and augmentation."""

    pixel_cache: bool = field(
        default=True, metadata={"help": "Decode images once into the pixel cache."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Pixel cache folder (default under $HF_HOME)."}
    )
    cache_size: int | None = field(
        default=None,
        metadata={
            "help": "Shortest side kept in the cache. None: sized from the recipe's crops (image_size / sqrt(min crop scale), at least the eval resize), so no crop is upsampled from it; a smaller size warns."
        },
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for the cache build."}
    )
    crop_min_scale: float | None = field(
        default=None,
        metadata={
            "help": "RandomResizedCrop min scale; default per recipe: "
            + ", ".join(f"{k} {v}" for k, v in CROP_MIN_SCALE.items())
        },
    )
    auto_augment: str | None = field(
        default="rand-m6-mstd0.5-inc1", metadata={"help": "timm RandAugment string; '' to disable."}
    )
    randaug_interpolation: Literal["bicubic", "bilinear", "random"] = field(
        default="bicubic",
        metadata={
            "help": "RandAugment resampling: bicubic (official), bilinear, or random (timm's default draw)."
        },
    )
    pretrain_normalization: Literal["per_source", "model"] = field(
        default="per_source",
        metadata={
            "help": "Pre-training: 'per_source' (official: NIH mean 0.5056 / std 0.252, CheXpert and MIMIC-CXR ImageNet's per-channel statistics; other sources the model's) or 'model' (the model's mean / std for every source)."
        },
    )
    mixup: float = field(default=0.0, metadata={"help": "Mixup alpha (off in the paper's recipe)."})
    cutmix: float = field(
        default=0.0, metadata={"help": "CutMix alpha (off in the paper's recipe)."}
    )
    reprob: float = field(
        default=0.0, metadata={"help": "Random erasing probability (off in the paper's recipe)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Truncate the training set (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Truncate validation / test sets."}
    )
    demo_size: int = field(default=480, metadata={"help": "Training images of the DEMO data."})

    def __post_init__(self) -> None:
        super().__post_init__()  # the source checks and every Literal field's
        if self.crop_min_scale is not None and not 0 < self.crop_min_scale <= 1:
            raise ValueError(f"--crop_min_scale must be in (0, 1], got {self.crop_min_scale}.")
        if self.cache_size is not None and self.cache_size <= 0:
            raise ValueError(f"--cache_size must be positive, got {self.cache_size}.")
        for name in ("mixup", "cutmix", "reprob"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}.")


def crop_scale(data_args: DataArguments, recipe: str) -> tuple[float, float]:
    """RandomResizedCrop's scale range: ``--crop_min_scale`` or the recipe's (``CROP_MIN_SCALE``)."""
    return (data_args.crop_min_scale or CROP_MIN_SCALE[recipe], 1.0)


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


def truncate_splits(data: DatasetDict, data_args: DataArguments) -> DatasetDict:
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


def load_pretraining_images(data_args: DataArguments, seed: int) -> tuple[Dataset, Dataset]:
    """The images to pre-train on and a small patient-disjoint hold-out (eval loss and
    reconstruction previews), sample limits applied; none to pre-train on is an error."""
    if data_args.dataset:
        images, held_out = pretraining_images(data_args.sources(), seed)
    else:
        demo_warning()
        demo = make_demo_dataset(num_train=data_args.demo_size, seed=seed)
        images = concatenate_datasets([demo["train"], demo["validation"]]).remove_columns("labels")
        held_out = demo["test"].remove_columns("labels")
    images = truncate(images, data_args.max_train_samples)
    held_out = truncate(held_out, data_args.max_eval_samples)
    if len(images) == 0:
        raise ValueError(f"No images to pre-train on in {data_args.describe()}.")
    return images, held_out


def load_labelled_data(data_args: DataArguments, seed: int) -> DatasetDict:
    """The labelled splits of the one ``--dataset`` (or the DEMO data), label counts logged."""
    if not data_args.dataset:
        demo_warning()
        data = make_demo_dataset(num_train=data_args.demo_size, seed=seed)
    elif len(data_args.dataset) != 1:
        raise ValueError(f"Fine-tuning and evaluation take one --dataset, got {data_args.dataset}.")
    else:
        data = load_labelled(*data_args.sources()[0])
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


def evaluation_split(data: DatasetDict, split: str, data_args: DataArguments) -> Dataset:
    """The one split to evaluate (``all``: every image, see ``split_or_all``), refused when
    absent or empty, ``--max_eval_samples`` applied."""
    chosen = split_or_all(data, split)
    if len(chosen) == 0:
        raise ValueError(
            f"The {split} split is empty (0 images) in {data_args.describe()}: nothing to evaluate."
        )
    return truncate(chosen, data_args.max_eval_samples)


def cache_splits(
    data: DatasetDict,
    data_args: DataArguments,
    training_args: CXRTrainingArguments,
    settings: Any,
    min_crop_scale: float = 1.0,
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


def collator(config: Any, data_args: DataArguments, num_classes: int | None = None) -> CXRCollator:
    """Batches with the run's channels and MixUp / CutMix."""
    return CXRCollator(config.num_channels, data_args.mixup, data_args.cutmix, num_classes)


def source_transforms(
    config: Any, data_args: DataArguments, mode: str, **kwargs: Any
) -> dict[str, Any]:
    """Pre-training transforms per source with the official per-source normalisation
    (``SOURCE_NORMALIZATION``), or none with ``--pretrain_normalization model``."""
    if data_args.pretrain_normalization != "per_source":
        return {}
    return {
        name: create_transform(config, mode, mean=mean, std=std, **kwargs)
        for name, (mean, std) in SOURCE_NORMALIZATION.items()
    }


def preview_normalization(
    held_out: Dataset, count: int, data_args: DataArguments
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
    images: Dataset,
    held_out: Dataset,
    config: Any,
    data_args: DataArguments,
    seed: int,
    crop: tuple[float, float],
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
