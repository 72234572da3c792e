"""The recipe configs under recipes/configs: each parses with its recipe, and none restates a
default (configs hold only what differs for their run)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import yaml
from conftest import REPO_ROOT
from recipe_utils import RECIPES, argument_classes, config_recipe

from hf_cxr_mae.data.transforms import CROP_MIN_SCALE


@pytest.mark.parametrize("name", sorted(p.name for p in (RECIPES / "configs").glob("*.yaml")))
def test_every_config_parses_with_its_recipe(name):
    import yaml

    from hf_cxr_mae.training import parse_recipe_args

    model, data, train = parse_recipe_args(
        argument_classes(config_recipe(name)), [str(RECIPES / "configs" / name)]
    )
    # Every key reached its argument with its type (the paper's values are checked in
    # test_fidelity_protocol.py).
    for key, value in yaml.safe_load((RECIPES / "configs" / name).read_text()).items():
        holder = next(a for a in (model, data, train) if hasattr(a, key))
        assert getattr(holder, key) == value, key
        assert type(getattr(holder, key)) is type(value) or isinstance(value, str), key


CONFIGS = REPO_ROOT / "recipes" / "configs"


# Keys that name the run itself: kept even where they equal a default, so a file reads alone.
RUN_IDENTITY = {"preset", "model_name_or_path", "architecture", "dataset", "data_dir", "output_dir"}


# crop_min_scale=None means the recipe's own scale (the paper's): 0.5 pre-training, else timm's.
RECIPE_CROP = CROP_MIN_SCALE  # the one table the recipes and `cache` read


def _defaults(classes: tuple) -> dict:
    out = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = getattr(f.default, "value", f.default)
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
    return out


def restated_defaults(config: dict, recipe_name: str) -> dict[str, str]:
    """The keys of a config whose value is already the default, and where that default lives."""
    from hf_cxr_mae.data.loading import SOURCES
    from hf_cxr_mae.data.source_arguments import SourceArguments

    source_options = {f.name for f in dataclasses.fields(SourceArguments)}

    defaults = _defaults(argument_classes(recipe_name))
    loaders = [inspect.signature(SOURCES[d]).parameters for d in config.get("dataset") or []]
    found = {}
    for key, value in config.items():
        if key in RUN_IDENTITY:
            continue
        if key in defaults and defaults[key] == value:
            found[key] = "the argument dataclass"
        elif (
            key in source_options
            and loaders
            and all(key in p and p[key].default == value for p in loaders)
        ):
            found[key] = "the loader"
        elif key == "crop_min_scale" and value == RECIPE_CROP.get(recipe_name):
            found[key] = "the recipe"
    return found


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_no_config_restates_a_default(name: str) -> None:
    """A value written in a config and in a default can drift apart: configs hold only what
    differs for their run (the paper's values are the dataclass defaults)."""
    config = yaml.safe_load((CONFIGS / name).read_text())
    assert not restated_defaults(config, config_recipe(name)), name


def test_the_restated_default_check_sees_every_kind_of_default() -> None:
    """The check above would pass vacuously if it missed defaults."""
    config = {"layer_decay": 0.55, "uncertainty": "paper", "crop_min_scale": 0.08, "seed": 0}
    found = restated_defaults({**config, "dataset": ["chexpert"]}, "finetune")
    assert found == {
        "layer_decay": "the argument dataclass",
        "uncertainty": "the loader",
        "crop_min_scale": "the recipe",
    }
