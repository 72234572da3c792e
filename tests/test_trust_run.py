"""Trust of a run's output: nothing lost after training, no secret on disk, a Hub outage never
stalls training, and each Hub commit holds exactly the files a model repo needs."""

import csv
import json
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from datasets import Dataset, DatasetDict
from hub_server import FakeHub
from recipe_utils import TINY_TRAIN, recipe

import hf_cxr_mae.hub_push as hub_push
from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.data import recipe_data
from hf_cxr_mae.training import run_setup, trainer

SHORT = ["--eval_strategy", "no", "--load_best_model_at_end", "false"]
DEMO = ["--demo_size", "32", "--max_eval_samples", "16", "--pixel_cache", "false"]
# What a model repo needs from a checkpoint, and from the final folder of a fine-tune on DEMO data
# (it has a test split, so metrics.json). Anything else (optimizer.pt, scheduler.pt, rng_state.pth,
# trainer_state.json, training_args.bin: pickles and resume state) must never be committed.
CHECKPOINT_FILES = {"config.json", "model.safetensors", "preprocessor_config.json"}
FINAL_FILES = CHECKPOINT_FILES | {
    "README.md",
    "training_args.json",
    "metrics.json",
    "all_results.json",
    "example.png",
    "report.md",  # the test report and its figures
    "roc.png",
    "reliability.png",
    "subgroups.png",
}
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


def run(name: str, tmp_path: Path, argv: list[str]) -> dict:
    """A recipe from flags only: a config file of our own, so the DEMO config (which starts
    fine-tuning from out/demo-pretrain) is not applied."""
    config = tmp_path / "flags-only.json"
    config.write_text(json.dumps({"auto_augment": ""}))
    return recipe(name).main([str(config), *argv])


def nih_args(data: Path, tmp_path: Path, cache: bool) -> list[str]:
    return [
        *TINY_TRAIN, *SHORT, "--dataset", "nih14", "--data_dir", str(data), "--image_dir", "images",
        "--pixel_cache", str(cache).lower(), "--cache_dir", str(tmp_path / "cache"),
        "--cache_size", "64", "--validation_size", "4", "--max_steps", "2",
        "--log_level", "warning",  # the tests' TRANSFORMERS_VERBOSITY=error would hide warnings
    ]  # fmt: skip


# ------------------------------------------------------------------------ 1: empty splits, saving


