"""The recipes' parser: a YAML or JSON config file first, flags override it; unknown keys and
flags are refused with the close matches."""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

logger = logging.getLogger(__name__)


def _load_config_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} must hold a mapping of argument names to values, got {type(data).__name__}."
        )
    return data


def _given(name: str, argv: list[str], config: dict[str, Any]) -> str | None:
    """Where ``name`` was set: ``"flag"``, ``"config"`` or None (its default)."""
    flags = (f"--{name}", f"--{name.replace('_', '-')}")
    if any(a.split("=")[0] in flags for a in argv):
        return "flag"
    return "config" if name in config else None


def _explicit_learning_rate(argv: list[str], config: dict[str, Any], source: str | None) -> bool:
    """Whether a ``learning_rate`` given by the user must win over the recipe's default ``blr``
    (which would otherwise replace it silently). A ``blr`` given at the same level or above
    (a flag over the config file) still wins, as its help says, with a warning."""
    lr, blr = _given("learning_rate", argv, config), _given("blr", argv, config)
    if lr is None:
        return False
    if blr == "flag" or blr == lr:
        logger.warning(
            "Both learning_rate and blr are given: blr wins (absolute LR = blr x effective batch "
            "/ 256) and learning_rate is ignored. Give one of them."
        )
        return False
    logger.info(
        "learning_rate given (%s): used as the absolute LR, not derived from blr.",
        "--learning_rate" if lr == "flag" else source,
    )
    return True


def parse_recipe_args(
    dataclass_types: tuple[type, ...], argv: list[str] | None, default_config: Path | None = None
) -> tuple:
    """Parse ``[config.yaml|json] [--flag value ...]`` into the dataclasses.

    Unknown keys and flags are refused with the valid names (close matches first). With no config
    file and no ``--dataset``, ``default_config`` (the DEMO recipe) is used.
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types)
    valid = sorted({a.dest for a in parser._actions if a.dest != "help"})
    config: dict[str, Any] = {}
    source = None
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        source, argv = argv[0], argv[1:]
    elif default_config is not None and not any(a.split("=")[0] == "--dataset" for a in argv):
        source = str(default_config)
    if source is not None:
        config = _load_config_file(source)
        if unknown := sorted(set(config) - set(valid)):
            hints = {k: difflib.get_close_matches(k, valid, n=3) for k in unknown}
            raise ValueError(
                f"Unknown key(s) in {source}: {unknown}. Close matches: {hints}. Valid keys: {valid}"
            )
        parser.set_defaults(**config)
    if "blr" in valid and _explicit_learning_rate(argv, config, source):
        parser.set_defaults(blr=None)  # the absolute LR asked for, not one derived from blr
    *outputs, remaining = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    if "--option" in remaining:  # before every loader option had a flag of its own
        from ..data.source_arguments import removed_option_message

        pair = remaining[remaining.index("--option") + 1 :][:1] or ["KEY=VALUE"]
        raise ValueError(removed_option_message(pair[0]))
    if remaining:
        flags = [r for r in remaining if r.startswith("-")] or remaining
        hints = {
            f: [
                "--" + m for m in difflib.get_close_matches(f.lstrip("-").split("=")[0], valid, n=3)
            ]
            for f in flags
        }
        raise ValueError(
            f"Unknown argument(s) {remaining}. Close matches: {hints}. Run with --help for all flags."
        )
    return tuple(outputs)
