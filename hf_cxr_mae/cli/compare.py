"""The ``hf-cxr-mae compare`` command: paired comparison of two classifiers (AUROC
differences, DeLong p-values, a figure), or unpaired on other images."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.source_arguments import SOURCE_NAMES
from ._common import Subparsers, add_source_flags, source_spec


def compare(args: argparse.Namespace) -> None:
    """Paired comparison of two classifiers: AUROC differences, DeLong p-values, a figure."""
    from ..evaluation.compare import run_compare

    given = [
        (d, f) for d, f in ((args.dataset, args.data_dir), (args.dataset_b, args.data_dir_b)) if d
    ]
    models = [m for m in (args.model_a, args.model_b) if m is not None]
    predictions = [p for p in (args.predictions_a, args.predictions_b) if p is not None]
    try:
        spec = source_spec(args, [d for d, _ in given] or None, [f for _, f in given] or None)
        result = run_compare(
            args.output_dir,
            models=models,
            predictions=predictions,
            labels_file=args.labels,
            dataset=args.dataset,
            data_dir=args.data_dir,
            split=args.split,
            options=spec.options(),
            max_eval_samples=args.max_eval_samples,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            n_resamples=args.bootstrap_resamples,
            seed=args.seed,
            label_map=args.label_map,
            dataset_b=args.dataset_b,
            data_dir_b=args.data_dir_b,
            split_b=args.split_b,
        )
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise SystemExit(f"compare: {err}") from err
    mean = result["mean"]
    if result.get("paired") is False:  # other images: each with its interval, no p-value
        from ..evaluation.external_compare import print_unpaired

        print_unpaired(result, args.output_dir)
        return
    if mean["difference"] is not None:
        lo, hi = mean["ci95"] or (float("nan"), float("nan"))
        print(
            f"mean AUROC A {mean['auroc_a']:.4f}  B {mean['auroc_b']:.4f}  difference "
            f"{mean['difference']:+.4f} [{lo:+.4f}, {hi:+.4f}] (paired bootstrap)"
        )
    print(f"wrote compare.json, compare.md, compare.png to {args.output_dir}")


def add_compare_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="paired comparison of two classifiers on one test set (DeLong test, bootstrap)",
        description="Per-finding and mean AUROC of two models on the same images, their "
        "difference with a 95% interval and DeLong's p-value (mean: paired bootstrap), a paired "
        "bootstrap check and a figure: compare.json, compare.md, compare.png in --output_dir. "
        "Give two model folders / Hub ids with --dataset/--data_dir/--split, or "
        "--predictions_a/--predictions_b files with --labels or --dataset.",
    )
    parser.add_argument("model_a", nargs="?", help="classifier folder or Hub id (A)")
    parser.add_argument("model_b", nargs="?", help="classifier folder or Hub id (B)")
    parser.add_argument(
        "--predictions_a", default=None, help="A's predictions: predict's CSV, .jsonl or --json"
    )
    parser.add_argument(
        "--predictions_b", default=None, help="B's predictions, the same images as A's"
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="labels CSV: image_id (or path) + one 0/1/-1 column per finding",
    )
    parser.add_argument(
        "--dataset", default=None, help=", ".join(SOURCE_NAMES)
    )
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--split", default="test")
    add_source_flags(parser)  # the dataset options, shared by --dataset and --dataset_b
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=0, help="image-reading processes")
    parser.add_argument("--bootstrap_resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    parser.add_argument(
        "--label_map",
        default=None,
        help="data of another source: 'auto' (the harmonised label table) or a JSON / YAML "
        "file {dataset label: model finding}; only the shared findings are compared",
    )
    parser.add_argument(
        "--dataset_b",
        default=None,
        help="score B (or the one model given) on this dataset instead: other images, so not "
        "paired (both AUROCs with intervals, no p-value)",
    )
    parser.add_argument("--data_dir_b", default=None)
    parser.add_argument("--split_b", default=None, help="default: --split ('all': every image)")
    parser.set_defaults(func=compare)
