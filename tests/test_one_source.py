"""One source of truth per fact (issue 12): what config.json says a model was trained with."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import yaml
from recipe_utils import TINY_TRAIN, argument_classes, config_recipe, recipe

QUICK = [
    "--demo_size", "16", "--max_eval_samples", "8", "--pixel_cache", "false", "--max_steps", "1",
    "--eval_strategy", "no", "--load_best_model_at_end", "false", "--save_strategy", "no",
]  # fmt: skip


def test_config_and_card_record_the_layer_decay_the_run_used(tmp_path: Path) -> None:
    """config.json once said 0.55 (the class default) after a run at another layer decay."""
    flags_only = tmp_path / "flags-only.json"  # not the DEMO config (it starts from a demo MAE)
    flags_only.write_text(json.dumps({"auto_augment": ""}))
    out = tmp_path / "ft"
    used = 0.7
    recipe("finetune").main(
        [str(flags_only), *TINY_TRAIN, *QUICK, "--layer_decay", str(used), "--output_dir", str(out)]
    )
    assert json.loads((out / "config.json").read_text())["layer_decay"] == used
    saved_args = json.loads((out / "training_args.json").read_text())
    assert saved_args["layer_decay"] == used
    assert f"| layer_decay | {used} |" in (out / "README.md").read_text()


# --- the paper's hyperparameters live in the argument dataclasses, not in the configs -----------

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
# Keys that name the run itself: kept even where they equal a default, so a file reads alone.
RUN_IDENTITY = {"preset", "model_name_or_path", "architecture", "dataset", "data_dir", "output_dir"}
# crop_min_scale=None means the recipe's own scale (the paper's): 0.5 pre-training, else timm's.
RECIPE_CROP = {"pretrain": 0.5, "finetune": 0.08, "linprobe": 0.08}


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
    from hf_cxr_mae.training.arguments import SOURCE_OPTIONS

    defaults = _defaults(argument_classes(recipe_name))
    loaders = [inspect.signature(SOURCES[d]).parameters for d in config.get("dataset") or []]
    found = {}
    for key, value in config.items():
        if key in RUN_IDENTITY:
            continue
        if key in defaults and defaults[key] == value:
            found[key] = "the argument dataclass"
        elif (
            key in SOURCE_OPTIONS
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


@pytest.mark.parametrize(
    "name",
    ["pretrain_vit_small.yaml", "finetune_nih14_vit_small.yaml", "finetune_nih14_densenet121.yaml"],
)
def test_the_card_lists_what_the_run_changed_against_the_dataclass_defaults(
    name: str, tmp_path: Path
) -> None:
    """The card's "settings that differ from the defaults" are the config's own keys (plus what
    the run derives: the absolute LR, the effective batch, bf16 on this machine), never a paper
    value the defaults already hold."""
    from hf_cxr_mae.hub import non_default_args
    from hf_cxr_mae.training import parse_recipe_args

    recipe_name = config_recipe(name)
    arg_objects = parse_recipe_args(
        argument_classes(recipe_name), [str(CONFIGS / name), "--output_dir", str(tmp_path)]
    )
    shown = set(non_default_args(*arg_objects)) - {"learning_rate", "bf16", "effective batch size"}
    config = yaml.safe_load((CONFIGS / name).read_text())
    assert shown <= set(config), shown - set(config)
    assert {"dataset", "seed"} <= shown
    assert not {"blr", "num_train_epochs", "warmup_epochs", "weight_decay", "mask_ratio"} & shown


def test_a_classifier_card_names_the_uncertainty_policy_its_loader_used() -> None:
    """The CheXpert config no longer writes ``uncertainty: paper`` (the loader's default): the
    card must still say which policy the labels got."""
    from types import SimpleNamespace

    from hf_cxr_mae.training import DataArguments
    from hf_cxr_mae.training.outputs import run_card

    args = SimpleNamespace(hub_model_id=None, output_dir="/x/run")

    def policy(**data: object) -> object:
        return run_card("classifier", None, DataArguments(**data), args, None).uncertainty

    assert policy(dataset=["chexpert"], data_dir=["/x"]) == "paper"
    assert policy(dataset=["chexpert"], data_dir=["/x"], uncertainty="ones") == "ones"
    assert policy(dataset=["nih14"], data_dir=["/x"]) is None  # NIH has no uncertain labels
    assert policy() is None  # the DEMO data
    pretrain = run_card(
        "pretrain", None, DataArguments(dataset=["chexpert"], data_dir=["/x"]), args, None
    )
    assert pretrain.uncertainty is None
