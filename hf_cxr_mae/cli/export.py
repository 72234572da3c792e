"""The ``hf-cxr-mae export`` command: an ONNX graph of a classifier (fp32 or int8), checked
against PyTorch before writing."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import OPTIONS, Subparsers, add_source_flags, source_spec


def export(args: argparse.Namespace) -> None:
    """An ONNX graph of a classifier (fp32, or int8), checked against PyTorch before writing."""
    from ..serving.export import dataset_pixels, export_onnx
    from ..serving.predict import load_classifier

    given = [f"--{o}" for o in OPTIONS if getattr(args, o, None) is not None]
    if not args.calibration and (given or args.data_dir):
        # Without --calibration they would be dropped without a word.
        flags = " ".join(given + (["--data_dir"] if args.data_dir else []))
        raise SystemExit(
            f"export: {flags} describe the calibration data: name its source with "
            "--calibration DATASET (or leave them out)."
        )
    try:
        model = load_classifier(args.model)
        calibration, source = None, "synthetic chest pictures"
        if args.calibration:
            calibration = dataset_pixels(
                args.calibration,
                args.data_dir,
                model.config,
                args.calibration_samples,
                source_spec(args, [args.calibration], [args.data_dir]).options(args.calibration),
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
    add_source_flags(parser)
    parser.set_defaults(func=export)
