"""The ``hf-cxr-mae demo`` command: the research demo in the browser (Gradio)."""

from __future__ import annotations

import argparse

from ..serving import BACKENDS
from ._common import Subparsers


def demo(args: argparse.Namespace) -> None:
    """The research demo in the browser."""
    from ..serving.demo import launch

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
        choices=BACKENDS,
        default="auto",
        help="as predict's; an ONNX model shows no heatmap (Grad-CAM needs PyTorch)",
    )
    parser.set_defaults(func=demo)
