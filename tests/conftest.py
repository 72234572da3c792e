import os

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path

import pytest
import torch

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
        cwd=test_file.parents[1], env=full, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr
