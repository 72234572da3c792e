"""A disk that fills up while a checkpoint is saved: the run stops with "No space left on
<checkpoint folder>" instead of the writer's own error (torch.save's zip writer says only
"unexpected pos ..."), the earlier checkpoints are untouched, auto-resume passes over the
half-written one, and a rerun with space again ends exactly as an uninterrupted run."""

import errno
import io
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from helpers import assert_same_weights, tiny_run
from safetensors import SafetensorError

from hf_cxr_mae.checkpoint_files import checkpoint_problem
from hf_cxr_mae.training.trainer import last_complete_checkpoint

SETTINGS = {"auto_augment": "", "save_total_limit": 3}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """A finished tiny run keeping checkpoint-3 and checkpoint-6."""
    root = tmp_path_factory.mktemp("uninterrupted")
    tiny_run(root, root / "run", **SETTINGS)
    return root / "run"


def fill_disk_at_checkpoint_6(monkeypatch, error: Exception) -> None:
    """torch.save writes half of checkpoint-6's optimizer.pt, then fails with ``error``."""
    save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        if not str(f).endswith("checkpoint-6/optimizer.pt"):
            return save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        Path(f).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise error

    monkeypatch.setattr(torch, "save", half_then_fail)


def test_a_full_disk_mid_checkpoint_stops_in_words_and_the_rerun_resumes_exactly(
    uninterrupted, tmp_path, monkeypatch, caplog
):
    out = tmp_path / "run"
    fill_disk_at_checkpoint_6(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError, match="No space left on ") as info:
        tiny_run(tmp_path, out, **SETTINGS)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value).startswith(f"[Errno 28] No space left on {out / 'checkpoint-6'}: ")
    monkeypatch.undo()
    # The earlier checkpoint is whole and the same as the uninterrupted run's.
    assert checkpoint_problem(out / "checkpoint-3") is None
    assert_same_weights(uninterrupted / "checkpoint-3", out / "checkpoint-3")
    with caplog.at_level("WARNING"):
        assert last_complete_checkpoint(out) == str(out / "checkpoint-3")
    assert f"Skipping checkpoint {out / 'checkpoint-6'}: no trainer_state.json" in caplog.text
    tiny_run(tmp_path, out, **SETTINGS)  # space again: resumes from checkpoint-3
    assert_same_weights(uninterrupted, out)


Usage = namedtuple("Usage", "total used free")
# What the writers really raise on a full disk (checked on a 1.6 MB tmpfs): safetensors names
# the OS error; torch.save's zip writer does not, so there the free space tells.
WRITER_ERRORS = {
    "safetensors": (SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"), 10**9),
    "torch zip writer": (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), 0),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(WRITER_ERRORS))
def test_each_writers_full_disk_error_is_recognised(tmp_path, monkeypatch, case):
    from hf_cxr_mae.training.saving import checkpoint_save

    error, free = WRITER_ERRORS[case]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - free, free))
    folder = tmp_path / "checkpoint-6"
    folder.mkdir()
    (folder / "trainer_state.json").write_text("{}")  # an older save's, in a reused folder
    with pytest.raises(OSError) as info, checkpoint_save(folder):
        raise error
    assert info.value.errno == errno.ENOSPC and info.value.__cause__ is error
    assert info.value.strerror == (
        f"No space left on {folder}: saving this checkpoint failed ({error}). It is incomplete and "
        f"a rerun skips it, resuming from the last complete checkpoint in {tmp_path}. Free space "
        "(or keep fewer checkpoints: --save_total_limit), then run again."
    )
    assert checkpoint_problem(folder) == "no trainer_state.json (interrupted while saving)"


def test_another_save_error_is_left_as_it_is(tmp_path):
    """Only a full disk is reworded, and only then is the checkpoint marked incomplete."""
    from hf_cxr_mae.training.saving import checkpoint_save

    folder = tmp_path / "checkpoint-6"
    folder.mkdir()
    (folder / "trainer_state.json").write_text("{}")
    error = PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(PermissionError) as info, checkpoint_save(folder):
        raise error
    assert info.value is error and (folder / "trainer_state.json").is_file()
