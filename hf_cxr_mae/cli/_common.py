"""What the commands of ``hf-cxr-mae`` share: the subparsers type, ``--option key=value``
parsing and the ``--label_separator`` help."""

from __future__ import annotations

import argparse

Subparsers = argparse._SubParsersAction


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


def _dataset_options(args: argparse.Namespace) -> dict[str, object]:
    """``--option`` pairs plus ``--label_separator``, a flag of its own: YAML would read ``,``
    and ``|`` as syntax, not as the text to split on."""
    options = _parse_options(args.option)
    if args.label_separator is not None:
        options["label_separator"] = args.label_separator
    return options


SEPARATOR_HELP = "nih14/csv: the separator between the findings of one label cell (default '|')"
