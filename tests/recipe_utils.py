"""Load the recipe scripts as modules (they live outside the package)."""

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
