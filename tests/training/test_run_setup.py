"""Setting a run up from its data (``hf_cxr_mae.training.run_setup``, ``data_setup``): empty or
missing training splits refused, other empty splits dropped, no validation split switching model
selection off with a warning, and an undefined validation mAUC picking on loss."""

import logging

import pytest
from datasets import Dataset, DatasetDict
from helpers import random_png

from hf_cxr_mae.training import data_setup, run_setup


def test_an_empty_or_missing_training_split_is_refused_empty_others_are_dropped(caplog):
    rows = Dataset.from_dict({"path": ["a.png", "b.png"]})
    empty = rows.select([])
    with pytest.raises(ValueError, match=r"training split is empty.*nih14 at /data/x"):
        data_setup.drop_empty_splits(DatasetDict(train=empty, test=rows), "nih14 at /data/x")
    with pytest.raises(ValueError, match=r"no training split.*\['test', 'validation'\]"):
        data_setup.drop_empty_splits(DatasetDict(validation=rows, test=rows), "csv at /data/y")
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        kept = data_setup.drop_empty_splits(
            DatasetDict(train=rows, validation=empty, test=empty), "nih14 at /data/x"
        )
    assert list(kept) == ["train"] and len(kept["train"]) == 2
    assert "validation split is empty" in caplog.text and "test split is empty" in caplog.text


def test_no_validation_switches_model_selection_off_with_a_warning(tmp_path, caplog):
    from hf_cxr_mae.training import FinetuneArguments

    args = FinetuneArguments(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    assert args.load_best_model_at_end and str(args.eval_strategy.value) == "epoch"
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        run_setup.without_validation(args)
    assert not args.load_best_model_at_end and str(args.eval_strategy.value) == "no"
    assert "no validation" in caplog.text and "last step" in caplog.text


def test_a_validation_split_without_both_classes_picks_on_loss_instead_of_crashing(
    tmp_path, caplog
):
    """One validation image: no finding has positives and negatives, so there is never an
    eval_mauc; the Trainer used to stop at the first evaluation, leaving nothing."""
    import json

    from recipe_utils import TINY_TRAIN, recipe

    rows = ["path,A,B"]
    for k in range(12):
        random_png(tmp_path / "data" / f"{k}.png", k, 64)
        rows.append(f"{k}.png,{k % 2},{(k // 2) % 2}")
    (tmp_path / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    argv = [*TINY_TRAIN, "--dataset", "csv", "--data_dir", str(tmp_path / "data"),
            "--validation_size", "1", "--output_dir", str(out), "--max_steps", "3",
            "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps",
            "--save_steps", "1", "--pixel_cache", "false", "--model_name_or_path", ""]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        recipe("finetune").main(argv)
    assert "picked on validation loss" in caplog.text
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    losses = [h["eval_loss"] for h in state["log_history"] if "eval_loss" in h]
    assert len(losses) == 3 and state["best_metric"] == min(losses)
