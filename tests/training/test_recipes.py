"""The recipes end to end on DEMO data and real NIH images: pre-training writes a native
checkpoint, fine-tuning, evaluation and the linear probe run, the logged test mAUC equals
sklearn's, resume matches an uninterrupted run, the LR follows the formula, and a wrong starting
checkpoint is refused."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from recipe_utils import TINY_TRAIN, recipe
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score
from transformers import AutoModel, AutoModelForImageClassification, ViTMAEModel

from hf_cxr_mae.data.demo import DEMO_LABELS
from hf_cxr_mae.training import lr_at_step

DEMO = ["--demo_size", "48", "--max_eval_samples", "32", "--pixel_cache", "false"]


def sklearn_mauc(logits: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, float]:
    """Per-finding AUROC with sklearn (entries of -1 left out; one-class findings skipped)."""
    out = {}
    for j, name in enumerate(names):
        keep = labels[:, j] != -1
        y = labels[keep, j]
        if 0 < y.sum() < len(y):
            out[name] = roc_auc_score(y, logits[keep, j])
    return out


@pytest.fixture
def test_predictions(monkeypatch):
    """Records the (logits, labels) each run's final test prediction hands to the metrics."""
    from hf_cxr_mae.metrics import classification

    seen = []
    original = classification.multilabel_metrics

    def spy(logits, labels, names):
        seen.append((np.asarray(logits, dtype=np.float64), np.asarray(labels), list(names)))
        return original(logits, labels, names)

    monkeypatch.setattr(classification, "multilabel_metrics", spy)
    return seen


def check_test_mauc(metrics: dict, report: dict, seen: list) -> None:
    """The logged test mAUC and metrics.json agree with sklearn on the test predictions."""
    logits, labels, names = seen[-1]
    assert len(logits) == report["num_images"] and names == list(report["auroc"])
    expected = sklearn_mauc(logits, labels, names)
    assert expected, "no finding with both classes: the check would be empty"
    for name in names:
        assert report["auroc"][name] == (
            pytest.approx(expected[name], abs=1e-9) if name in expected else None
        ), name
    assert report["mauc"] == pytest.approx(np.mean(list(expected.values())), abs=1e-9)
    assert metrics["test_mauc"] == pytest.approx(report["mauc"], abs=1e-6)


