"""The ``hf-cxr-mae`` console script.

Each subcommand is a function that takes the parsed arguments, and an ``add_*`` function that
registers its parser and binds that function (``set_defaults(func=...)``); ``COMMANDS`` lists
them. Heavy imports happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

Subparsers = argparse._SubParsersAction


def _parse_options(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs; values parsed as YAML scalars/lists (``views=[PA]``, ``frontal_only=false``)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option expects key=value, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def cache(args: argparse.Namespace) -> None:
    """Build the pixel cache of a dataset ahead of training."""
    from .data import load_cxr_dataset
    from .data.cache import build_cache, default_cache_dir, split_cache_sizes

    options = _parse_options(args.option)
    if not args.dataset:  # `cache --data_dir DIR nih14`: the list option took the dataset too
        from .data.loading import SOURCES

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

        from .data.loading import SOURCES, loader_options
        from .data.recipe_data import pretraining_images, sources

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
        data = load_cxr_dataset(args.dataset[0], args.data_dir[0], **options)
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
    parser.set_defaults(func=cache)


def predict(args: argparse.Namespace) -> None:
    """Probabilities per finding for images (PNG, JPEG, DICOM, folders), optional heatmaps; with
    --output, a CSV / JSON lines file written batch by batch (a rerun skips what it holds)."""
    from .predict import (
        collect_images,
        is_onnx,
        load_model,
        predict_files,
        predict_to_file,
        write_heatmaps,
    )

    try:
        model = load_model(args.model, args.backend)
    except ValueError as err:  # e.g. ONNX graphs older than the weights beside them
        raise SystemExit(f"predict: {err}") from err
    if args.heatmap and is_onnx(model):
        raise SystemExit(
            "predict: --heatmap needs the PyTorch model (Grad-CAM takes gradients); an ONNX "
            "graph gives probabilities only. Use --backend torch with a model folder."
        )
    paths = collect_images(args.images)
    if not paths:
        raise SystemExit("No images found.")
    if args.output:
        if args.output.is_dir():
            raise SystemExit(f"predict: --output {args.output} is a folder; name a .csv or .jsonl.")
        try:
            predicted, failed, skipped = predict_to_file(
                model,
                paths,
                args.output,
                batch_size=args.batch_size,
                fast=not args.no_fast,
                num_workers=args.num_workers,
            )
        except ValueError as err:  # an output file of another model or other findings
            raise SystemExit(f"predict: {err}") from err
        print(
            f"{predicted} predicted, {failed} unreadable (listed with their error), {skipped} "
            f"already in {args.output}"
        )
        return
    results, failures = predict_files(
        model,
        paths,
        batch_size=args.batch_size,
        fast=not args.no_fast,
        num_workers=args.num_workers or 0,
    )
    if args.heatmap:
        for result in results:
            result.heatmaps = write_heatmaps(
                model, result, Path(args.heatmap), top=args.heatmap_top
            )
    if args.json:
        rows = [
            {
                "path": result.path,
                "probabilities": result.probabilities,
                **({"flagged": result.flagged} if result.flagged is not None else {}),
                **({"heatmaps": result.heatmaps} if result.heatmaps else {}),
            }
            for result in results
        ]
        failed = [{"path": path, "error": error} for path, error in failures]
        print(json.dumps({"predictions": rows, "failures": failed}, indent=2))
    else:
        names = list(results[0].probabilities) if results else []
        width = max([len(name) for name in names] + [8])
        for result in results:
            print(f"\n{result.path}")
            ranked = sorted(result.probabilities.items(), key=lambda item: -item[1])
            for name, value in ranked:
                mark = "  flagged" if (result.flagged or {}).get(name) else ""
                print(f"  {name:<{width}}  {value:.3f}{mark}")
            for path in result.heatmaps:
                print(f"  heatmap: {path}")
        if any(result.flagged is not None for result in results):
            print("\nflagged: at or above the operating point stored with the model.")
        if args.heatmap:
            print("\nHeatmaps: Grad-CAM on the output tokens of the last transformer block.")
    if failures:
        print(f"\n{len(failures)} image(s) could not be read:", file=sys.stderr)
        for path, error in failures:
            print(f"  {path}: {error}", file=sys.stderr)
        raise SystemExit(1 if not results else 2)


def add_predict_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="probabilities per finding for X-ray files (PNG, JPEG, DICOM, folders)"
    )
    parser.add_argument(
        "--model", required=True, help="classifier folder, Hub id or exported ONNX folder"
    )
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="auto: ONNX Runtime for a folder with an onnx/ export and no PyTorch weights",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON: path and finding -> probability per image"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="write a CSV (or .jsonl) batch by batch instead of printing; a rerun skips the "
        "images it already holds",
    )
    parser.add_argument(
        "--heatmap",
        default=None,
        metavar="OUT_DIR",
        help="write Grad-CAM overlays for the top findings (PyTorch backend only)",
    )
    parser.add_argument("--heatmap_top", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument(
        "--num_workers",
        type=int,
        default=None,
        help="processes decoding images while the model runs (default with --output: CPUs, at "
        "most 4; else 0)",
    )
    parser.add_argument(
        "--no_fast", action="store_true", help="run in fp32 instead of the bf16 fast path"
    )
    parser.set_defaults(func=predict)


def export(args: argparse.Namespace) -> None:
    """An ONNX graph of a classifier (fp32, or int8), checked against PyTorch before writing."""
    from .export import dataset_pixels, export_onnx
    from .predict import load_classifier

    try:
        model = load_classifier(args.model)
        calibration, source = None, "synthetic chest pictures"
        if args.calibration:
            calibration = dataset_pixels(
                args.calibration,
                args.data_dir,
                model.config,
                args.calibration_samples,
                _parse_options(args.option),
            )
            source = f"{args.calibration} images"
        elif args.int8 == "static":
            raise ValueError(
                "--int8 static calibrates on X-rays: name them with --calibration DATASET "
                "--data_dir DIR."
            )
        path = export_onnx(
            args.model,
            args.output_dir,
            int8=args.int8,
            calibration=calibration,
            image_source=source,
            tolerance=args.tolerance,
            progress=print,
        )
    except (ValueError, FileNotFoundError, TypeError) as err:
        raise SystemExit(f"export: {err}") from err
    print(f"wrote {path} (and config, image processor, card in {args.output_dir})")


def add_export_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="ONNX graph of a classifier (fp32 or int8), checked against PyTorch before writing",
    )
    parser.add_argument("model", help="classifier folder or Hub id")
    parser.add_argument("output_dir", type=Path, help="folder: onnx/, config, processor, card")
    parser.add_argument("--int8", choices=["dynamic", "static"], default=None)
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="DATASET",
        help="a load_cxr_dataset source (nih14, csv, imagefolder, ...): static int8 fits its "
        "activation ranges on these images; every graph is checked on a held-out part",
    )
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--calibration_samples", type=int, default=256)
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="refuse beyond this: max |probability difference| for int8 (default 0.05), max "
        "|logit difference| per unit of the largest logit for fp32 (default 1e-4)",
    )
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a dataset option"
    )
    parser.set_defaults(func=export)


def reconstruct(args: argparse.Namespace) -> None:
    """The MAE's reconstructions of images as one figure."""
    from .predict import collect_images, reconstruct_figure

    figure = reconstruct_figure(args.model, collect_images(args.images), args.mask_ratio, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out)
    print(f"wrote {args.out} ({figure.width}x{figure.height})")


