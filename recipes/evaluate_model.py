"""Evaluating a classifier on one split.

    accelerate launch recipes/evaluate_model.py [CONFIG.yaml] [--flag value ...]
    python recipes/evaluate_model.py [CONFIG.yaml] [--flag value ...]

With no config file and no --dataset it runs on the built-in DEMO data (recipes/configs/demo_evaluate.yaml).
"""

from pathlib import Path

from hf_cxr_mae.training import DataArguments, EvaluateArguments, ModelArguments, parse_recipe_args
from hf_cxr_mae.training.evaluation import run_evaluate

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo_evaluate.yaml"


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_recipe_args(
        (ModelArguments, DataArguments, EvaluateArguments), argv, DEMO_CONFIG
    )
    return run_evaluate(model_args, data_args, training_args)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:  # bad input, said in words: no traceback
        raise SystemExit(f"{Path(__file__).name}: {err}") from err
