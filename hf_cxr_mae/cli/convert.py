"""The ``hf-cxr-mae convert`` command: an official / timm checkpoint -> a native
transformers folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import Subparsers


def convert(args: argparse.Namespace) -> None:
    """An official / timm checkpoint -> a native folder (model, image processor, card)."""
    from ..convert import convert_checkpoint

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
