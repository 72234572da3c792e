"""The ``hf-cxr-mae reconstruct`` command: an MAE's reconstructions of images as one figure."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import Subparsers


def reconstruct(args: argparse.Namespace) -> None:
    """The MAE's reconstructions of images as one figure."""
    from ..serving.predict import collect_images, reconstruct_figure

    try:
        images = collect_images(args.images)
        figure = reconstruct_figure(args.model, images, args.mask_ratio, args.seed)
    except (ValueError, FileNotFoundError) as err:  # a missing image, a classifier, a bad ratio
        raise SystemExit(f"reconstruct: {err}") from err
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out)
    print(f"wrote {args.out} ({figure.width}x{figure.height})")


def add_reconstruct_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "reconstruct", help="MAE reconstructions: original | masked | reconstruction | pasted"
    )
    parser.add_argument("--model", required=True, help="pre-trained MAE folder or Hub id")
    parser.add_argument("images", nargs="+")
    parser.add_argument(
        "--mask-ratio",
        "--mask_ratio",
        dest="mask_ratio",
        type=float,
        default=None,
        help="fraction of patches masked (default: the MAE's own config.mask_ratio)",
    )
    parser.add_argument("--out", type=Path, default=Path("reconstruction.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=reconstruct)
