"""The ``hf-cxr-mae cache`` command: decode a dataset (or a pre-training mixture) once
into the compact pixel cache, sized as the recipe will ask for it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._common import SEPARATOR_HELP, Subparsers, _dataset_options


def cache(args: argparse.Namespace) -> None:
    """Build the pixel cache of a dataset ahead of training."""
    from ..data import load_cxr_dataset
    from ..data.cache import build_cache, default_cache_dir, non_empty_splits, split_cache_sizes
    from ..data.near_duplicates import check_near_duplicates

    options = _dataset_options(args)
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
    if args.recipe == "pretrain":
        # Pre-training caches its own two splits (every source's training images, a hold-out),
        # built from the sources exactly as the recipe builds them, so that it finds this cache.
        from types import SimpleNamespace

        from datasets import DatasetDict

        from ..data.loading import SOURCES, loader_options
        from ..data.recipe_data import pretraining_images, sources

        accepted = set().union(*(loader_options(n) for n in args.dataset if n in SOURCES))
        if unknown := sorted(set(options) - accepted):
            raise SystemExit(f"cache: no dataset of {args.dataset} takes option(s) {unknown}.")
        data_args = SimpleNamespace(
            dataset=args.dataset, data_dir=[str(d) for d in args.data_dir],
            source_options=lambda: options,
        )  # fmt: skip
        try:
            images, held_out = pretraining_images(sources(data_args), args.seed)
        except ValueError as err:  # e.g. sources that overlap (DataValidationError)
            raise SystemExit(f"cache: {err}") from err
        data = DatasetDict(train=images, validation=held_out)
    else:
        try:
            data = load_cxr_dataset(args.dataset[0], args.data_dir[0], **options)
        except ValueError as err:  # bad rows, a wrong label separator (DataValidationError)
            raise SystemExit(f"cache: {err}") from err
    # As the recipes: an empty split is skipped with a warning (they evaluate nothing on it).
    data = non_empty_splits(data, " + ".join(map(str, args.data_dir)))
    if not data:
        raise SystemExit(f"cache: every split of {', '.join(args.dataset)} is empty: nothing to cache.")
    # The sizes the recipe will ask for, so that it reuses this cache instead of building another.
    min_scale = {"finetune": 0.08, "linprobe": 0.08, "pretrain": 0.5}[args.recipe]
    eval_resize = round(args.image_size / (224 / 256))
    sizes = split_cache_sizes(data, args.image_size, min_scale, eval_resize, args.size)
    start = time.perf_counter()
    cached = {
        name: build_cache(split, sizes[name], args.cache_dir, args.num_proc)
        for name, split in data.items()
    }
    seconds = time.perf_counter() - start
    try:  # re-encoded copies across splits, from the hashes the cache keeps (as the recipes do)
        cached = check_near_duplicates(cached, options.get("on_bad") or "raise")
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
        help="nih14, chexpert, mimic_cxr, covidx, csv or imagefolder; several with --recipe "
        "pretrain: the mixture the recipe's --dataset names, in the same order",
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
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a load_cxr_dataset option",
    )
    parser.add_argument("--label_separator", default=None, help=SEPARATOR_HELP)
    parser.set_defaults(func=cache)