def check_preview(path: Path, size: int, scale: int, rows: int, patch: int, ratio: float) -> None:
    """A reconstruction grid: its size, and per row original | masked | reconstruction | pasted
    that are what they say (masked = original with grey patches, pasted = visible + recon)."""
    with Image.open(path) as image:
        grid = np.asarray(image.convert("L")).astype(int)
    panel, gap, header = size * scale, 2, 14
    assert grid.shape == (header + rows * (panel + gap), 4 * panel + 3 * gap), grid.shape
    p = patch * scale
    for r in range(rows):
        top = header + r * (panel + gap)
        original, masked, recon, pasted = (
            grid[top : top + panel, c * (panel + gap) : c * (panel + gap) + panel] for c in range(4)
        )
        assert original.std() > 5, "blank original panel"
        # Patch-wise: a masked patch is flat grey 128, a visible one is the original's pixels.
        tiles = lambda a: a.reshape(size // patch, p, size // patch, p).swapaxes(1, 2)  # noqa: E731
        hidden = (tiles(masked) != tiles(original)).any(axis=(2, 3))
        assert hidden.sum() == round(ratio * (size // patch) ** 2), hidden.sum()
        assert (tiles(masked)[hidden] == 128).all()
        assert (tiles(pasted)[~hidden] == tiles(original)[~hidden]).all()
        assert (tiles(pasted)[hidden] == tiles(recon)[hidden]).all()
        # The reconstruction is the model's output, not a copy of either input panel.
        assert np.abs(recon - masked)[np.repeat(np.repeat(hidden, p, 0), p, 1)].mean() > 2
        assert np.abs(recon - original).mean() > 2


@pytest.fixture(scope="module")
def demo_mae(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mae"
    recipe("pretrain").main(
        [
            *TINY_TRAIN,
            *DEMO,
            "--output_dir",
            str(out),
            "--max_steps",
            "4",
            "--save_steps",
            "2",
            "--eval_strategy",
            "no",
        ]
    )
    return out


def test_pretrain_demo_writes_a_native_checkpoint(demo_mae):
    assert type(AutoModel.from_pretrained(demo_mae)) is ViTMAEModel
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
        assert (demo_mae / name).is_file(), name
    # A grid at each save and at the end (step 4): 4 held-out images, 64 px shown at 2x.
    previews = sorted(p.name for p in (demo_mae / "previews").iterdir())
    assert previews[-1] == "step-0000004.png", previews
    check_preview(demo_mae / "previews" / previews[-1], 64, 2, 4, 8, 0.75)
    history = json.loads((demo_mae / "checkpoint-4" / "trainer_state.json").read_text())[
        "log_history"
    ]
    assert any(
        "images_per_second" in h and h.get("mask_ratio") == 0.75 for h in history
    )  # demo config


def test_finetune_evaluate_linprobe_on_demo(demo_mae, tmp_path, test_predictions):
    ft = tmp_path / "ft"
    metrics = recipe("finetune").main(
        [*TINY_TRAIN, *DEMO, "--model_name_or_path", str(demo_mae), "--output_dir", str(ft), "--max_steps", "4",
         "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2"]
    )  # fmt: skip
    report = json.loads((ft / "metrics.json").read_text())
    assert report["split"] == "test" and set(report["auroc"]) == set(DEMO_LABELS)
    check_test_mauc(metrics, report, test_predictions)
    assert 0 <= metrics["eval_mauc"] <= 1
    native = AutoModelForImageClassification.from_pretrained(ft)
    assert native.config.architectures == ["BeitForImageClassification"]
    card = (ft / "README.md").read_text()
    assert "not a medical device" in card and "mAUC" in card
    ev = tmp_path / "ev"
    recipe("evaluate_model").main(
        ["--model_name_or_path", str(ft), *DEMO, "--output_dir", str(ev), "--split", "test"]
    )
    evaluated = json.loads((ev / "metrics.json").read_text())
    assert evaluated["auroc"].keys() == report["auroc"].keys() and evaluated["num_images"] == 32
    assert evaluated["mauc"] == pytest.approx(report["mauc"], abs=1e-6)  # same model, same split
    lp = tmp_path / "lp"
    recipe("linprobe").main(
        [
            *TINY_TRAIN,
            *DEMO,
            "--model_name_or_path",
            str(demo_mae),
            "--output_dir",
            str(lp),
            "--max_steps",
            "3",
            "--eval_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
        ]
    )
    probe = AutoModelForImageClassification.from_pretrained(
        lp
    )  # BatchNorm folded: plain native head
    assert probe.config.use_mean_pooling is False
    probe_report = json.loads((lp / "metrics.json").read_text())
    check_test_mauc(
        {"test_mauc": probe_report["mauc"]}, probe_report, test_predictions
    )  # the probe's own test predictions, recomputed with sklearn


def test_recipes_on_real_nih_images(nih_dir, tmp_path, test_predictions):
    data = [
        "--dataset",
        "nih14",
        "--data_dir",
        str(nih_dir),
        "--image_dir",
        "images",
        "--cache_dir",
        str(tmp_path / "cache"),
        "--cache_size",
        "80",
        "--max_eval_samples",
        "40",
    ]
    mae = tmp_path / "mae"
    recipe("pretrain").main(
        [
            *TINY_TRAIN,
            *data,
            "--output_dir",
            str(mae),
            "--max_steps",
            "3",
            "--max_train_samples",
            "48",
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
        ]
    )
    ft = tmp_path / "ft"
    metrics = recipe("finetune").main(
        [*TINY_TRAIN, *data, "--model_name_or_path", str(mae), "--output_dir", str(ft), "--max_steps", "3",
         "--max_train_samples", "48", "--eval_strategy", "steps", "--eval_steps", "3", "--save_strategy", "steps", "--save_steps", "3"]
    )  # fmt: skip
    report = json.loads((ft / "metrics.json").read_text())
    assert len(report["auroc"]) == 14 and report["num_images"] == 40
    check_test_mauc(metrics, report, test_predictions)
    # The pixel cache was built under --cache_dir (not beside the data): train / held-out splits.
    assert len(list((tmp_path / "cache").glob("*/dataset_info.json"))) >= 2


def test_resume_matches_an_uninterrupted_run(demo_mae, tmp_path):
    args = [
        *TINY_TRAIN,
        *DEMO,
        "--model_name_or_path",
        str(demo_mae),
        "--max_steps",
        "6",
        "--save_strategy",
        "steps",
        "--save_steps",
        "3",
        "--eval_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--seed",
        "3",
    ]
    full = tmp_path / "full"
    recipe("finetune").main([*args, "--output_dir", str(full)])
    expected = load_file(full / "model.safetensors")
    # A crash after step 3: the step-6 checkpoint and the final model never got written, and a
    # later checkpoint was cut off mid-save (no trainer_state.json). Rerunning resumes from step 3.
    shutil.rmtree(full / "checkpoint-6")
    for name in ("model.safetensors", "config.json"):
        (full / name).unlink()
    broken = full / "checkpoint-5"
    broken.mkdir()
    shutil.copy(full / "checkpoint-3" / "config.json", broken / "config.json")
    recipe("finetune").main([*args, "--output_dir", str(full)])
    resumed = load_file(full / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for key in expected:
        # Seeded per-sample augmentation makes the resumed run draw exactly the same: equal to 1e-6.
        torch.testing.assert_close(resumed[key], expected[key], atol=1e-6, rtol=0, msg=key)


def test_lr_follows_the_formula_and_groups_keep_layer_decay(demo_mae, tmp_path):
    from hf_cxr_mae.training import finetune

    seen = {}

    class Spy(finetune.CXRTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            step = self.state.global_step
            seen[step] = [(g["layer_id"], g["lr"]) for g in self.optimizer.param_groups]
            return super().training_step(model, inputs, num_items_in_batch)

    original = finetune.CXRTrainer
    finetune.CXRTrainer = Spy
    try:
        recipe("finetune").main(
            [*TINY_TRAIN, *DEMO, "--model_name_or_path", str(demo_mae), "--output_dir", str(tmp_path), "--max_steps", "10",
             "--warmup_steps", "4", "--blr", "1e-3", "--min_lr", "1e-5", "--layer_decay", "0.5", "--eval_strategy", "no",
             "--save_strategy", "no", "--load_best_model_at_end", "false"]
        )  # fmt: skip
    finally:
        finetune.CXRTrainer = original
    base = 1e-3 * 8 / 256  # blr * effective batch / 256
    depth = 2
    for step in (0, 1, 3, 4, 7, 9):
        expected = lr_at_step(step, base, 4, 10, 1e-5)
        manual = (
            base * step / 4
            if step < 4
            else 1e-5 + (base - 1e-5) * 0.5 * (1 + math.cos(math.pi * (step - 4) / 6))
        )
        assert expected == pytest.approx(manual)
        for layer, lr in seen[step]:
            assert lr == pytest.approx(manual * 0.5 ** (depth + 1 - layer), rel=1e-6), (step, layer)
    assert {layer for layer, _ in seen[0]} == {0, 1, 2, 3}


def test_wrong_checkpoint_type_and_label_count(demo_mae, tmp_path):
    from transformers import ViTConfig, ViTModel

    ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="'vit' checkpoint"):
        recipe("finetune").main(
            ["--model_name_or_path", str(tmp_path / "vit"), "--output_dir", str(tmp_path / "o")]
        )
    ft = tmp_path / "ft"
    recipe("finetune").main(
        [
            *TINY_TRAIN,
            *DEMO,
            "--model_name_or_path",
            str(demo_mae),
            "--output_dir",
            str(ft),
            "--max_steps",
            "1",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
        ]
    )
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    from PIL import Image

    for i in range(6):
        Image.new("L", (32, 32), i * 30).save(csv_dir / f"{i}.png")
    (csv_dir / "labels.csv").write_text(
        "path,A,B\n" + "".join(f"{i}.png,{i % 2},0\n" for i in range(6))
    )
    with pytest.raises(ValueError, match=r"4-label head .*2 labels.*reinit_head"):
        recipe("finetune").main(
            [
                *TINY_TRAIN,
                "--dataset",
                "csv",
                "--data_dir",
                str(csv_dir),
                "--validation_size",
                "2",
                "--model_name_or_path",
                str(ft),
                "--output_dir",
                str(tmp_path / "o2"),
                "--pixel_cache",
                "false",
            ]
        )
