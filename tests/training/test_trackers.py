"""Curves you can watch: a tiny pre-training and fine-tuning run with ``--report_to
tensorboard,trackio``, read back from TensorBoard's event files and trackio's local store and
compared with the Trainer's own log history and the preview PNGs."""

import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TESTS_DIR, TINY, skip_or_fail_in_ci
from PIL import Image
from transformers import TrainerControl, TrainerState

from hf_cxr_mae.training import run_setup
from hf_cxr_mae.training.arguments import PretrainArguments
from hf_cxr_mae.training.callbacks import PREVIEW_TAG, ReconstructionPreviewCallback

TESTS = TESTS_DIR


TRACKERS = ("tensorboard", "trackio")


INSTALLED = [t for t in TRACKERS if importlib.util.find_spec(t) is not None]


# The scalars each training log carries, under the names the trackers show.
TRAIN_SCALARS = ("loss", "learning_rate", "grad_norm", "images_per_second", "mask_ratio")


PREVIEW_EVERY, STEPS = 3, 4  # previews at step 3 (mid-run) and 4 (the end of training only)


# Runs in a child process: trackio reads TRACKIO_DIR once, when first imported, so only a fresh
# interpreter can be pointed at the test's folder. It dumps trackio's logs back through its API.
CHILD = textwrap.dedent(
    """
    import json, sys
    from recipe_utils import TINY_TRAIN, recipe

    out, report_to, steps, preview_steps = sys.argv[1:]
    train = [*TINY_TRAIN, "--demo_size", "48", "--max_eval_samples", "32",
             "--pixel_cache", "false", "--max_steps", steps]
    train[train.index("--report_to") + 1] = report_to
    recipe("pretrain").main([*train, "--output_dir", f"{out}/mae", "--eval_strategy", "no",
                             "--preview_steps", preview_steps])
    recipe("finetune").main([*train, "--model_name_or_path", f"{out}/mae",
                             "--output_dir", f"{out}/ft", "--eval_strategy", "steps",
                             "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
                             "--bootstrap_resamples", "0"])
    if "trackio" in report_to:
        import trackio
        from trackio.sqlite_storage import SQLiteStorage

        trackio.finish()  # flushes the run the final evaluation re-opened
        logs = {run: SQLiteStorage.get_logs("hf-cxr-mae", run)
                for run in SQLiteStorage.get_runs("hf-cxr-mae")}
        dump = {"logs": logs, "media_dir": str(trackio.utils.MEDIA_DIR),
                "space_id": SQLiteStorage.get_space_id("hf-cxr-mae")}
        open(f"{out}/trackio_logs.json", "w").write(json.dumps(dump, default=str))
    """
)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """Both recipes run once, reporting to every installed tracker, from an empty working folder
    with trackio's store in the test's folder and no route to a Space or a server."""
    if not INSTALLED:
        skip_or_fail_in_ci("neither tensorboard nor trackio is installed")
    root = tmp_path_factory.mktemp("tracked")
    cwd = root / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKIO_", "TENSORBOARD_"))}
    env |= {
        "TRACKIO_DIR": str(root / "trackio"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(root),
            ",".join(INSTALLED),
            str(STEPS),
            str(PREVIEW_EVERY),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return root


def need(tracker: str) -> None:
    if tracker not in INSTALLED:
        skip_or_fail_in_ci(f"{tracker} is not installed (pip install 'hf-cxr-mae[{tracker}]')")


def log_history(run: Path) -> list[dict]:
    """The Trainer's own log history, from the run's last checkpoint."""
    last = max(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return json.loads((last / "trainer_state.json").read_text())["log_history"]


Curves = dict[str, list[tuple[int, float]]]  # name: (step, value) in the order logged


def expected_curves(history: list[dict]) -> Curves:
    """Each training and evaluation scalar the Trainer logged during training, named as
    transformers' trackers name them (``train/``, ``eval/``)."""
    curves: Curves = {}
    for entry in history:
        is_eval = any(k.startswith("eval_") for k in entry)
        for key, value in entry.items():
            if key in ("step", "epoch") or not isinstance(value, (int, float)):
                continue
            if is_eval:
                name = "eval/" + key.removeprefix("eval_")
            elif "loss" in entry:
                name = "train/" + key
            else:
                continue  # the end-of-training summary (train_runtime, ...)
            curves.setdefault(name, []).append((entry["step"], value))
    return curves


def preview_pixels(run: Path, step: int) -> np.ndarray:
    with Image.open(run / "previews" / f"step-{step:07d}.png") as image:
        return np.asarray(image.convert("RGB"))


def decoded(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def tensorboard_events(run: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    folders = sorted((run / "runs").iterdir())
    assert len(folders) == 1, folders  # under output_dir/runs, one folder per launch
    events = ea.EventAccumulator(str(folders[0]), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
    events.Reload()
    return events


def tensorboard_curves(events) -> Curves:
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def check_curves(seen: Curves, history: list[dict], names) -> None:
    """Each named curve starts with the Trainer's values at the Trainer's steps (evaluations
    after training may follow)."""
    expected = expected_curves(history)
    for name in names:
        assert name in seen, f"{name} missing; the tracker has {sorted(seen)}"
        want, got = expected[name], seen[name][: len(expected[name])]
        assert [s for s, _ in got] == [s for s, _ in want], (name, seen[name], want)
        # TensorBoard stores float32.
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6, abs=1e-9), name


def all_results(run: Path) -> dict:
    return json.loads((run / "all_results.json").read_text())


def check_pretraining(curves: Curves, run: Path) -> None:
    history = log_history(run)
    check_curves(curves, history, [f"train/{k}" for k in TRAIN_SCALARS])
    assert [s for s, _ in curves["train/loss"]] == list(range(1, STEPS + 1))
    # The held-out loss, evaluated after training, at the last step.
    assert curves["eval/loss"] == [(STEPS, pytest.approx(all_results(run)["eval_loss"]))]


def check_finetuning(curves: Curves, run: Path) -> None:
    findings = sorted(k for k in curves if k.startswith("eval/auroc_"))
    assert len(findings) == 4, findings  # the demo's four findings
    history = log_history(run)
    check_curves(curves, history, ["train/loss", "train/grad_norm", "eval/mauc", *findings])
    # Validation at steps 2 and 4, then once more after training (the model kept), then test.
    results = all_results(run)
    assert curves["eval/mauc"][2:] == [(STEPS, pytest.approx(results["eval_mauc"]))]
    assert curves["test/mauc"] == [(STEPS, pytest.approx(results["test_mauc"]))]
    for finding in findings:
        name = finding.removeprefix("eval/")
        assert curves[f"test/{name}"] == [(STEPS, pytest.approx(results[f"test_{name}"]))]


def test_tensorboard_pretraining_curves_and_previews(tracked):
    need("tensorboard")
    run = tracked / "mae"
    events = tensorboard_events(run)
    check_pretraining(tensorboard_curves(events), run)
    # Each preview grid, at its step, is the PNG written beside the checkpoints; the last one
    # is written at the end of training, as TensorBoard's writer closes.
    images = events.Images(PREVIEW_TAG)
    assert [i.step for i in images] == [PREVIEW_EVERY, STEPS]
    for image in images:
        np.testing.assert_array_equal(
            decoded(image.encoded_image_string), preview_pixels(run, image.step)
        )


def test_tensorboard_finetuning_metrics_per_finding(tracked):
    need("tensorboard")
    run = tracked / "ft"
    events = tensorboard_events(run)
    check_finetuning(tensorboard_curves(events), run)
    assert PREVIEW_TAG not in events.Tags()["images"]  # previews belong to MAE pre-training


def trackio_runs(tracked: Path) -> tuple[dict[str, list[dict]], Path]:
    dump = json.loads((tracked / "trackio_logs.json").read_text())
    return dump["logs"], Path(dump["media_dir"])


def trackio_curves(logs: list[dict]) -> Curves:
    """trackio's own step counts log calls: the Trainer's step travels beside each entry as
    ``train/global_step`` (the prediction's metrics, logged without it, are left out)."""
    curves: Curves = {}
    for entry in logs:
        step = entry.get("train/global_step")
        for key, value in entry.items():
            if isinstance(value, (int, float)) and step is not None and key != "step":
                curves.setdefault(key, []).append((step, value))
    return curves


def test_trackio_pretraining_curves_and_previews(tracked):
    need("trackio")
    runs, media = trackio_runs(tracked)
    # One run per output folder, named after it: the evaluation after training re-opens it.
    assert sorted(runs) == ["ft", "mae"]
    assert media == tracked / "trackio" / "media"
    run = tracked / "mae"
    check_pretraining(trackio_curves(runs["mae"]), run)
    previews = [e for e in runs["mae"] if PREVIEW_TAG in e]
    assert [e["train/global_step"] for e in previews] == [PREVIEW_EVERY, STEPS]
    for entry in previews:
        image, step = entry[PREVIEW_TAG], entry["train/global_step"]
        assert image["_type"] == "trackio.image" and image["caption"] == f"step {step}"
        stored = (media / image["file_path"]).resolve()
        assert stored.is_relative_to(media.resolve())  # inside trackio's own folder
        np.testing.assert_array_equal(decoded(stored.read_bytes()), preview_pixels(run, step))


def test_trackio_finetuning_metrics_per_finding(tracked):
    need("trackio")
    runs, _ = trackio_runs(tracked)
    check_finetuning(trackio_curves(runs["ft"]), tracked / "ft")
    assert not any(PREVIEW_TAG in e for e in runs["ft"])


def test_trackers_write_only_where_they_should(tracked):
    """TensorBoard under output_dir/runs, trackio under TRACKIO_DIR: nothing in the working
    folder (no stray ./runs) and no Space or server named anywhere in trackio's logs."""
    assert not any((tracked / "cwd").iterdir()), list((tracked / "cwd").iterdir())
    if "tensorboard" in INSTALLED:
        for run in ("mae", "ft"):
            assert any((tracked / run / "runs").rglob("events.out.tfevents.*")), run
    if "trackio" in INSTALLED:
        assert (tracked / "trackio" / "hf-cxr-mae.db").is_file()
        assert json.loads((tracked / "trackio_logs.json").read_text())["space_id"] is None
        assert not (tracked / "mae" / str(STEPS)).exists()  # media never beside the model


def args(tmp_path, report_to, **kw) -> PretrainArguments:
    return PretrainArguments(
        output_dir=str(tmp_path / "run"), report_to=report_to, use_cpu=True, bf16=False, **kw
    )


def test_report_to_takes_several_trackers_and_names_the_run(tmp_path):
    for tracker in TRACKERS:
        need(tracker)
    given = args(tmp_path, "tensorboard, trackio")
    run_setup.setup_trackers(given)
    assert given.report_to == ["tensorboard", "trackio"]
    assert given.run_name == "run" and given.project == "hf-cxr-mae"
    chosen = args(tmp_path, "none", run_name="mine", project="theirs")
    run_setup.setup_trackers(chosen)
    assert (chosen.report_to, chosen.run_name, chosen.project) == ([], "mine", "theirs")


@pytest.mark.parametrize("tracker, modules", [("tensorboard", ["tensorboard", "tensorboardX"]),
                                              ("trackio", ["trackio"])])  # fmt: skip
def test_a_missing_tracker_is_refused_before_any_data_is_read(
    tmp_path, monkeypatch, tracker, modules
):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ImportError, match=rf"pip install 'hf-cxr-mae\[{tracker}\]'"):
        run_setup.setup_trackers(args(tmp_path, tracker))
    run_setup.setup_trackers(args(tmp_path, "none"))  # a run without trackers never needs them


def test_an_unknown_tracker_names_the_close_one(tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'tensorboard'"):
        run_setup.setup_trackers(args(tmp_path, "tensorbord"))


class _Writer:
    """Stands in for TensorBoard's SummaryWriter: records what it is given."""

    def __init__(self) -> None:
        self.images: list[tuple[str, tuple, int, str]] = []

    def add_image(self, tag, pixels, step, dataformats):
        self.images.append((tag, np.asarray(pixels).shape, step, dataformats))

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("rank_zero", [True, False])
def test_previews_come_from_the_main_process_only(tmp_path, rank_zero):
    """Under DDP every rank runs the callbacks: only the main one writes a grid or reports it."""
    need("tensorboard")
    from transformers.integrations import TensorBoardCallback

    from hf_cxr_mae.configuration import CXRMAEConfig
    from hf_cxr_mae.modeling import CXRMAEForPreTraining

    config = CXRMAEConfig.from_preset(TINY)
    model = CXRMAEForPreTraining(config).eval()
    pixels = torch.randn(2, 3, config.image_size, config.image_size)
    preview = ReconstructionPreviewCallback(pixels, str(tmp_path))
    writer = _Writer()
    preview.trackers = [TensorBoardCallback(tb_writer=writer)]
    state = TrainerState(global_step=7, is_world_process_zero=rank_zero)
    preview.on_train_end(None, state, TrainerControl(), model=model)
    preview.on_train_end(None, state, TrainerControl(), model=model)  # same step: once
    written = sorted(p.name for p in tmp_path.glob("previews/*.png"))
    if rank_zero:
        assert written == ["step-0000007.png"]
        assert [(tag, step) for tag, _, step, _ in writer.images] == [(PREVIEW_TAG, 7)]
    else:
        assert written == [] and writer.images == []
