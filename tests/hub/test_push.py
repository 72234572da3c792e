"""Pushing to the Hub (``hf_cxr_mae.hub``, against a local fake Hub): each commit holds
exactly the files a model repo needs, no file we write holds the token, retries after server
errors, and an outage never stalls or stops training (pushes run on a background worker,
coalesced, with a timeout on close)."""

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from helpers import run_recipe_from_flags
from hub_server import FakeHub
from recipe_utils import TINY_TRAIN, recipe

import hf_cxr_mae.hub as hub_push
from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.hub import push_folder


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def use(hub):
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)

    return use


def test_push_sends_the_model_files_only(trained, online):
    (trained / "ft" / "secrets.txt").write_text("hf_token")
    with FakeHub() as hub:
        online(hub)
        url = push_folder(trained / "ft", "org/cxr-vit", token="hf_notreal", backoff=0.01)
    assert url and url.endswith("a" * 40)
    files = set(hub.commits[0]["files"])
    assert files == {
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "training_args.json",
        "metrics.json",
        "all_results.json",
        "report.md",  # the test report, with its figures
        "roc.png",
        "reliability.png",
        "subgroups.png",
    }
    for name in ("config.json", "training_args.json", "README.md"):
        text = hub.commits[0]["files"][name].decode()
        assert "hf_notreal" not in text and str(trained) not in text, name


def test_push_retries_after_server_errors(trained, online):
    with FakeHub(fail_first=2) as hub:
        online(hub)
        url = push_folder(trained / "ft", "org/cxr-vit", backoff=0.01)
    assert url and url.endswith("a" * 40)  # the commit made after the two failures
    assert sum(path.startswith("/api/repos/create") for _, path in hub.requests) == 3
    assert len(hub.commits) == 1


def test_a_hub_outage_never_stops_training(trained, online, tmp_path, caplog):
    out = tmp_path / "ft"
    with FakeHub(always_fail=True) as hub:
        online(hub)
        metrics = recipe("finetune").main(
            [*TINY_TRAIN, "--demo_size", "48", "--max_eval_samples", "32", "--pixel_cache", "false", "--model_name_or_path", str(trained / "mae"),
             "--output_dir", str(out), "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "1",
             "--load_best_model_at_end", "false", "--push_to_hub", "--hub_model_id", "org/never", "--push_retries", "1"]
        )  # fmt: skip
    # Training went on to the end: the test split was scored and its report written.
    assert metrics["test_mauc"] == pytest.approx(
        json.loads((out / "metrics.json").read_text())["mauc"], abs=1e-6
    )
    assert (out / "model.safetensors").is_file() and (
        out / "checkpoint-2" / "model.safetensors"
    ).is_file()
    assert "failed" in caplog.text and "local copy is intact" in caplog.text
    assert any("/commit/" in path or "/repos/create" in path for _, path in hub.requests)


def test_hub_strategy_every_save_pushes_each_checkpoint(trained, online, tmp_path):
    with FakeHub() as hub:
        online(hub)
        recipe("finetune").main(
            [*TINY_TRAIN, "--demo_size", "48", "--max_eval_samples", "16", "--pixel_cache", "false", "--model_name_or_path", str(trained / "mae"),
             "--output_dir", str(tmp_path / "ft"), "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "1",
             "--load_best_model_at_end", "false", "--push_to_hub", "--hub_model_id", "org/live", "--hub_strategy", "every_save"]
        )  # fmt: skip
    messages = [c["header"]["summary"] for c in hub.commits]
    assert messages == [
        "Training in progress, step 1",
        "Training in progress, step 2",
        "Upload model from hf-cxr-mae",
    ]
    assert (
        "model.safetensors" in hub.commits[0]["files"]
        and "optimizer.pt" not in hub.commits[0]["files"]
    )
    assert {"README.md", "example.png"} <= set(hub.commits[-1]["files"])


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


@pytest.fixture
def online_endpoint(monkeypatch):
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
def test_no_file_we_write_holds_the_hub_token(tmp_path, online_endpoint, monkeypatch, source):
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
        online_endpoint(hub.endpoint)
        run_recipe_from_flags("finetune", tmp_path,
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


@pytest.mark.parametrize("strategy", ["every_save", "checkpoint"])
def test_each_push_commits_exactly_the_model_repo_files(tmp_path, online_endpoint, strategy):
    out = tmp_path / "ft"
    with FakeHub() as hub:
        online_endpoint(hub.endpoint)
        run_recipe_from_flags("finetune", tmp_path,
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


def test_a_failing_push_never_runs_on_the_training_thread(tmp_path, online_endpoint, monkeypatch, caplog):
    """Network down, default hub_strategy (every_save): the retries (with their backoff sleeps)
    run on a background worker; the training thread only queues the push."""
    calls: list[str] = []

    class RecordingApi(hub_push.HfApi):
        def create_repo(self, *args, **kwargs):
            calls.append(threading.current_thread().name)
            return super().create_repo(*args, **kwargs)

    monkeypatch.setattr(hub_push, "HfApi", RecordingApi)
    online_endpoint(closed_port_endpoint())
    out = tmp_path / "ft"
    with caplog.at_level(logging.INFO):
        run_recipe_from_flags("finetune", tmp_path,
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
