"""Trust under faults: exact resume with the paper's augmentation on, any worker count, corrupt
checkpoints, stale cache builds, undecodable images and honest throughput after a resume."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from recipe_utils import recipe
from safetensors.torch import load_file

TINY = "vit-test-patch8-dec32d1b"
PAPER_AUGMENT = "rand-m6-mstd0.5-inc1"  # the default: RandAugment on


def tiny_config(tmp_path: Path, out: Path, **overrides) -> Path:
    """A tiny fine-tune from scratch on 32 DEMO images (4 steps per epoch), written as a JSON config
    so the DEMO recipe's defaults (which switch RandAugment off) are not applied."""
    settings = {
        "preset": TINY,
        "output_dir": str(out),
        "demo_size": 32,
        "max_eval_samples": 8,
        "pixel_cache": False,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "auto_augment": PAPER_AUGMENT,
        "drop_path_rate": 0.2,
        "max_steps": 6,
        "save_strategy": "steps",
        "save_steps": 3,
        "eval_strategy": "no",
        "load_best_model_at_end": False,
        "logging_steps": 1,
        "dataloader_num_workers": 0,
        "report_to": "none",
        "seed": 5,
        "blr": 0.064,  # 2e-3 at batch 8: large enough that any difference in the draws shows
        "warmup_steps": 1,
        "layer_decay": 1.0,
    }
    settings.update(overrides)
    config = tmp_path / f"{out.name}.json"
    config.write_text(json.dumps(settings))
    return config


def tiny_run(tmp_path: Path, out: Path, **overrides) -> dict:
    return recipe("finetune").main([str(tiny_config(tmp_path, out, **overrides))])


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert left.keys() == right.keys()
    for key in left:
        torch.testing.assert_close(left[key], right[key], atol=1e-6, rtol=0, msg=key)


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


def _draw_everything_at_once(image):
    """What a training transform may draw from: NumPy's, Python's and torch's global RNGs."""
    import random

    import numpy as np

    return (np.random.random(), random.random(), torch.rand(()).item(), image)


def test_sample_augmentation_depends_on_the_sample_seed_only():
    import random

    import numpy as np
    from PIL import Image

    from hf_cxr_mae.configuration import CXRClassifierConfig
    from hf_cxr_mae.data.transforms import AugmentationSeeds, create_transform

    seeds = AugmentationSeeds(7)
    draws = []
    for state in (1, 2):  # whatever the global states are (another worker, another prefetch)
        np.random.seed(state), random.seed(state), torch.manual_seed(state)
        before = (np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state())
        draws.append(seeds(3, _draw_everything_at_once, None)[:3])
        after = (np.random.get_state()[1], random.getstate(), torch.get_rng_state())
        assert (before[0] == after[0]).all() and before[1] == after[1]  # global states untouched
        assert torch.equal(before[2], after[2])
    assert draws[0] == draws[1]
    assert seeds(4, _draw_everything_at_once, None)[:3] != draws[0]  # another row, other draws
    # The paper's fine-tuning transform (RandAugment picks its ops with np.random.choice).
    config = CXRClassifierConfig.from_preset(TINY)
    transform = create_transform(config, "train", re_prob=0.25)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 96), dtype=np.uint8))
    outputs = []
    for state in range(4):
        np.random.seed(state), random.seed(state), torch.manual_seed(state)
        outputs.append(seeds(3, transform, image))
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])


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


def test_truncated_png_during_training_names_the_file_and_row(tmp_path):
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["path,A,B"]
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (72, 72), dtype=np.uint8)).save(data / f"img/{i}.png")
        rows.append(f"img/{i}.png,{i % 2},{(i // 2) % 2}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    bad = data / "img" / "5.png"
    bad.write_bytes(
        bad.read_bytes()[:2000]
    )  # the header is intact: the default 'open' check passes
    argv = [
        "--dataset", "csv", "--data_dir", str(data), "--preset", TINY, "--output_dir", str(tmp_path / "out"),
        "--pixel_cache", "false", "--per_device_train_batch_size", "8", "--max_steps", "2",
        "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
        "--report_to", "none", "--dataloader_num_workers", "0",
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"5\.png.*dataset row \d+") as caught:
        recipe("finetune").main(argv)
    assert "truncated" in str(caught.value)


def test_cache_build_removes_builds_left_by_killed_processes_only(tmp_path):
    import socket
    import subprocess
    import sys

    import numpy as np
    from datasets import Dataset, Features, Image, Value

    from hf_cxr_mae.data.cache import build_cache

    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid is free
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        root = tmp_path / "cache"
        killed = root / f".building-{host}-{dead.pid}-abc123"
        running = root / f".building-{host}-{alive.pid}-def456"
        elsewhere = root / f".building-other-node-{dead.pid}-ghi789"  # another host: unknowable
        for folder in (killed, running, elsewhere):
            (folder / "final").mkdir(parents=True)
            (folder / "map.arrow").write_bytes(b"half written")
        images = [np.full((40, 48), i * 20, np.uint8) for i in range(3)]
        data = Dataset.from_dict(
            {"image": images, "image_id": ["a", "b", "c"]},
            features=Features({"image": Image(), "image_id": Value("string")}),
        )
        cached = build_cache(data, size=32, cache_dir=root)
        assert len(cached) == 3
        assert not killed.exists()
        assert running.is_dir() and elsewhere.is_dir()
        assert {p.name for p in root.glob(".building-*")} == {running.name, elsewhere.name}
    finally:
        alive.kill()
        alive.wait()


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
    script = Path(__file__).parent / "fault_script.py"
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


def test_mixing_draws_from_the_rows_seeds_and_spares_evaluation_batches():
    from hf_cxr_mae.data.transforms import CXRCollator

    def rows(seeds):
        return [
            {
                "pixel_values": torch.full((1, 8, 8), float(i)),
                "labels": torch.tensor([float(i % 2)]),
            }
            | ({} if s is None else {"aug_seed": s})
            for i, s in enumerate(seeds)
        ]

    collate = CXRCollator(num_channels=1, mixup_alpha=0.8, cutmix_alpha=1.0)
    torch.manual_seed(0)
    first = collate(rows([11, 12, 13, 14]))
    torch.manual_seed(1)  # another global state (another worker, another prefetch)
    again = collate(rows([11, 12, 13, 14]))
    assert torch.equal(first["pixel_values"], again["pixel_values"])
    assert torch.equal(first["labels"], again["labels"])
    assert not torch.equal(first["pixel_values"], collate(rows([11, 12, 13, 15]))["pixel_values"])
    # Evaluation rows carry no seed: never mixed (mixed labels would break the metrics).
    plain = collate(rows([None] * 4))
    assert torch.equal(
        plain["pixel_values"], torch.stack([r["pixel_values"] for r in rows([None] * 4)])
    )
    assert torch.equal(plain["labels"], torch.tensor([[0.0], [1.0], [0.0], [1.0]]))
