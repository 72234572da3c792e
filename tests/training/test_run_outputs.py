"""What a run leaves behind: an empty test split is skipped with the model saved, and a failure
after training keeps the model, processor and card."""

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest
from helpers import run_recipe_from_flags
from recipe_utils import TINY_TRAIN

from hf_cxr_mae.training import trainer

SHORT = ["--eval_strategy", "no", "--load_best_model_at_end", "false"]


DEMO = ["--demo_size", "32", "--max_eval_samples", "16", "--pixel_cache", "false"]


MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "README.md")


def nih_copy(nih_dir: Path, root: Path, n_train: int, n_test: int) -> Path:
    """An NIH-layout folder in ``root`` with the first ``n_train`` / ``n_test`` listed images."""
    train = (nih_dir / "train_val_list.txt").read_text().split()[:n_train]
    test = (nih_dir / "test_list.txt").read_text().split()[:n_test]
    (root / "images").mkdir(parents=True)
    for name in train + test:
        shutil.copy(nih_dir / "images" / name, root / "images" / name)
    with open(nih_dir / "Data_Entry_2017.csv", newline="") as f:
        rows = list(csv.reader(f))
    keep = set(train + test)
    with open(root / "Data_Entry_2017.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *(r for r in rows[1:] if r[0] in keep)])
    (root / "train_val_list.txt").write_text("".join(f"{n}\n" for n in train))
    (root / "test_list.txt").write_text("".join(f"{n}\n" for n in test))
    return root


def nih_args(data: Path, tmp_path: Path, cache: bool) -> list[str]:
    return [
        *TINY_TRAIN, *SHORT, "--dataset", "nih14", "--data_dir", str(data), "--image_dir", "images",
        "--pixel_cache", str(cache).lower(), "--cache_dir", str(tmp_path / "cache"),
        "--cache_size", "64", "--validation_size", "4", "--max_steps", "2",
        "--log_level", "warning",  # the tests' TRANSFORMERS_VERBOSITY=error would hide warnings
    ]  # fmt: skip


@pytest.mark.parametrize("cache", [False, True])
def test_an_empty_test_split_is_skipped_and_the_model_is_saved(nih_dir, tmp_path, cache, caplog):
    data = nih_copy(nih_dir, tmp_path / "nih", n_train=16, n_test=0)
    out = tmp_path / "ft"
    with caplog.at_level(logging.WARNING):
        metrics = run_recipe_from_flags(
            "finetune", tmp_path, [*nih_args(data, tmp_path, cache), "--output_dir", str(out)]
        )
    for name in MODEL_FILES:
        assert (out / name).is_file(), name
    assert not any(k.startswith("test_") for k in metrics)
    assert "test split is empty" in caplog.text  # a warning, naming the split
    card = (out / "README.md").read_text()
    assert "No test evaluation: the test split is empty." in card
    assert "pre-trained encoder is evaluated by fine-tuning" not in card  # it is a classifier
    assert "model-index" not in card  # nothing measured, nothing claimed
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_images"] == 0 and "test split is empty" in report["skipped"]


def _fail(*args, **kwargs):
    raise RuntimeError("planted failure after training")


def test_a_failure_after_training_keeps_model_processor_and_card(tmp_path, monkeypatch):
    """Final evaluation raising (any reason): the trained model is already on disk, for all runs."""
    # Fine-tuning's first step after the save: validation predictions (post-processing, report).
    monkeypatch.setattr(trainer.CXRTrainer, "predict", _fail)
    ft = tmp_path / "ft"
    with pytest.raises(RuntimeError, match="planted"):
        run_recipe_from_flags(
            "finetune",
            tmp_path,
            [*TINY_TRAIN, *DEMO, *SHORT, "--output_dir", str(ft), "--max_steps", "2"],
        )
    for name in MODEL_FILES:
        assert (ft / name).is_file(), name
    monkeypatch.setattr(trainer.CXRTrainer, "evaluate", _fail)
    mae = tmp_path / "mae"
    with pytest.raises(RuntimeError, match="planted"):
        run_recipe_from_flags(
            "pretrain",
            tmp_path,
            [*TINY_TRAIN, *DEMO, *SHORT, "--output_dir", str(mae), "--max_steps", "2"],
        )
    for name in MODEL_FILES:
        assert (mae / name).is_file(), name
    lp = tmp_path / "lp"
    with pytest.raises(RuntimeError, match="planted"):
        run_recipe_from_flags("linprobe", tmp_path,
            [*TINY_TRAIN, *DEMO, *SHORT, "--model_name_or_path", str(mae),
             "--output_dir", str(lp), "--max_steps", "2"]
        )  # fmt: skip
    for name in MODEL_FILES:
        assert (lp / name).is_file(), name
