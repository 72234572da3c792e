"""The ``hf-cxr-mae`` console script."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .configuration import CXRMAEConfig, preset_names


def quickstart(output_dir: Path, preset: str, steps: int, images: Path | None) -> None:
    """Pre-train a small MAE for a few steps, turn it into a classifier, reload both natively."""
    from transformers import AutoModel, pipeline

    from .data.images import read_xray
    from .modeling import CXRMAEForPreTraining, CXRViTForImageClassification
    from .processing import build_image_processor

    config = CXRMAEConfig.from_preset(preset)
    size = config.image_size
    processor = build_image_processor(config)
    if images is not None:
        files = sorted(
            p for p in images.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"}
        )[:16]
        if not files:
            raise SystemExit(f"No PNG or JPEG images found under {images}.")
        batch = processor([read_xray(f) for f in files], return_tensors="pt")["pixel_values"]
        print(f"Using {len(files)} images from {images}.")
    else:
        print("DEMO DATA: no --images given, using smooth random images (not X-rays).")
        noise = torch.nn.functional.interpolate(
            torch.randn(16, 1, 8, 8), size=(size, size), mode="bicubic"
        )
        batch = noise.expand(-1, 3, -1, -1).contiguous()
    model = CXRMAEForPreTraining(config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 1 or step % 10 == 0 or step == steps:
            print(f"step {step:3d}  masked-patch MSE {loss.item():.4f}")
    print(f"{steps} steps in {time.perf_counter() - start:.1f}s")
    mae_dir, clf_dir = output_dir / "mae", output_dir / "classifier"
    model.save_pretrained(mae_dir)
    processor.save_pretrained(mae_dir)
    from transformers.utils import logging

    logging.set_verbosity_error()  # AutoModel lists the decoder keys it (rightly) leaves out
    encoder = AutoModel.from_pretrained(mae_dir)
    print(f"saved {mae_dir}: AutoModel loads it as {type(encoder).__name__}")
    labels = ["Atelectasis", "Cardiomegaly", "Effusion"]
    classifier = CXRViTForImageClassification.from_checkpoint(model, id2label=labels)
    classifier.save_pretrained(clf_dir)
    build_image_processor(classifier.config).save_pretrained(clf_dir)
    classify = pipeline("image-classification", model=str(clf_dir), top_k=len(labels))
    from PIL import Image

    example = Image.fromarray((batch[0, 0].clamp(-2, 2) * 60 + 128).byte().numpy())
    print(f"saved {clf_dir}: pipeline scores (untrained head) {classify(example)}")


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

    data = load_cxr_dataset(args.dataset, args.data_dir, **_parse_options(args.option))
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


def predict(args: argparse.Namespace) -> None:
    """Probabilities per finding for images (PNG, JPEG, DICOM, folders), optional heatmaps."""
    import json

    from .predict import collect_images, load_classifier, predict_files, write_heatmaps

    model = load_classifier(args.model)
    paths = collect_images(args.images)
    if not paths:
        raise SystemExit("No images found.")
    results, failures = predict_files(
        model, paths, batch_size=args.batch_size, fast=not args.no_fast
    )
    if args.heatmap:
        for result in results:
            result.heatmaps = write_heatmaps(
                model, result, Path(args.heatmap), top=args.heatmap_top
            )
    if args.json:
        rows = [
            {
                "path": r.path,
                "probabilities": r.probabilities,
                **({"heatmaps": r.heatmaps} if r.heatmaps else {}),
            }
            for r in results
        ]
        print(
            json.dumps(
                {"predictions": rows, "failures": [{"path": p, "error": e} for p, e in failures]},
                indent=2,
            )
        )
    else:
        names = list(results[0].probabilities) if results else []
        width = max([len(n) for n in names] + [8])
        for result in results:
            print(f"\n{result.path}")
            for name, value in sorted(result.probabilities.items(), key=lambda kv: -kv[1]):
                print(f"  {name:<{width}}  {value:.3f}")
            for path in result.heatmaps:
                print(f"  heatmap: {path}")
        if args.heatmap:
            print("\nHeatmaps: Grad-CAM on the output tokens of the last transformer block.")
    if failures:
        print(f"\n{len(failures)} image(s) could not be read:", file=sys.stderr)
        for path, error in failures:
            print(f"  {path}: {error}", file=sys.stderr)
        raise SystemExit(1 if not results else 2)


def reconstruct(args: argparse.Namespace) -> None:
    """The MAE's reconstructions of images as one figure."""
    from .predict import collect_images, reconstruct_figure

    figure = reconstruct_figure(args.model, collect_images(args.images), args.mask_ratio, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out)
    print(f"wrote {args.out} ({figure.width}x{figure.height})")


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
    print(
        f"wrote {type(model).__name__.removeprefix('CXR')} ({model.config.model_type}) to {args.output_dir}"
    )


