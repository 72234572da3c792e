"""What keeps predict's outputs safe, apart from the results file's format (``prediction_file``):
a path that cannot be written (``OutputError``, named before any prediction; a full disk named
when it happens), appending whole batches only, and ``<output>.model``, the record of the model
and run settings that wrote a results file, which a resume must match."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class OutputError(OSError):
    """An output file or folder that cannot be written (full disk, read-only folder); the
    message names it and says what to do."""


def output_error(path: Path, err: OSError) -> OutputError:
    """``err`` (raised writing ``path``) as a one-line ``OutputError`` naming ``path``."""
    if err.errno in _NO_SPACE:
        text = (
            f"no space left on {path} (disk full or quota reached): the rows written before are "
            "kept; free some space and run the same command again to finish it."
        )
    else:
        text = f"cannot write {path}: {err.strerror or err}."
    error = OutputError(text)
    error.errno = err.errno
    return error


def check_writable(path: Path, flag: str, is_folder: bool = False) -> None:
    """Raise ``OutputError`` naming the folder when files cannot be created in the folder of
    ``path`` (``path`` itself with ``is_folder``), or when an existing ``path`` is read-only;
    a folder still to be made is judged by the nearest one that exists."""
    path = Path(path)
    folder = path if is_folder else path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{flag} {path}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"{flag} {path}: the folder {existing} is read-only (no permission to create files "
            "in it); name a writable one."
        )
    if not is_folder and path.is_file() and not os.access(path, os.W_OK):
        raise OutputError(f"{flag} {path}: the file is read-only; name another one.")


def append_whole(fd: int, data: bytes, path: Path) -> None:
    """``data`` at the end of the file ``fd`` (open on ``path``) and on disk, or the file as it
    was and OutputError."""
    start = os.fstat(fd).st_size
    try:
        view, done = memoryview(data), 0
        while done < len(data):
            written = os.write(fd, view[done:])
            if written <= 0:  # no progress: the file system takes no more
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += written
        os.fsync(fd)
    except OSError as err:
        try:  # half a batch (half a row) must not stay: a rerun continues from whole rows
            os.ftruncate(fd, start)
        except OSError:  # the rerun still cuts a row left half-written (drop_partial_row)
            logger.warning("%s: could not remove the rows of the batch that failed.", path)
        raise output_error(path, err) from err


def run_record(model, fast: bool) -> str:
    """What ``<output>.model`` holds, one ``key: value`` a line: ``weights`` (their fingerprint,
    see ``predict._identity``) and ``run`` (backend and precision), which a resume must match,
    then ``model`` (the folder or graph; informative: a byte-identical copy of it resumes)."""
    from .predict import _identity, is_onnx

    if is_onnx(model):
        from .onnx_runtime import files_sha256

        where = Path(model.path).resolve()
        weights, run = f"sha256:{files_sha256([where])}", f"ONNX Runtime {model.variant}"
    else:
        identity = _identity(model)
        where, found, digest = identity.rpartition(" sha256:")
        if identity.startswith("in-memory "):
            weights, where = identity, "in memory"
        elif found:
            weights = f"sha256:{digest}"
        else:  # a Hub id, or a folder without weights files: its name is all there is
            weights = where = identity
        run = "float32 (--no_fast)"
        if fast:
            from .inference import native_bf16

            device = next(model.parameters()).device
            run = f"fast path, {'bfloat16' if native_bf16(device) else 'float32'}"
    return f"weights: {weights}\nrun: {run}\nmodel: {where}"


def _fields(record: str) -> dict[str, str]:
    """``key: value`` lines of a ``<output>.model`` record (``run_record``); an older
    one-line record (folder and fingerprint, no run settings) has no ``run``."""
    lines = record.strip().splitlines()
    if len(lines) == 1 and not lines[0].startswith("weights: "):  # "<folder> sha256:<digest>"
        where, found, digest = lines[0].rpartition(" sha256:")
        if found and not where.startswith("in-memory "):
            return {"weights": f"sha256:{digest}", "model": where}
        return {"weights": lines[0]}
    return dict(line.partition(": ")[::2] for line in lines)


def record_difference(previous: str, identity: str) -> str | None:
    """What differs between the record of a file's rows and this run, in words; None when the
    rows may be resumed: same weights and same run settings (the folder is informative only)."""
    before, now = _fields(previous), _fields(identity)
    if before.get("weights") != now.get("weights"):
        return (
            f"predictions of another model ({before.get('weights')} from "
            f"{before.get('model', 'an older record')}), not of {now.get('weights')} from "
            f"{now.get('model')}"
        )
    if "run" not in before:
        return (
            f"predictions of this model from an older hf-cxr-mae that did not record how it ran "
            f"(now: {now.get('run')}), so mixing cannot be ruled out"
        )
    if before.get("run") != now.get("run"):
        return (
            f"predictions of this model run otherwise (run: {before.get('run', 'not recorded')}"
            f" then, {now.get('run')} now): one file would mix both; rerun with the first "
            "run's settings (--no_fast / the default fast path, the same --backend)"
        )
    return None
