"""The console script is a registry: every command registers its parser and binds its function."""

import argparse
import importlib.util
from pathlib import Path

import pytest

from hf_cxr_mae import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_binds_its_own_function():
    commands = _subparsers(cli.build_parser())
    assert sorted(commands) == sorted(
        [
            *("cache", "predict", "reconstruct", "convert", "push", "demo", "evaluate"),
            *("compare", "export"),
        ]
    )
    for name, parser in commands.items():
        bound = parser.get_default("func")
        assert callable(bound), name
        assert bound.__module__ == "hf_cxr_mae.cli" and bound.__name__ == name


def test_unknown_flag_of_a_command_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["push", "folder", "user/repo", "--bogus_flag", "1"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus_flag 1" in capsys.readouterr().err


def test_evaluate_hands_every_flag_to_the_recipe_parser():
    # argparse alone would say "unrecognized arguments"; the recipe's parser names the close match.
    with pytest.raises(ValueError, match="--model_name_or_path"):
        cli.main(["evaluate", "--model_name_or_pth", "x", "--split", "test"])


def test_quickstart_example_runs_end_to_end(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("quickstart", EXAMPLES / "quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    quickstart.main(["--output_dir", str(tmp_path), "--steps", "3"])
    out = capsys.readouterr().out
    assert "AutoModel loads it as ViTMAEModel" in out and "pipeline scores" in out
    assert (tmp_path / "mae" / "config.json").is_file()
    assert (tmp_path / "classifier" / "preprocessor_config.json").is_file()


@pytest.mark.parametrize("recipe_name", ["pretrain", "finetune", "linprobe", "evaluate_model"])
def test_every_recipe_prints_its_help(recipe_name, capsys):
    """argparse formats help with %: a bare '95%' in a help string crashed `--help`."""
    from recipe_utils import recipe

    with pytest.raises(SystemExit) as exit_info:
        recipe(recipe_name).main(["--help"])
    assert exit_info.value.code == 0
    assert "--output_dir" in capsys.readouterr().out
