"""Saving a checkpoint on a disk that may fill up: a half-written checkpoint is marked so that
auto-resume passes it over, and the error says so in words (used by ``CXRTrainer`` and the
callbacks that write into checkpoints)."""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

# How a full disk (or quota) shows: OSError's errno; safetensors' "... (os error 28)"; torch.save's
# zip writer only says "unexpected pos ..." or "file write failed", so there the free space tells.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_WORDS = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")
_NEARLY_FULL = 1 << 20  # bytes free


def _disk_is_full(err: BaseException, folder: Path) -> bool:
    if getattr(err, "errno", None) in _DISK_FULL or any(w in str(err) for w in _DISK_FULL_WORDS):
        return True
    try:
        return shutil.disk_usage(folder if folder.exists() else folder.parent).free < _NEARLY_FULL
    except OSError:
        return False


@contextlib.contextmanager
def checkpoint_save(folder: Path) -> Iterator[None]:
    """Around the writing of checkpoint ``folder``: when the disk fills up, its
    ``trainer_state.json`` is removed, so that auto-resume skips the half-written checkpoint
    (``checkpoint_problem``: "no trainer_state.json") for the last complete one, and the error
    names the folder in words instead of the writer's own ("unexpected pos 576 vs 534")."""
    try:
        yield
    except Exception as err:
        if not _disk_is_full(err, folder):
            raise
        with contextlib.suppress(OSError):
            (folder / "trainer_state.json").unlink(missing_ok=True)
        raise OSError(
            errno.ENOSPC,
            f"No space left on {folder}: saving this checkpoint failed ({err}). It is incomplete "
            f"and a rerun skips it, resuming from the last complete checkpoint in {folder.parent}. "
            "Free space (or keep fewer checkpoints: --save_total_limit), then run again.",
        ) from err
