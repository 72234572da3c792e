"""The ``hf-cxr-mae evaluate`` command: a classifier's evaluation report, with the flags of
the evaluation recipe (its own parser reads them all)."""

from __future__ import annotations

import argparse

from ._common import Subparsers


def evaluate(args: argparse.Namespace) -> None:
    """The evaluation report of a classifier, as the evaluation recipe makes it."""
    from ..training import DataArguments, EvaluateArguments, ModelArguments, parse_recipe_args
    from ..training.evaluation import run_evaluate

    arguments = (ModelArguments, DataArguments, EvaluateArguments)
    try:
        run_evaluate(*parse_recipe_args(arguments, args.recipe_flags))
    except (ValueError, FileNotFoundError) as err:  # bad input, said in words: no traceback
        raise SystemExit(f"evaluate: {err}") from err


def add_evaluate_command(subparsers: Subparsers) -> None:
    # The recipe's own parser (HfArgumentParser) reads every flag, --help included: argparse
    # passes them on untouched in ``recipe_flags`` (see ``main``).
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluation report of a classifier (same flags as recipes/evaluate_model.py)",
        add_help=False,
    )
    parser.set_defaults(func=evaluate, recipe_flags=[])