def add_reconstruct_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "reconstruct", help="MAE reconstructions: original | masked | reconstruction | pasted"
    )
    parser.add_argument("--model", required=True, help="pre-trained MAE folder or Hub id")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--mask-ratio", "--mask_ratio", dest="mask_ratio", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=Path("reconstruction.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=reconstruct)


def convert(args: argparse.Namespace) -> None:
    """An official / timm checkpoint -> a native folder (model, image processor, card)."""
    from .convert import convert_checkpoint

    try:
        model = convert_checkpoint(
            args.source,
            args.output_dir,
            labels=args.labels,
            num_heads=args.num_heads,
            decoder_num_heads=args.decoder_num_heads,
            problem_type=args.problem_type,
        )
    except (ValueError, KeyError, FileNotFoundError) as err:
        # Bad input, said in words by convert: no traceback. (KeyError's str() adds quotes.)
        raise SystemExit(f"convert: {err.args[0] if isinstance(err, KeyError) else err}") from err
    kind = type(model).__name__.removeprefix("CXR")
    print(f"wrote {kind} ({model.config.model_type}) to {args.output_dir}")


def add_convert_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="the paper's released .pth (or timm safetensors) -> native transformers folder",
    )
    parser.add_argument("source", help=".pth / .pt / .safetensors file")
    parser.add_argument("output_dir", type=Path)
    parser.add_argument(
        "--labels", default=None, help="nih14, chexpert5, chexpert14 or A,B,C (classifiers)"
    )
    parser.add_argument(
        "--num_heads", type=int, default=None, help="encoder heads (default: width / 64)"
    )
    parser.add_argument("--decoder_num_heads", type=int, default=16)
    parser.add_argument(
        "--problem_type",
        default="multi_label_classification",
        choices=["multi_label_classification", "single_label_classification"],
    )
    parser.set_defaults(func=convert)


def push(args: argparse.Namespace) -> None:
    """Upload a model folder to the Hub (with retries); exit code 1 when it could not. A folder
    that does not exist or holds no model files is refused at once, before any network call."""
    from .hub_push import check_push_folder, push_folder

    try:
        check_push_folder(args.folder)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"push: {err}") from err
    url = push_folder(
        args.folder,
        args.repo_id,
        private=args.private or None,
        token=args.token,
        retries=args.retries,
    )
    if url is None:
        raise SystemExit(1)
    print(url)


