"""The one dataset spec (``SourceArguments``): every loader option is a field, the recipes and
the commands that read a dataset take the same flags, and a choice is checked wherever the
value comes from (a flag, a config file, the constructor)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from hf_cxr_mae.cli import build_parser
from hf_cxr_mae.data.loading import SOURCES, loader_options
from hf_cxr_mae.data.source_arguments import LOCATION, RENAMED, SourceArguments
from hf_cxr_mae.training.arguments import DataArguments, FinetuneArguments, ModelArguments

COMMANDS = (
    ["cache", "nih14", "--data_dir", "d"],
    ["export", "m", "out", "--calibration", "nih14", "--data_dir", "d"],
    ["compare", "a", "b", "--dataset", "nih14", "--data_dir", "d", "--output_dir", "o"],
)


def test_every_loader_option_is_a_field():
    """A new loader option cannot be forgotten: the fields are the union of the loaders'."""
    options = {RENAMED.get(f.name, f.name) for f in fields(SourceArguments)} - set(LOCATION)
    assert options == set().union(*(loader_options(name) for name in SOURCES))


@pytest.mark.parametrize("argv", COMMANDS)
def test_commands_take_the_recipes_option_flags(argv):
    """Options only ``--option KEY=VALUE`` reached before, typed as the recipes type them."""
    args = build_parser().parse_args(
        [*argv, "--split_seed", "3", "--frontal_only", "false", "--views", "PA", "AP"]
    )
    assert (args.split_seed, args.frontal_only, args.views) == (3, False, ["PA", "AP"])


def test_the_old_option_flag_names_the_new_one(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*COMMANDS[0], "--option", "seed=3"])
    assert "--option was removed: pass each dataset option as a flag, --split_seed 3" in (
        capsys.readouterr().err
    )


def test_options_reach_the_loader_under_its_own_names():
    spec = SourceArguments(dataset=["csv"], data_dir=["/d"], split_seed=1, csv_label_names=["A"])
    assert spec.options("csv") == {"seed": 1, "label_names": ["A"]}
    with pytest.raises(ValueError, match="--patient_column is an option of --dataset csv"):
        SourceArguments(dataset=["nih14"], data_dir=["/d"], patient_column="pid")


@pytest.mark.parametrize(
    "dataclass, values",
    [
        (DataArguments, {"findings": "some"}),
        (DataArguments, {"randaug_interpolation": "nearest"}),
        (ModelArguments, {"architecture": "resnet"}),
        (FinetuneArguments, {"operating_point": "best", "output_dir": "o"}),
    ],
)
def test_a_bad_choice_from_a_config_file_is_refused(dataclass, values):
    """Config values skip argparse's choices: the dataclass checks its Literal fields itself."""
    (name,) = [k for k in values if k != "output_dir"]
    with pytest.raises(ValueError, match=f"--{name} must be one of"):
        dataclass(**values)


def test_the_source_names_of_help_texts_are_the_loaders():
    """Help texts list ``SOURCE_NAMES`` without importing the loaders; a new loader must be named."""
    from hf_cxr_mae.data.loading import SOURCES
    from hf_cxr_mae.data.source_arguments import SOURCE_NAMES

    assert sorted(SOURCE_NAMES) == sorted(SOURCES)


def test_a_config_string_where_a_list_is_expected_is_a_one_item_list(tmp_path):
    """``views: PA`` or ``dataset: nih14`` in a YAML config is one value, not the letters of a
    string (which kept no row, ``P`` and ``A`` being no view, and said nothing about views)."""
    from hf_cxr_mae.training.argument_parser import parse_recipe_args
    from hf_cxr_mae.training.arguments import DataArguments

    config = tmp_path / "c.yaml"
    config.write_text(
        f"dataset: nih14\ndata_dir: {tmp_path}\nimage_dir: images\nviews: PA\n"
    )
    (data,) = parse_recipe_args((DataArguments,), [str(config)])
    assert (data.dataset, data.data_dir, data.views) == (["nih14"], [str(tmp_path)], ["PA"])
    assert data.options("nih14")["views"] == ["PA"]
