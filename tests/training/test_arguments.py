"""Recipe arguments (``hf_cxr_mae.training.arguments``): the paper's defaults without a config, bad
arguments and unknown YAML keys refused before any data is read, and an explicit learning rate
never silently replaced by the base LR."""

import logging

import pytest
from recipe_utils import recipe


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--mask_ratio", "1.5"], r"--mask_ratio must be in \(0, 1\)"),
        (["--learning_rate", "-1", "--blr", "1e-3"], "--learning_rate must be positive"),
        (["--per_device_train_batch_size", "0"], "Batch sizes must be positive"),
        (["--mask_ratoi", "0.5"], r"Unknown argument\(s\).*--mask_ratio"),
        (["--dataset", "nih14"], "one --data_dir per --dataset"),
        (
            ["--dataloader_num_workers", "2", "--dataloader_persistent_workers", "true"],
            "persistent_workers is not supported",
        ),
    ],
)
def test_bad_arguments_fail_before_any_data(argv, words, tmp_path):
    with pytest.raises(ValueError, match=words):
        recipe("pretrain").main([*argv, "--output_dir", str(tmp_path)])


def test_unknown_yaml_key_lists_valid_keys(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("preset: vit-test-patch8-dec32d1b\nmask_raito: 0.9\n")
    with pytest.raises(
        ValueError,
        match=r"Unknown key\(s\) in .*c.yaml: \['mask_raito'\].*'mask_ratio'.*Valid keys",
    ):
        recipe("pretrain").main([str(config)])


def test_paper_defaults_without_a_config():
    from hf_cxr_mae.training import (
        DataArguments,
        FinetuneArguments,
        ModelArguments,
        parse_recipe_args,
    )

    model, data, train = parse_recipe_args(
        (ModelArguments, DataArguments, FinetuneArguments),
        ["--dataset", "nih14", "--data_dir", "/x"],
    )
    assert (
        train.blr,
        train.layer_decay,
        train.weight_decay,
        train.min_lr,
        train.warmup_epochs,
        train.num_train_epochs,
    ) == (2.5e-4, 0.55, 0.05, 1e-5, 5, 75)
    assert (model.drop_path_rate, data.auto_augment, train.max_grad_norm) == (
        0.2,
        "rand-m6-mstd0.5-inc1",
        0.0,
    )


def _parsed_lr(argv: list[str]) -> tuple[float, float | None]:
    from hf_cxr_mae.training import DataArguments, FinetuneArguments, ModelArguments
    from hf_cxr_mae.training.arguments import parse_recipe_args

    *_, training = parse_recipe_args((ModelArguments, DataArguments, FinetuneArguments), argv)
    return training.learning_rate, training.blr


def test_an_explicit_learning_rate_is_not_silently_replaced_by_the_default_blr(tmp_path, caplog):
    base = ["--dataset", "nih14", "--data_dir", str(tmp_path), "--output_dir", str(tmp_path),
            "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2"]  # fmt: skip
    assert _parsed_lr([*base, "--learning_rate", "0.001"]) == (0.001, None)
    assert _parsed_lr([*base, "--learning_rate=0.002"]) == (0.002, None)
    # Without it the recipe's base LR applies: blr x (8 x 2 x 1 process) / 256.
    lr, blr = _parsed_lr(base)
    assert lr == pytest.approx(blr * 16 / 256)
    # A flag beats the config file, either way; two flags: blr wins, as its help says, with a
    # warning.
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 0.003\nblr: 0.02\n")
    assert _parsed_lr([str(config), *base, "--learning_rate", "0.004"]) == (0.004, None)
    config.write_text("learning_rate: 0.003\n")
    assert _parsed_lr([str(config), *base]) == (0.003, None)
    blr_wins = (pytest.approx(0.01 * 16 / 256), 0.01)
    assert _parsed_lr([str(config), *base, "--blr", "0.01"]) == blr_wins
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        assert _parsed_lr([*base, "--learning_rate", "0.001", "--blr", "0.01"]) == blr_wins
    assert "learning_rate is ignored" in caplog.text
