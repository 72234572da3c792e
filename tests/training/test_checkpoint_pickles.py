"""A checkpoint file holding a pickle that torch's safe loader refuses (a global such as
``os.system``, planted or from another tool) is a damaged checkpoint: auto-resume skips it with a
warning naming the file and why, and resumes from the previous good one, as the README promises;
``convert`` names such a file the same way instead of calling it corrupt. No payload ever runs."""

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers import assert_same_weights, tiny_run
from safetensors.torch import save_file

from hf_cxr_mae.checkpoint_files import checkpoint_problem
from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.training.trainer import last_complete_checkpoint

SYSTEM = f"{os.system.__module__}.system"  # posix.system here


class Payload:
    """Unpickled, it runs a shell command that leaves ``marker``: its absence proves it never ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def refusal(path: Path) -> str:
    return (
        f"{path}: a pickle the safe loader refuses (global {SYSTEM}): unpickling it could run code"
    )


def resumable(folder: Path) -> Path:
    """The files a Trainer checkpoint holds, small and honest (the RNG file with NumPy's state,
    which the Trainer's safe loader allows)."""
    import numpy as np

    folder.mkdir()
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    save_file({"a": torch.zeros(4)}, folder / "model.safetensors")
    torch.save({"state": {0: {"exp_avg": torch.zeros(8)}}}, folder / "optimizer.pt")
    torch.save({"last_epoch": 3}, folder / "scheduler.pt")
    rng = {"cpu": torch.get_rng_state(), "numpy": np.random.get_state()}
    torch.save(rng, folder / "rng_state.pth")
    return folder


PLANT = {
    "torch.save archive": lambda payload, path: torch.save({"state": payload}, path),
    "bare pickle": lambda payload, path: path.write_bytes(pickle.dumps(payload, protocol=2)),
}


@pytest.mark.parametrize("how", sorted(PLANT))
@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_a_pickle_the_safe_loader_refuses_makes_the_checkpoint_damaged(tmp_path, name, how):
    folder = resumable(tmp_path / "checkpoint-3")
    assert checkpoint_problem(folder) is None
    marker = tmp_path / "payload-ran"
    PLANT[how](Payload(marker), folder / name)
    assert checkpoint_problem(folder) == refusal(folder / name)
    assert not marker.exists()


def test_convert_names_a_bare_pickle_by_the_global_it_refuses(tmp_path):
    source, marker = tmp_path / "vit-s_CXR_0.3M_mae.pth", tmp_path / "payload-ran"
    source.write_bytes(pickle.dumps({"model": Payload(marker)}, protocol=2))
    with pytest.raises(SystemExit) as info:
        cli(["convert", str(source), str(tmp_path / "out")])
    assert str(info.value) == f"convert: {refusal(source)}"
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """A finished tiny run keeping checkpoint-3 and checkpoint-6."""
    root = tmp_path_factory.mktemp("uninterrupted")
    tiny_run(root, root / "run", auto_augment="", save_total_limit=3)
    return root / "run"


def test_auto_resume_falls_back_past_a_refused_pickle_and_ends_as_uninterrupted(
    uninterrupted, tmp_path, caplog
):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    for path in out.iterdir():  # a run stopped after saving checkpoint-6
        if path.is_file():
            path.unlink()
    marker = tmp_path / "payload-ran"
    poisoned = out / "checkpoint-6" / "optimizer.pt"
    torch.save({"state": Payload(marker)}, poisoned)
    with caplog.at_level("WARNING"):
        assert last_complete_checkpoint(out) == str(out / "checkpoint-3")
    skipped = [r.getMessage() for r in caplog.records if "Skipping checkpoint" in r.getMessage()]
    assert skipped == [
        f"Skipping checkpoint {out / 'checkpoint-6'}: {refusal(poisoned)}. Trying an older one."
    ]
    tiny_run(tmp_path, out, auto_augment="", save_total_limit=3)  # resumes from checkpoint-3
    assert_same_weights(uninterrupted, out)
    assert not marker.exists()
