"""Load the recipe scripts as modules (they live outside the package), and the argument classes
each recipe parses its config into."""

import importlib.util
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY_TRAIN = [
    "--preset", "vit-test-patch8-dec32d1b",
    "--per_device_train_batch_size", "8",
    "--per_device_eval_batch_size", "16",
    "--logging_steps", "1",
    "--dataloader_num_workers", "0",
    "--report_to", "none",
]  # fmt: skip


def config_recipe(config_name: str) -> str:
    """The recipe a config file is for, from its name: ``demo_pretrain.yaml`` -> ``pretrain``."""
    return config_name.removeprefix("demo_").split("_")[0].removesuffix(".yaml")


def argument_classes(recipe_name: str) -> tuple:
    """The dataclasses ``recipe_name``'s script parses (model, data, training), in its order."""
    from hf_cxr_mae.training import (
        DataArguments,
        EvaluateArguments,
        FinetuneArguments,
        LinprobeArguments,
        ModelArguments,
        PretrainArguments,
    )

    training = {
        "pretrain": PretrainArguments,
        "finetune": FinetuneArguments,
        "linprobe": LinprobeArguments,
        "evaluate": EvaluateArguments,
    }[recipe_name]
    return ModelArguments, DataArguments, training
