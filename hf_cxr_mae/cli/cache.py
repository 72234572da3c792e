"""The ``hf-cxr-mae cache`` command: decode a dataset (or a pre-training mixture) once
into the compact pixel cache, sized as the recipe will ask for it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..data.source_arguments import SOURCE_NAMES
from ._common import Subparsers, add_source_flags, source_spec


def cache(args: argparse.Namespace) -> None:
    """Build the pixel cache of a dataset ahead of training."""
    from ..configuration import CXRClassifierConfig
    from ..constants import eval_resize_size
    from ..data import load_cxr_dataset
    from ..data.cache import build_cache, default_cache_dir, non_empty_splits, split_cache_sizes
    from ..data.near_duplicates import check_near_duplicates
    from ..data.transforms import CROP_MIN_SCALE

    if not args.dataset:  # `cache --data_dir DIR nih14`: the list option took the dataset too
        from ..data.loading import SOURCES

        while (
            args.data_dir and str(args.data_dir[-1]) in SOURCES and not args.data_dir[-1].exists()
        ):
            args.dataset.insert(0, str(args.data_dir.pop()))
        if not args.dataset:
            raise SystemExit("cache: name the dataset(s): hf-cxr-mae cache nih14 --data_dir DIR")
    if len(args.data_dir) != len(args.dataset):
        raise SystemExit(
            f"cache: give one --data_dir per dataset: got {len(args.dataset)} datasets "
            f"({', '.join(args.dataset)}) and {len(args.data_dir)} folders."
        )
    if len(args.dataset) > 1 and args.recipe != "pretrain":
        raise SystemExit(
            "cache: several datasets are a pre-training mixture: add --recipe pretrain."
        )
    try:
        spec = source_spec(args, args.dataset, args.data_dir)
    except ValueError as err:  # an option none of the datasets takes, a bad combination
        raise SystemExit(f"cache: {err}") from err
    try:  # bad rows, a wrong label separator, overlapping sources (DataValidationError)
        if args.recipe == "pretrain":
            # Pre-training caches its own two splits (every source's training images, a
            # hold-out), built as the recipe builds them, so that it finds this cache.
            from datasets import DatasetDict

            from ..training.data_setup import pretraining_images

            images, held_out = pretraining_images(spec.sources(), args.seed)
            data = DatasetDict(train=images, validation=held_out)
        else:
            name = args.dataset[0]
            data = load_cxr_dataset(name, spec.data_dir[0], **spec.options(name))
    except ValueError as err:
        raise SystemExit(f"cache: {err}") from err
    # As the recipes: an empty split is skipped with a warning (they evaluate nothing on it).
    data = non_empty_splits(data, " + ".join(map(str, args.data_dir)))
    if not data:
        raise SystemExit(
            f"cache: every split of {', '.join(args.dataset)} is empty: nothing to cache."
        )
    # The sizes the recipe will ask for, so that it reuses this cache instead of building another.
    min_scale = CROP_MIN_SCALE[args.recipe]
    # The classifier's own evaluation resize (image_size / its default crop_pct).
    eval_resize = eval_resize_size(CXRClassifierConfig(image_size=args.image_size))
    sizes = split_cache_sizes(data, args.image_size, min_scale, eval_resize, args.size)
    start = time.perf_counter()
    cached = {
        name: build_cache(split, sizes[name], args.cache_dir, args.num_proc)
        for name, split in data.items()
    }
    seconds = time.perf_counter() - start
    try:  # re-encoded copies across splits, from the hashes the cache keeps (as the recipes do)
        cached = check_near_duplicates(cached, spec.on_bad or "raise")
    except ValueError as err:
        raise SystemExit(f"cache: {err}") from err
    for name, split in cached.items():
        folder = split.cache_files[0]["filename"].rsplit("/", 2)[0]
        print(f"{name:<10} {len(split):>8} images  shortest side {sizes[name]:>4}  {folder}")
    total = sum(len(split) for split in cached.values())
    print(f"{total} images cached in {seconds:.1f}s under {args.cache_dir or default_cache_dir()}")


def add_cache_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "cache", help="decode a dataset once into the compact pixel cache"
    )
    parser.add_argument(
        "dataset",
        nargs="*",
        help=f"{', '.join(SOURCE_NAMES)}; several with --recipe pretrain: the mixture the "
        "recipe's --dataset names, in the same order",
    )
    parser.add_argument("--data_dir", required=True, type=Path, nargs="+", help="one per dataset")
    parser.add_argument(
        "--recipe",
        choices=["finetune", "linprobe", "pretrain"],
        default="finetune",
        help="size each split as this recipe's defaults need it, so the recipe reuses the cache",
    )
    parser.add_argument("--image_size", type=int, default=224, help="the model's input size")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="one shortest side for every split (default: from --recipe; warns if it loses detail)",
    )
    parser.add_argument(
        "--cache_dir", type=Path, default=None, help="default: $HF_HOME/hf_cxr_mae/pixel_cache"
    )
    parser.add_argument("--num_proc", type=int, default=None)
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="--recipe pretrain: the run's --seed (it picks the held-out images); default 42",
    )
    add_source_flags(parser)
    parser.set_defaults(func=cache)
