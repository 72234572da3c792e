"""MAE pre-training.

    accelerate launch recipes/pretrain.py [CONFIG.yaml] [--flag value ...]
    python recipes/pretrain.py [CONFIG.yaml] [--flag value ...]

With no config file and no --dataset it runs on the built-in DEMO data (recipes/configs/demo_pretrain.yaml).
"""

from pathlib import Path

from hf_cxr_mae.training import DataArguments, ModelArguments, PretrainArguments, parse_recipe_args
from hf_cxr_mae.training.pretrain import run_pretrain

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo_pretrain.yaml"


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_recipe_args(
        (ModelArguments, DataArguments, PretrainArguments), argv, DEMO_CONFIG
    )
    return run_pretrain(model_args, data_args, training_args)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:  # bad input, said in words: no traceback
        raise SystemExit(f"{Path(__file__).name}: {err}") from err