def push(args: argparse.Namespace) -> None:
    """Upload a model folder to the Hub (with retries); exit code 1 when it could not. A folder
    that does not exist or holds no model files is refused at once, before any network call."""
    from .hub import check_push_folder, push_folder

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hf-cxr-mae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    qs = sub.add_parser(
        "quickstart", help="a one-minute tour: tiny MAE -> classifier -> native reload"
    )
    qs.add_argument("--output_dir", type=Path, default=Path("out/quickstart"))
    qs.add_argument("--preset", default="vit-test-patch8-dec32d1b", choices=preset_names())
    qs.add_argument("--steps", type=int, default=30)
    qs.add_argument(
        "--images", type=Path, default=None, help="folder of PNG/JPEG X-rays (optional)"
    )
    ca = sub.add_parser("cache", help="decode a dataset once into the compact pixel cache")
    ca.add_argument("dataset", help="nih14, chexpert, mimic_cxr, covidx, csv or imagefolder")
    ca.add_argument("--data_dir", required=True, type=Path)
    ca.add_argument(
        "--recipe",
        choices=["finetune", "linprobe", "pretrain"],
        default="finetune",
        help="size each split as this recipe's defaults need it, so the recipe reuses the cache",
    )
    ca.add_argument("--image_size", type=int, default=224, help="the model's input size")
    ca.add_argument(
        "--size",
        type=int,
        default=None,
        help="one shortest side for every split (default: from --recipe; warns if it loses detail)",
    )
    ca.add_argument(
        "--cache_dir", type=Path, default=None, help="default: $HF_HOME/hf_cxr_mae/pixel_cache"
    )
    ca.add_argument("--num_proc", type=int, default=None)
    ca.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a load_cxr_dataset option",
    )
    pr = sub.add_parser(
        "predict", help="probabilities per finding for X-ray files (PNG, JPEG, DICOM, folders)"
    )
    pr.add_argument("--model", required=True, help="classifier folder or Hub id")
    pr.add_argument("images", nargs="+", help="image files or folders")
    pr.add_argument(
        "--json", action="store_true", help="print JSON: path and finding -> probability per image"
    )
    pr.add_argument(
        "--heatmap",
        default=None,
        metavar="OUT_DIR",
        help="write Grad-CAM overlays for the top findings",
    )
    pr.add_argument("--heatmap_top", type=int, default=3)
    pr.add_argument("--batch_size", type=int, default=16)
    pr.add_argument(
        "--no_fast", action="store_true", help="run in fp32 instead of the bf16 fast path"
    )
    re_ = sub.add_parser(
        "reconstruct", help="MAE reconstructions: original | masked | reconstruction | pasted"
    )
    re_.add_argument("--model", required=True, help="pre-trained MAE folder or Hub id")
    re_.add_argument("images", nargs="+")
    re_.add_argument("--mask-ratio", "--mask_ratio", dest="mask_ratio", type=float, default=0.9)
    re_.add_argument("--out", type=Path, default=Path("reconstruction.png"))
    re_.add_argument("--seed", type=int, default=0)
    co = sub.add_parser(
        "convert",
        help="the paper's released .pth (or timm safetensors) -> native transformers folder",
    )
    co.add_argument("source", help=".pth / .pt / .safetensors file")
    co.add_argument("output_dir", type=Path)
    co.add_argument(
        "--labels", default=None, help="nih14, chexpert5, chexpert14 or A,B,C (classifiers)"
    )
    co.add_argument(
        "--num_heads", type=int, default=None, help="encoder heads (default: width / 64)"
    )
    co.add_argument("--decoder_num_heads", type=int, default=16)
    co.add_argument(
        "--problem_type",
        default="multi_label_classification",
        choices=["multi_label_classification", "single_label_classification"],
    )
    pu = sub.add_parser(
        "push", help="upload a model folder to the Hub (config, weights, processor, card, metrics)"
    )
    pu.add_argument("folder", type=Path)
    pu.add_argument("repo_id")
    pu.add_argument("--private", action="store_true")
    pu.add_argument("--token", default=None, help="default: the logged-in token")
    pu.add_argument("--retries", type=int, default=4)
    de = sub.add_parser("demo", help="the research demo in the browser (Gradio)")
    de.add_argument("--model", required=True, help="classifier folder or Hub id")
    de.add_argument(
        "--mae", default=None, help="pre-trained MAE folder or Hub id, for reconstructions"
    )
    de.add_argument("--host", default="127.0.0.1")
    de.add_argument("--port", type=int, default=7860)
    sub.add_parser(
        "evaluate",
        help="evaluation report of a classifier (same flags as recipes/evaluate.py)",
        add_help=False,
    )
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "evaluate":
        from .training import DataArguments, EvaluateArguments, ModelArguments, parse_recipe_args
        from .training.runs import run_evaluate

        run_evaluate(
            *parse_recipe_args((ModelArguments, DataArguments, EvaluateArguments), argv[1:])
        )
        return
    args = parser.parse_args(argv)
    if args.command == "quickstart":
        quickstart(args.output_dir, args.preset, args.steps, args.images)
    elif args.command == "cache":
        cache(args)
    elif args.command == "predict":
        predict(args)
    elif args.command == "reconstruct":
        reconstruct(args)
    elif args.command == "convert":
        convert(args)
    elif args.command == "push":
        push(args)
    elif args.command == "demo":
        from .demo_app import launch

        launch(args.model, args.mae, args.host, args.port)


if __name__ == "__main__":
    main(sys.argv[1:])
