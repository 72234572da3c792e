"""One source of truth per fact (issue 12): what config.json says a model was trained with."""

from __future__ import annotations

import json
from pathlib import Path

from recipe_utils import TINY_TRAIN, recipe

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
