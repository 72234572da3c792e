import os

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    ABC_LABELS,
    THREE_FINDINGS,
    TWO_FINDINGS,
    save_classifier,
    textured_grey,
    tiny_classifier,
)
from PIL import Image
from recipe_utils import TINY_TRAIN, recipe

TESTS_DIR = Path(__file__).resolve().parent  # tests/ (support scripts live here)
REPO_ROOT = TESTS_DIR.parent

SHARED_DATA = Path(
    os.environ.get("CXR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
NIH_SAMPLE = SHARED_DATA / "nih-cxr14-sample"
TINY = "vit-test-patch8-dec32d1b"


IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip with ``reason`` on a developer machine; fail under ``CI=true``, where a silently
    skipped test would let a run without the data (or the browser) look green."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}: CI must run this test, not skip it", pytrace=False)
    pytest.skip(reason)


def _require(path: Path) -> Path:
    if not path.exists():
        skip_or_fail_in_ci(
            f"real data not found at {path} (set CXR_SHARED_DATA to the shared data folder)"
        )
    return path


@pytest.fixture
def nih_dir() -> Path:
    return _require(NIH_SAMPLE)


@pytest.fixture
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def run_pytest_alone(test_file: Path, name: str, env: dict[str, str]) -> tuple[int, str]:
    """Run one test of ``test_file`` (selected with ``-k name``) in a fresh pytest process with
    ``env`` on top of ours (``CI`` removed unless given): its exit code and output."""
    import subprocess
    import sys

    full = {k: v for k, v in os.environ.items() if k != "CI"} | env
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(test_file), "-k", name],
        cwd=REPO_ROOT, env=full, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    """Two classifiers with the same findings and backbone but different heads."""
    folder = tmp_path_factory.mktemp("models")
    a = save_classifier(tiny_classifier(TWO_FINDINGS), folder / "a")
    b = save_classifier(tiny_classifier(TWO_FINDINGS, head_std=3.0), folder / "b")
    return a, b


@pytest.fixture(scope="module")
def exported_in_place(tmp_path_factory) -> Path:
    """A fine-tuned folder exported into itself (``hf-cxr-mae export F F``): weights, config,
    processor and onnx/model.onnx side by side."""
    from hf_cxr_mae.serving.export import export_onnx

    folder = save_classifier(tiny_classifier(THREE_FINDINGS), tmp_path_factory.mktemp("inplace"))
    export_onnx(folder, folder)
    return folder


@pytest.fixture(scope="module")
def textured_pngs(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    paths = [folder / f"{i}.png" for i in range(3)]
    for i, path in enumerate(paths):
        Image.fromarray(textured_grey(rng, period=7.0 + 3 * i)).save(path)
    return paths


@pytest.fixture
def twelve_nih_test_images(nih_dir):
    from hf_cxr_mae.data import load_cxr_dataset

    return load_cxr_dataset("nih14", nih_dir, image_dir="images")["test"].select(range(12))


@pytest.fixture
def four_pngs(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    return tmp_path


@pytest.fixture
def paper_split(shared_data) -> Path:
    folder = shared_data / "nih-paper-split"
    if not folder.is_dir():
        skip_or_fail_in_ci(f"the paper's split files are not at {folder}")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub_runs")
    demo = ["--demo_size", "48", "--max_eval_samples", "32", "--pixel_cache", "false"]
    recipe("pretrain").main(
        [
            *TINY_TRAIN,
            *demo,
            "--output_dir",
            str(root / "mae"),
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
        ]
    )
    recipe("finetune").main(
        [
            *TINY_TRAIN,
            *demo,
            "--model_name_or_path",
            str(root / "mae"),
            "--output_dir",
            str(root / "ft"),
            "--max_steps",
            "2",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "steps",
            "--save_steps",
            "2",
            "--load_best_model_at_end",
            "false",
            "--blr",
            "1e-3",
        ]
    )
    return root


@pytest.fixture(scope="module")
def flagged_classifier_dir(tmp_path_factory):
    # Operating points as the clinical post-processing stores them.
    points = {
        "method": "youden",
        "target": None,
        "fitted_on": "validation",
        "thresholds": {"A": 0.5, "B": 0.3, "C": None},
    }
    model = tiny_classifier(ABC_LABELS, operating_points=points)
    return save_classifier(model, tmp_path_factory.mktemp("classifier"))


@pytest.fixture(scope="module")
def pngs_with_a_broken_one(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(24):
        pixels = rng.integers(0, 256, (70 + i, 64), np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
    (folder / "img05.png").write_bytes(b"\x89PNG truncated")  # unreadable, in the middle
    return sorted(folder.glob("*.png"))


@pytest.fixture(scope="module")
def nih_models(tmp_path_factory):
    _require(NIH_SAMPLE)  # skips, or fails under CI=true, when the shared data is missing
    root = tmp_path_factory.mktemp("nih_models")
    data = [
        "--dataset",
        "nih14",
        "--data_dir",
        str(NIH_SAMPLE),
        "--image_dir",
        "images",
        "--cache_dir",
        str(root / "cache"),
        "--cache_size",
        "80",
    ]
    mae, ft = root / "mae", root / "ft"
    recipe("pretrain").main(
        [
            *TINY_TRAIN,
            *data,
            "--output_dir",
            str(mae),
            "--max_steps",
            "2",
            "--max_train_samples",
            "32",
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
        ]
    )
    recipe("finetune").main(
        [
            *TINY_TRAIN,
            *data,
            "--model_name_or_path",
            str(mae),
            "--output_dir",
            str(ft),
            "--max_steps",
            "2",
            "--max_train_samples",
            "32",
            "--max_eval_samples",
            "8",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
        ]
    )
    # Two steps leave the head near zero (every probability ~0.5); spread it out so a finding's
    # number tells it apart from the others (a label-order mix-up would then show).
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(ft)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    model.save_pretrained(ft)
    return {"mae": mae, "ft": ft, "data": data, "root": root}
