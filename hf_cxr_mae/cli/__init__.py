"""The ``hf-cxr-mae`` console script.

Each subcommand lives in a module of its own (``cli/<command>.py``): a function that takes the
parsed arguments, and an ``add_*`` function that registers its parser and binds that function
(``set_defaults(func=...)``); ``COMMANDS`` lists them. Heavy imports happen inside the
commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ._common import CommandParser, Subparsers
from .cache import add_cache_command
from .compare import add_compare_command
from .convert import add_convert_command
from .demo import add_demo_command
from .evaluate import add_evaluate_command
from .export import add_export_command
from .predict import add_predict_command
from .push import add_push_command
from .reconstruct import add_reconstruct_command

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
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
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
    from ..extras import MissingExtra

    try:
        args.func(args)
    except MissingExtra as err:  # an optional dependency: one line naming the extra
        raise SystemExit(f"{args.command}: {err}") from err
    except KeyboardInterrupt:  # Ctrl-C: one line, not the traceback of every worker
        output = getattr(args, "output", None)
        kept = (
            f"; what was written to {output} is kept, the same command resumes"
            if output and args.command == "predict"
            else ""
        )
        print(f"{args.command}: interrupted{kept}", file=sys.stderr)
        raise SystemExit(130) from None
