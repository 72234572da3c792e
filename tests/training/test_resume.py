"""Resuming a run (``hf_cxr_mae.training.resume``): bit-identical after SIGKILL at any point and
with the paper's augmentation on, any worker count, corrupt newest checkpoints skipped with the
reason, a checkpoint of other settings (or predating a setting) refused, and honest throughput
after a resume."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TESTS_DIR
from helpers import assert_same_weights, tiny_config, tiny_run
from safetensors.torch import load_file


def cut_after_step_3(out: Path) -> None:
    """What a crash after the step-3 checkpoint leaves: no later checkpoint, no final model."""
    for path in out.iterdir():
        if path.name.startswith("checkpoint-") and path.name != "checkpoint-3":
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()


MIXING = {"mixup": 0.8, "cutmix": 1.0, "reprob": 0.25}


@pytest.mark.parametrize(
    "extra",
    [{}, {**MIXING, "dataloader_num_workers": 2}],
    ids=["randaugment", "randaugment+mix+erase+2workers"],
)
def test_resume_with_paper_augmentation_matches_uninterrupted(tmp_path, extra):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    tiny_run(tmp_path, full, **extra)
    shutil.copytree(full, resumed)
    cut_after_step_3(resumed)
    assert sorted(p.name for p in resumed.iterdir()) == ["checkpoint-3"]
    tiny_run(tmp_path, resumed, **extra)  # resumes mid-epoch 0 and runs into epoch 1
    assert_same_weights(full, resumed)


def test_worker_count_does_not_change_training(tmp_path):
    zero, two = tmp_path / "w0", tmp_path / "w2"
    tiny_run(tmp_path, zero, save_strategy="no", **MIXING)
    tiny_run(tmp_path, two, save_strategy="no", dataloader_num_workers=2, **MIXING)
    assert_same_weights(zero, two)


def test_images_per_second_after_a_resume_counts_only_this_process(tmp_path, monkeypatch):
    from hf_cxr_mae.training import finetune

    pause = 0.3  # every step takes at least this long: no log can honestly exceed 8 / 0.3 images/s

    class SlowTrainer(finetune.CXRTrainer):
        def training_step(self, *args, **kwargs):
            import time

            time.sleep(pause)
            return super().training_step(*args, **kwargs)

    monkeypatch.setattr(finetune, "CXRTrainer", SlowTrainer)
    out = tmp_path / "run"
    tiny_run(tmp_path, out, auto_augment="")
    cut_after_step_3(out)
    tiny_run(tmp_path, out, auto_augment="")
    history = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    rates = {h["step"]: h["images_per_second"] for h in history if "images_per_second" in h}
    assert sorted(rates) == [1, 2, 3, 4, 5, 6]  # steps 4-6 logged by the resumed process
    for step, rate in rates.items():
        assert 0 < rate <= 8 / pause, (step, rate)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory) -> Path:
    """A finished tiny run keeping checkpoint-3 and checkpoint-6."""
    root = tmp_path_factory.mktemp("two")
    out = root / "run"
    tiny_run(root, out, auto_augment="", save_total_limit=3)
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-3", "checkpoint-6"}
    return out


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CORRUPTIONS = {
    "truncated weights": (lambda c: _truncate(c / "model.safetensors"), "model.safetensors"),
    "weights header only": (
        lambda c: (c / "model.safetensors").write_bytes(
            (c / "model.safetensors").read_bytes()[:200]
        ),
        "model.safetensors",
    ),
    "missing weights": (lambda c: (c / "model.safetensors").unlink(), "no model weights"),
    "truncated state": (lambda c: _truncate(c / "trainer_state.json"), "trainer_state.json"),
    "state not json": (
        lambda c: (c / "trainer_state.json").write_text("{'a': 1"),
        "trainer_state.json",
    ),
    "empty optimizer": (lambda c: (c / "optimizer.pt").write_bytes(b""), "optimizer.pt"),
    "truncated optimizer": (lambda c: _truncate(c / "optimizer.pt"), "optimizer.pt"),
    "missing optimizer": (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt"),
    "missing scheduler": (lambda c: (c / "scheduler.pt").unlink(), "scheduler.pt"),
    "truncated rng": (lambda c: _truncate(next(c.glob("rng_state*.pth"))), "rng_state"),
    "missing rng": (lambda c: next(c.glob("rng_state*.pth")).unlink(), "rng_state"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_newest_checkpoint_is_skipped_with_the_reason(
    two_checkpoints, tmp_path, case, caplog
):
    from types import SimpleNamespace

    from hf_cxr_mae.training.resume import resolve_checkpoint
    from hf_cxr_mae.training.trainer import last_complete_checkpoint

    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    newest, older = out / "checkpoint-6", out / "checkpoint-3"
    corrupt, words = CORRUPTIONS[case]
    corrupt(newest)
    with caplog.at_level("WARNING", logger="hf_cxr_mae"):
        assert last_complete_checkpoint(out) == str(older)
    skipped = [r.getMessage() for r in caplog.records if str(newest) in r.getMessage()]
    assert len(skipped) == 1 and words in skipped[0], caplog.text
    args = SimpleNamespace(
        resume_from_checkpoint=str(newest), output_dir=str(out), auto_resume=True
    )
    with pytest.raises(ValueError, match=f"{newest}.*{words}"):
        resolve_checkpoint(args)  # named explicitly: refused with its path and the reason
    args.resume_from_checkpoint = str(older)
    assert resolve_checkpoint(args) == str(older)


def test_sigkill_at_any_point_then_resume_is_bit_identical(tmp_path):
    """Acceptance: a fine-tune (default augmentation, pixel cache on) SIGKILLed in the middle of
    the cache build, of a training step and of a checkpoint save (half of trainer_state.json
    written), rerun each time, ends with exactly the weights of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cached = {"pixel_cache": True, "cache_size": 80}
    reference = tmp_path / "reference"
    tiny_run(tmp_path, reference, cache_dir=str(tmp_path / "cache-ref"), **cached)
    out, cache = tmp_path / "faulty", tmp_path / "cache"
    config = tiny_config(tmp_path, out, cache_dir=str(cache), **cached)
    frozen = Path(f"{out}.frozen")
    script = TESTS_DIR / "fault_script.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}

    def run(fault: str) -> None:
        frozen.unlink(missing_ok=True)
        process = subprocess.Popen(
            [sys.executable, str(script), str(config), fault],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 300
        while not frozen.exists():
            if process.poll() is not None:
                raise AssertionError(f"exited before the fault: {process.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, f"never reached the {fault} fault"
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
        process.communicate()
        assert process.returncode == -signal.SIGKILL

    run("cache")
    assert list(cache.glob(".building-*")), "the kill should have left a half-built cache"
    run("step")
    assert not list(cache.glob(".building-*"))  # the next build removed the dead one's folder
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    run("save")
    with pytest.raises(ValueError):
        json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    tiny_run(tmp_path, out, cache_dir=str(cache), **cached)  # the rerun that finishes
    left, right = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


def test_auto_resume_refuses_a_checkpoint_that_predates_a_setting(tmp_path):
    """A checkpoint saved before ``dataloader_drop_last`` was recorded (the old default kept the
    partial batch) must not be auto-resumed under the new default: its steps per epoch, warmup
    and cosine differ. A setting missing from the checkpoint is unknown, not equal."""
    import json

    import pytest

    from hf_cxr_mae.training.callbacks import RUN_SETTINGS
    from hf_cxr_mae.training.resume import check_same_run

    now = {"learning_rate": 1e-3, "seed": 0, "dataloader_drop_last": True}
    old = {k: v for k, v in now.items() if k != "dataloader_drop_last"}
    (tmp_path / RUN_SETTINGS).write_text(json.dumps(old))
    with pytest.raises(ValueError, match="dataloader_drop_last"):
        check_same_run(str(tmp_path), now, explicit=False)
    check_same_run(str(tmp_path), now, explicit=True)  # named explicitly: resumes, with a warning


def test_auto_resume_refuses_a_checkpoint_saved_with_other_settings(tmp_path, caplog):
    from recipe_utils import TINY_TRAIN, recipe

    out = tmp_path / "run"
    args = [*TINY_TRAIN, "--demo_size", "16", "--model_name_or_path", "", "--pixel_cache", "false",
            "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no",
            "--load_best_model_at_end", "false", "--output_dir", str(out), "--seed", "3"]  # fmt: skip
    recipe("finetune").main([*args, "--max_steps", "2"])
    # Another seed (or LR, batch, augmentation...) into the same folder: not silently mixed.
    with pytest.raises(ValueError, match=r"checkpoint-2 was saved by .*seed 3 there, 7 now"):
        recipe("finetune").main([*args, "--max_steps", "4", "--seed", "7"])
    assert not (out / "checkpoint-4").exists()
    # Running longer with the same settings resumes as before, workers and logging aside.
    with caplog.at_level(logging.INFO, logger="hf_cxr_mae"):
        recipe("finetune").main([*args, "--max_steps", "4", "--logging_steps", "2"])
    assert f"Resuming from {out / 'checkpoint-2'}" in caplog.text
    assert (out / "checkpoint-4" / "run_settings.json").is_file()
    # A shorter run into the same folder would save the 4-step weights as a 2-step model.
    with pytest.raises(ValueError, match=r"checkpoint-4 has trained 4 steps .*--max_steps 2"):
        recipe("finetune").main([*args, "--max_steps", "2"])