def add_push_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "push", help="upload a model folder to the Hub (config, weights, processor, card, metrics)"
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("repo_id")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None, help="default: the logged-in token")
    parser.add_argument("--retries", type=int, default=4)
    parser.set_defaults(func=push)


def demo(args: argparse.Namespace) -> None:
    """The research demo in the browser."""
    from .demo_app import launch

    launch(args.model, args.mae, args.host, args.port, backend=args.backend)


def add_demo_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the research demo in the browser (Gradio)")
    parser.add_argument("--model", required=True, help="classifier folder or Hub id")
    parser.add_argument(
        "--mae", default=None, help="pre-trained MAE folder or Hub id, for reconstructions"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="as predict's; an ONNX model shows no heatmap (Grad-CAM needs PyTorch)",
    )
    parser.set_defaults(func=demo)


def evaluate(args: argparse.Namespace) -> None:
    """The evaluation report of a classifier, as the evaluation recipe makes it."""
    from .training import DataArguments, EvaluateArguments, ModelArguments, parse_recipe_args
    from .training.evaluation import run_evaluate

    arguments = (ModelArguments, DataArguments, EvaluateArguments)
    run_evaluate(*parse_recipe_args(arguments, args.recipe_flags))


def add_evaluate_command(subparsers: Subparsers) -> None:
    # The recipe's own parser (HfArgumentParser) reads every flag, --help included: argparse
    # passes them on untouched in ``recipe_flags`` (see ``main``).
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluation report of a classifier (same flags as recipes/evaluate_model.py)",
        add_help=False,
    )
    parser.set_defaults(func=evaluate, recipe_flags=[])


def compare(args: argparse.Namespace) -> None:
    """Paired comparison of two classifiers: AUROC differences, DeLong p-values, a figure."""
    from .compare import run_compare

    options = {k: getattr(args, k) for k in DATASET_OPTIONS if getattr(args, k) is not None}
    models = [m for m in (args.model_a, args.model_b) if m is not None]
    predictions = [p for p in (args.predictions_a, args.predictions_b) if p is not None]
    try:
        result = run_compare(
            args.output_dir,
            models=models,
            predictions=predictions,
            labels_file=args.labels,
            dataset=args.dataset,
            data_dir=args.data_dir,
            split=args.split,
            options=options,
            max_eval_samples=args.max_eval_samples,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            n_resamples=args.bootstrap_resamples,
            seed=args.seed,
        )
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise SystemExit(f"compare: {err}") from err
    mean = result["mean"]
    if mean["difference"] is not None:
        lo, hi = mean["ci95"] or (float("nan"), float("nan"))
        print(
            f"mean AUROC A {mean['auroc_a']:.4f}  B {mean['auroc_b']:.4f}  difference "
            f"{mean['difference']:+.4f} [{lo:+.4f}, {hi:+.4f}] (paired bootstrap)"
        )
    print(f"wrote compare.json, compare.md, compare.png to {args.output_dir}")


# load_cxr_dataset options the compare command takes, as evaluate does (str unless typed here).
DATASET_OPTIONS: dict[str, dict[str, object]] = {
    "image_dir": {}, "uncertainty": {}, "findings": {}, "csv_file": {}, "image_column": {},
    "label_column": {}, "label_delimiter": {}, "labeler": {}, "check_images": {}, "on_bad": {},
    "protocol": {}, "split_files": {},
    "frontal_only": {"type": lambda v: {"true": True, "false": False}[v.lower()]},
    "validation_size": {"type": lambda v: int(v) if v.isdigit() else float(v)},
    "views": {"nargs": "+"}, "label_columns": {"nargs": "+"}, "class_names": {"nargs": "+"},
    "metadata_columns": {"nargs": "+"},
}  # fmt: skip


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
        "--dataset", default=None, help="nih14, chexpert, mimic_cxr, covidx, csv, imagefolder"
    )
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--split", default="test")
    for name, spec in DATASET_OPTIONS.items():
        parser.add_argument(f"--{name}", default=None, **spec, help="a load_cxr_dataset option")
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=0, help="image-reading processes")
    parser.add_argument("--bootstrap_resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    parser.set_defaults(func=compare)


COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    add_cache_command,
    add_predict_command,
    add_reconstruct_command,
    add_convert_command,
    add_push_command,
    add_demo_command,
    add_evaluate_command,
    add_export_command,
    add_compare_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The console script's parser, with every command in ``COMMANDS`` registered."""
    parser = argparse.ArgumentParser(
        prog="hf-cxr-mae", description="Chest X-ray MAE models: data cache, reports, serving, Hub."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if "recipe_flags" in vars(args):  # a command that hands its flags to a recipe parser
        args.recipe_flags = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.func(args)


if __name__ == "__main__":
    main()
