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


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
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
