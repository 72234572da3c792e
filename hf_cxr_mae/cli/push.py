"""The ``hf-cxr-mae push`` command: upload a model folder to the Hub, with retries."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import Subparsers


def push(args: argparse.Namespace) -> None:
    """Upload a model folder to the Hub (with retries); exit code 1 when it could not. A folder
    that does not exist or holds no model files is refused at once, before any network call."""
    from ..hub import check_push_folder, push_folder

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
