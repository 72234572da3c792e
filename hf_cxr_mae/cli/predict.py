"""The ``hf-cxr-mae predict`` command: probabilities per finding for X-ray files, printed or
written to a CSV / JSON lines file, with optional Grad-CAM heatmaps."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..serving import BACKENDS
from ._common import Subparsers


def predict(args: argparse.Namespace) -> None:
    """Probabilities per finding for images (PNG, JPEG, DICOM, folders), optional heatmaps; with
    --output, a CSV / JSON lines file written batch by batch (a rerun skips what it holds)."""
    from ..serving.predict import (
        OutputError,
        check_writable,
        collect_images,
        is_onnx,
        load_model,
        predict_files,
        predict_to_file,
    )

    # Where the results go, checked before the model is loaded and any image predicted.
    try:
        if args.output and args.output.is_dir():
            raise OutputError(f"--output {args.output} is a folder; name a .csv or .jsonl.")
        if args.output:
            check_writable(args.output, "--output")
        if args.heatmap:
            check_writable(Path(args.heatmap), "--heatmap", is_folder=True)
    except OutputError as err:
        raise SystemExit(f"predict: {err}") from err
    try:
        model = load_model(args.model, args.backend)
    # e.g. ONNX graphs older than the weights beside them; --backend onnx on a folder without
    # an export (FileNotFoundError, whose message names the folder and the export command)
    except (ValueError, FileNotFoundError) as err:
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
        try:
            predicted, failed, skipped = predict_to_file(
                model,
                paths,
                args.output,
                batch_size=args.batch_size,
                fast=not args.no_fast,
                num_workers=args.num_workers,
            )
        except (ValueError, OSError) as err:  # a file predict did not write, a full disk, ...
            raise SystemExit(f"predict: {err}") from err
        print(
            f"{predicted} predicted, {failed} unreadable (listed with their error), {skipped} "
            f"already in {args.output}"
        )
        return
    try:
        results, failures = predict_files(
            model,
            paths,
            batch_size=args.batch_size,
            fast=not args.no_fast,
            num_workers=args.num_workers or 0,
        )
    except ValueError as err:  # e.g. NaN outputs of damaged weights
        raise SystemExit(f"predict: {err}") from err
    if args.heatmap:
        from ..serving.gradcam import write_heatmaps

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
        # allow_nan=False: a bare NaN is not JSON (non-finite outputs are refused above).
        print(json.dumps({"predictions": rows, "failures": failed}, indent=2, allow_nan=False))
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
        choices=BACKENDS,
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
