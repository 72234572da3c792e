"""What the commands of ``hf-cxr-mae`` share: the subparsers type, and the dataset options
(``SourceArguments``) of the commands that read a dataset, as the recipes take them."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from ..data.source_arguments import LOCATION, SourceArguments, removed_option_message

Subparsers = argparse._SubParsersAction
OPTIONS = [f.name for f in fields(SourceArguments) if f.name not in LOCATION]


class _RemovedOption(argparse.Action):
    """``--option KEY=VALUE`` (before every loader option had a flag): an error naming the flag."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(removed_option_message(str(values)))


class CommandParser(argparse.ArgumentParser):
    """A command's parser. The dataset flags (``add_source_flags``) are added when the command
    is parsed, not when the CLI starts: building them imports transformers (HfArgumentParser),
    which ``--help``, ``predict --backend onnx`` and the other commands do not need."""

    wants_source_flags = False

    def parse_known_args(self, args=None, namespace=None):
        if self.wants_source_flags:
            self.wants_source_flags = False
            _add_source_flags_now(self)
        return super().parse_known_args(args, namespace)


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """Every loader option of ``SourceArguments`` as a flag, with the types, choices and help
    HfArgumentParser gives the recipes; ``--dataset`` / ``--data_dir`` are each command's own.
    On a ``CommandParser`` they are added when the command is parsed."""
    if isinstance(parser, CommandParser):
        parser.wants_source_flags = True
    else:
        _add_source_flags_now(parser)


def _add_source_flags_now(parser: argparse.ArgumentParser) -> None:
    from transformers import HfArgumentParser

    for action in HfArgumentParser(SourceArguments, add_help=False)._actions:
        if action.dest in OPTIONS:
            parser._add_action(action)
    parser.add_argument("--option", action=_RemovedOption, help=argparse.SUPPRESS)


def source_spec(
    args: argparse.Namespace, dataset: list[str] | None, data_dir: list[Any] | None
) -> SourceArguments:
    """The ``SourceArguments`` of the flags parsed by ``add_source_flags``, checked (an option
    no given dataset takes is refused) as the recipes check theirs."""
    given = {name: getattr(args, name) for name in OPTIONS}
    folders = None if data_dir is None else [d if d is None else str(d) for d in data_dir]
    return SourceArguments(dataset=dataset, data_dir=folders, **given)
