"""Model cards from the real run (``hf_cxr_mae.model_card``): sections, the settings that differ from the
dataclass defaults, the layer decay and uncertainty policy the run used (one source of truth
with config.json), and a conversion's card saying its numbers are reported, not measured."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT
from helpers import timm_classifier
from recipe_utils import TINY_TRAIN, argument_classes, config_recipe, recipe
from safetensors.torch import save_file

from hf_cxr_mae.convert import convert_checkpoint

SECTIONS = [
    "## Model description",
    "## How to use",
    "## Evaluation",
    "## Intended use",
    "### Out-of-scope use",
    "## Limitations and bias",
    "## Citation",
]


def split_card(text: str) -> tuple[dict, str]:
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert match, "card must start with YAML metadata"
    return yaml.safe_load(match.group(1)), match.group(2)


def test_card_of_a_training_run(trained):
    meta, body = split_card((trained / "ft" / "README.md").read_text())
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-classification"
    assert set(meta["tags"]) >= {
        "chest-x-ray",
        "medical-imaging",
        "masked-autoencoder",
        "vision-transformer",
    }
    assert meta["license"]
    results = meta["model-index"][0]["results"][0]
    assert results["dataset"]["split"] == "test"
    metrics = json.loads((trained / "ft" / "metrics.json").read_text())
    values = {m["name"]: m["value"] for m in results["metrics"]}
    assert values["mAUC (mean AUROC)"] == pytest.approx(round(metrics["mauc"], 4))
    for name, value in metrics["auroc"].items():
        assert values[f"AUROC {name}"] == pytest.approx(round(value, 4))
    positions = [body.index(s) for s in SECTIONS]
    assert positions == sorted(positions), "sections out of order"
    assert "not a medical device" in body and "| blr | 0.001 |" in body and "DEMO" in body
    # The test numbers come from a model chosen without the test set, and the card says so.
    assert "Model selection (the best\nepoch) used the validation split only" in body
    assert "base_model" not in meta  # a local folder is not a Hub id; no local path leaks
    for path in (trained / "ft").glob("*.json"):
        assert str(trained) not in path.read_text(), path
    assert str(trained) not in (trained / "ft" / "README.md").read_text()
    meta, _ = split_card((trained / "mae" / "README.md").read_text())
    assert meta["pipeline_tag"] == "image-feature-extraction"


def test_card_of_a_conversion_says_reported(tmp_path):
    state = timm_classifier().state_dict()
    save_file(state, tmp_path / "vit.safetensors")
    out = tmp_path / "conv"
    convert_checkpoint(tmp_path / "vit.safetensors", out, labels="nih14")
    meta, body = split_card((out / "README.md").read_text())
    assert "model-index" not in meta  # nothing measured, nothing claimed
    assert "vit.safetensors" in body and "Not measured by us" in body
    assert [s for s in SECTIONS if s not in body] == []


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


CONFIGS = REPO_ROOT / "recipes" / "configs"


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
    from hf_cxr_mae.model_card import non_default_args
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