@pytest.mark.parametrize("cache", [False, True])
def test_an_empty_test_split_is_skipped_and_the_model_is_saved(nih_dir, tmp_path, cache, caplog):
    data = nih_copy(nih_dir, tmp_path / "nih", n_train=16, n_test=0)
    out = tmp_path / "ft"
    with caplog.at_level(logging.WARNING):
        metrics = run(
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


def test_an_empty_or_missing_training_split_is_refused_empty_others_are_dropped(caplog):
    rows = Dataset.from_dict({"path": ["a.png", "b.png"]})
    empty = rows.select([])
    with pytest.raises(ValueError, match=r"training split is empty.*nih14 at /data/x"):
        recipe_data.drop_empty_splits(DatasetDict(train=empty, test=rows), "nih14 at /data/x")
    with pytest.raises(ValueError, match=r"no training split.*\['test', 'validation'\]"):
        recipe_data.drop_empty_splits(DatasetDict(validation=rows, test=rows), "csv at /data/y")
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        kept = recipe_data.drop_empty_splits(
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


def _fail(*args, **kwargs):
    raise RuntimeError("planted failure after training")


def test_a_failure_after_training_keeps_model_processor_and_card(tmp_path, monkeypatch):
    """Final evaluation raising (any reason): the trained model is already on disk, for all runs."""
    # Fine-tuning's first step after the save: validation predictions (post-processing, report).
    monkeypatch.setattr(trainer.CXRTrainer, "predict", _fail)
    ft = tmp_path / "ft"
    with pytest.raises(RuntimeError, match="planted"):
        run(
            "finetune",
            tmp_path,
            [*TINY_TRAIN, *DEMO, *SHORT, "--output_dir", str(ft), "--max_steps", "2"],
        )
    for name in MODEL_FILES:
        assert (ft / name).is_file(), name
    monkeypatch.setattr(trainer.CXRTrainer, "evaluate", _fail)
    mae = tmp_path / "mae"
    with pytest.raises(RuntimeError, match="planted"):
        run(
            "pretrain",
            tmp_path,
            [*TINY_TRAIN, *DEMO, *SHORT, "--output_dir", str(mae), "--max_steps", "2"],
        )
    for name in MODEL_FILES:
        assert (mae / name).is_file(), name
    lp = tmp_path / "lp"
    with pytest.raises(RuntimeError, match="planted"):
        run("linprobe", tmp_path,
            [*TINY_TRAIN, *DEMO, *SHORT, "--model_name_or_path", str(mae),
             "--output_dir", str(lp), "--max_steps", "2"]
        )  # fmt: skip
    for name in MODEL_FILES:
        assert (lp / name).is_file(), name


# ------------------------------------------------------------------------------ 2: no token on disk


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def use(endpoint: str) -> None:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)

    return use


def _all_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.name == "training_args.bin":  # a pickle inside a zip: look at the object too
        args = torch.load(path, weights_only=False)
        raw += repr(vars(args)).encode()
    return raw


@pytest.mark.parametrize("source", ["flag", "env"])
def test_no_file_we_write_holds_the_hub_token(tmp_path, online, monkeypatch, source):
    secret = "hf_FAKEsecretTOKEN0123456789"
    used: list[str | None] = []

    class RecordingApi(hub_push.HfApi):
        def __init__(self, *args, token=None, **kwargs):
            used.append(token or os.environ.get("HF_TOKEN"))
            super().__init__(*args, token=token, **kwargs)

    monkeypatch.setattr(hub_push, "HfApi", RecordingApi)
    token_args = ["--hub_token", secret] if source == "flag" else []
    if source == "env":
        monkeypatch.setenv("HF_TOKEN", secret)
    out = tmp_path / "ft"
    with FakeHub() as hub:
        online(hub.endpoint)
        run("finetune", tmp_path,
            [*TINY_TRAIN, *DEMO, *SHORT, "--output_dir", str(out), "--max_steps", "2",
             "--save_strategy", "steps", "--save_steps", "1", "--push_to_hub",
             "--hub_model_id", "org/secret", "--hub_strategy", "every_save", *token_args]
        )  # fmt: skip
    assert used and set(used) == {secret}  # our push still authenticates with it
    files = [p for p in out.rglob("*") if p.is_file()]
    pickles = [p for p in files if p.name == "training_args.bin"]
    assert len(pickles) == 3  # the root and both checkpoints: the test looked where it leaks
    for path in files:
        assert secret.encode() not in _all_bytes(path), path
    for args in (torch.load(p, weights_only=False) for p in pickles):
        assert args.hub_token is None
    for commit in hub.commits:
        for name, content in commit["files"].items():
            assert secret.encode() not in content, name


# ------------------------------------------------------------- 16: exact pushed files, no stalling


@pytest.mark.parametrize("strategy", ["every_save", "checkpoint"])
def test_each_push_commits_exactly_the_model_repo_files(tmp_path, online, strategy):
    out = tmp_path / "ft"
    with FakeHub() as hub:
        online(hub.endpoint)
        run("finetune", tmp_path,
            [*TINY_TRAIN, *DEMO, *SHORT, "--output_dir", str(out), "--max_steps", "2",
             "--save_strategy", "steps", "--save_steps", "1", "--push_to_hub",
             "--hub_model_id", "org/exact", "--hub_strategy", strategy]
        )  # fmt: skip
    # The checkpoint really holds the files that must not travel, so the test can fail.
    assert {"rng_state.pth", "optimizer.pt", "training_args.bin"} <= {
        p.name for p in (out / "checkpoint-2").iterdir()
    }
    by_message = {c["header"]["summary"]: set(c["files"]) for c in hub.commits}
    final = by_message.pop("Upload model from hf-cxr-mae")
    assert final == FINAL_FILES
    assert by_message, "no checkpoint was pushed"
    for message, files in by_message.items():
        assert message.startswith("Training in progress, step ")
        assert files == CHECKPOINT_FILES, message


def closed_port_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens: every request is refused at once


def test_a_failing_push_never_runs_on_the_training_thread(tmp_path, online, monkeypatch, caplog):
    """Network down, default hub_strategy (every_save): the retries (with their backoff sleeps)
    run on a background worker; the training thread only queues the push."""
    calls: list[str] = []

    class RecordingApi(hub_push.HfApi):
        def create_repo(self, *args, **kwargs):
            calls.append(threading.current_thread().name)
            return super().create_repo(*args, **kwargs)

    monkeypatch.setattr(hub_push, "HfApi", RecordingApi)
    online(closed_port_endpoint())
    out = tmp_path / "ft"
    with caplog.at_level(logging.INFO):
        run("finetune", tmp_path,
            [*TINY_TRAIN, *DEMO, *SHORT, "--output_dir", str(out), "--max_steps", "2",
             "--save_strategy", "steps", "--save_steps", "1", "--push_to_hub",
             "--hub_model_id", "org/down", "--push_retries", "1"]
        )  # fmt: skip
    assert calls, "no push was attempted"
    assert threading.main_thread().name not in calls, calls
    assert all((out / n).is_file() for n in MODEL_FILES)
    assert "local copy is intact" in caplog.text  # the outcome is logged at the end


def test_pushes_waiting_their_turn_are_coalesced_latest_wins(tmp_path, monkeypatch, caplog):
    release, started = threading.Event(), threading.Event()
    pushed: list[str] = []

    def slow_push(folder, repo_id, private, token, commit_message, retries, **kwargs):
        started.set()
        release.wait(30)
        pushed.append(commit_message)
        return "url"

    monkeypatch.setattr(hub_push, "push_folder", slow_push)
    folder = tmp_path / "m"
    folder.mkdir()
    pusher = hub_push.BackgroundPusher("org/x", None, None, 0)
    pusher.submit(folder, "first")
    assert started.wait(30)
    pusher.submit(folder, "second")  # waits its turn ...
    pusher.submit(folder, "third")  # ... and is replaced by a newer one
    start = time.monotonic()
    assert pusher.submit(folder, "fourth") is None and time.monotonic() - start < 5  # never waits
    release.set()
    assert pusher.close(timeout=30) is True
    assert pushed == ["first", "fourth"]


def test_close_gives_up_waiting_after_its_timeout_and_says_so(tmp_path, monkeypatch, caplog):
    never = threading.Event()
    monkeypatch.setattr(hub_push, "push_folder", lambda *a, **k: never.wait(60))
    pusher = hub_push.BackgroundPusher("org/x", None, None, 0)
    pusher.submit(tmp_path, "stuck")
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        assert pusher.close(timeout=0.2) is False
    never.set()
    assert "still running" in caplog.text and "local copy is intact" in caplog.text


def test_push_cli_refuses_a_missing_or_empty_folder_at_once(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("contacted the Hub for a folder with nothing to push")

    monkeypatch.setattr(hub_push.HfApi, "create_repo", no_network)
    monkeypatch.setattr(hub_push.HfApi, "upload_folder", no_network)
    with pytest.raises(SystemExit, match=r"does-not-exist.*(not exist|no such)"):
        cli(["push", str(tmp_path / "does-not-exist"), "org/x"])
    (tmp_path / "cardonly").mkdir()
    (tmp_path / "cardonly" / "README.md").write_text("# a card")
    with pytest.raises(SystemExit, match=r"cardonly.*no model files"):
        cli(["push", str(tmp_path / "cardonly"), "org/x"])
