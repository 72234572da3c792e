"""Checkpoint files read without trusting them, for conversion and resume alike (this module
imports neither training nor serving code): what a file is, read from its content (not its
suffix); whether the tensor sizes it declares fit in it, checked before ``torch.load`` /
safetensors allocate anything, so a small file that claims terabytes is refused in words instead
of exhausting memory; whether its archive is intact; and whether a Trainer checkpoint folder holds
every file a resume reads.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .pickle_scan import StorageScanner, declared_bytes


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names it and says why, in words."""


_SAFETENSORS_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
    "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
# Leading bytes of formats people mistake for checkpoints.
_MAGIC = [
    (b"version https://git-lfs", "a Git LFS pointer, not the weights (run `git lfs pull`)"),
    (b"\x89HDF", "an HDF5 file (Keras / TensorFlow weights?)"),
    (b"\x93NUMPY", "a NumPy array file"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "a gzip archive (unpack it first)"),
]


def _human(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def describe_file(head: bytes) -> str:
    """What a non-checkpoint file looks like, from its first bytes."""
    if not head:
        return "it is empty"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"looks like {what}"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "looks like an HTML page (a download that returned a web page?)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and sum(c.isprintable() or c in "\r\n\t" for c in text) >= 0.95 * len(text):
        first = text.strip().splitlines()[0][:60] if text.strip() else ""
        return f"looks like text (begins {first!r})"
    return f"unknown binary format (begins {head[:8].hex(' ')})"


def _is_safetensors(head: bytes, size: int) -> bool:
    """Whether a file's first bytes are a safetensors header: a length that fits, then JSON."""
    length = int.from_bytes(head[:8], "little")
    return len(head) > 8 and 2 <= length <= size - 8 and head[8:9] == b"{"


def check_safetensors(path: Path) -> None:
    """The header parses; each tensor's shape and dtype fill exactly its byte range; the ranges
    tile the data after the header, as safetensors demands (no gap, overlap or padding). Raises
    ``CheckpointError`` saying what is wrong."""
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: a safetensors file truncated to {size} bytes.")
        length = int.from_bytes(prefix, "little")
        if length > size - 8:
            raise CheckpointError(
                f"{path}: a safetensors file truncated inside its header (header of {length} "
                f"bytes, file of {size})."
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise CheckpointError(
            f"{path}: a safetensors file with a corrupt header ({type(err).__name__}: {err})."
        ) from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: a safetensors file whose header is not a JSON object.")
    data_size, spans = size - 8 - length, []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, (begin, end) = info["dtype"], info["data_offsets"]
            shape = [int(d) for d in info["shape"]]
            if not isinstance(begin, int) or not isinstance(end, int):
                raise TypeError("data_offsets are not integers")
            need, held = math.prod(shape) * _SAFETENSORS_BYTES[dtype], end - begin
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: tensor {key!r} has a malformed header entry.") from err
        if held != need or not 0 <= begin <= end <= data_size:
            raise CheckpointError(
                f"{path}: tensor {key!r} declares shape {tuple(shape)} {dtype} "
                f"({_human(need)}) but the file holds {_human(max(0, data_size - begin))} from "
                "its offset: a truncated or corrupt file; refused before allocating memory."
            )
        spans.append((begin, end))
    # Each span must start where the one before it ends, and the last end where the file does.
    spans.sort()
    ends, begins = [0] + [e for _, e in spans], [b for b, _ in spans] + [data_size]
    for last_end, begin in zip(ends, begins, strict=True):
        if last_end != begin:
            raise CheckpointError(
                f"{path}: a safetensors file of {size} bytes whose tensors do not cover its data "
                f"exactly (a gap, an overlap or padding at byte {8 + length + min(last_end, begin)}"
                "): corrupt."
            )


def _scan(data: Any, path: Path) -> list[tuple[str, str, int]]:
    scanner = StorageScanner(data)
    try:
        scanner.load()
    except Exception as err:
        raise CheckpointError(f"{path}: the checkpoint's pickle is corrupt ({err}).") from err
    return scanner.storages


# What zipfile raises for an archive it cannot read (an empty, cut or damaged file; a member name
# that is not UTF-8 although its flag says so).
_ZIP_ERRORS = (OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError)


def _damaged(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path}: an unreadable or damaged zip archive ({str(err) or 'empty or truncated'})."
    )


def check_torch_zip(path: Path) -> None:
    """A ``torch.save`` archive that is whole: every entry inside the file, a ``data.pkl`` whose
    storages are each stored with at least their declared size (checked before anything reads
    them), and every member's CRC right. Raises ``CheckpointError`` saying what is wrong."""
    size = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as err:
        raise _damaged(path, err) from err
    with archive:
        entries = {info.filename: info for info in archive.infolist()}
        pickles = [name for name in entries if name.endswith("data.pkl")]
        if not pickles:
            raise CheckpointError(
                f"{path} is not a PyTorch or safetensors checkpoint: a zip archive without "
                f"data.pkl (holds {sorted(entries)[:5]})."
            )
        prefix = pickles[0].removesuffix("data.pkl")
        for info in entries.values():
            if info.header_offset + info.compress_size > size:
                raise CheckpointError(
                    f"{path}: archive entry {info.filename} claims more bytes than the file "
                    "holds: a truncated or corrupt file; refused before allocating memory."
                )
        try:
            with archive.open(pickles[0]) as data:
                declared = declared_bytes(_scan(data, path))
        except _ZIP_ERRORS as err:
            raise _damaged(path, err) from err
        for key, need in declared.items():
            info = entries.get(f"{prefix}data/{key}")
            found = info.file_size if info is not None else 0
            if need > found:
                raise CheckpointError(
                    f"{path}: storage {key!r} declares {_human(need)} of tensor data but the "
                    f"archive holds {_human(found)} for it: a truncated, corrupt or hostile file; "
                    "refused before allocating memory."
                )
        try:
            bad = archive.testzip()  # reads every member: finds cut or altered data by its CRC
        except _ZIP_ERRORS as err:
            raise _damaged(path, err) from err
    if bad:
        raise CheckpointError(f"{path}: a corrupt zip archive (member {bad} fails its CRC check).")


# The first pickle of a legacy torch.save file; torch stops at any other first value.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# How torch's weights-only unpickler names a global it refuses ("... unsupported GLOBAL
# posix.system whose module ...", "Unsupported global: GLOBAL pkg.Class was not ...").
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_REFUSES = "a pickle the safe loader refuses"


def refused_global(err: BaseException) -> str | None:
    """The global (``posix.system``, ``pkg.Class``) that torch's safe loader refused, from its
    ``UnpicklingError``; None for any other error."""
    found = _GLOBAL.search(str(err)) if isinstance(err, pickle.UnpicklingError) else None
    return found.group(1).rstrip(".") if found else None


def safe_load_problem(path: str | os.PathLike, numpy_types: bool = False) -> str | None:
    """None if torch's safe loader, ``torch.load(weights_only=True)`` (what the Trainer resumes
    with; ``numpy_types``: with the NumPy types it allows for RNG states), reads ``path``; else
    why not, as a phrase naming the file: a pickle that names anything beyond tensors and plain
    containers (``os.system``, a class) is "a pickle the safe loader refuses (global ...)". The
    safe loader never runs a pickle's code; a zip archive is memory-mapped, not read."""
    import torch

    path = Path(path)
    allow: contextlib.AbstractContextManager = contextlib.nullcontext()
    if numpy_types:
        from transformers.trainer_pt_utils import safe_globals  # the Trainer's own list

        allow = safe_globals()
    with path.open("rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    # Memory-mapped first (nothing read); read as the Trainer reads it if mapping is what fails.
    for mmap in (True, False) if zipped else (False,):
        try:
            with allow:
                torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            return None
        except Exception as err:  # whatever it raises, the Trainer's torch.load would raise too
            if name := refused_global(err):
                return f"{path}: {_REFUSES} (global {name}): unpickling it could run code"
            lines = str(err).splitlines()
            first = next((line for line in lines if line.strip()), type(err).__name__)
    return f"{path}: torch's safe loader cannot read it ({first.strip()})"


def _check_torch_legacy(path: Path, size: int) -> None:
    """The legacy (pre-zip) format: the storages it declares must fit in the file. A pickle
    that does not begin as one (a bare pickle, perhaps a hostile one) is named by what torch's
    safe loader refuses in it: with no magic number first, it reads one pickle and stops, before
    allocating any storage."""
    with path.open("rb") as f:
        try:
            first = StorageScanner(f).load()
        except Exception:
            first = None
    if first != _LEGACY_MAGIC and (refused := safe_load_problem(path)) and _REFUSES in refused:
        raise CheckpointError(refused)
    with path.open("rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            _scan(f, path)
        need = sum(declared_bytes(_scan(f, path)).values())
    if need > size:
        raise CheckpointError(
            f"{path}: declares {_human(need)} of tensor data in a {_human(size)} file: a truncated, "
            "corrupt or hostile file; refused before allocating memory."
        )


def checkpoint_format(path: str | Path) -> str:
    """``"safetensors"``, ``"torch-zip"`` or ``"torch-legacy"``, read from the content (not the
    suffix), after checking that the sizes the file declares fit in it. Raises
    ``CheckpointError`` saying what the file is otherwise."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4096)
    if _is_safetensors(head, size):
        check_safetensors(path)
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        check_torch_zip(path)
        return "torch-zip"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5 opcode
        _check_torch_legacy(path, size)
        return "torch-legacy"
    raise CheckpointError(
        f"{path} is not a PyTorch or safetensors checkpoint: {describe_file(head)}."
    )


# --- Trainer checkpoint folders: every file a resume reads -----------------------------------

_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# Written by torch.save as zip archives.
_ZIPPED = ("optimizer.pt", "scheduler.pt")


def _problem(check: Callable[[Path], None], path: Path) -> str | None:
    """What ``check`` finds wrong with ``path``, as a phrase, else None."""
    try:
        check(path)
    except CheckpointError as err:
        return str(err).removesuffix(".")
    return None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"{path.name} is not valid JSON ({err})"
    return None


def _torch_file_problem(path: Path, numpy_types: bool = False) -> str | None:
    """What is wrong with a ``torch.save`` file the Trainer resumes from: a damaged archive
    (``check_torch_zip``, which reads nothing into memory), else what torch's safe loader
    refuses (``safe_load_problem``); a bare pickle is named by the latter."""
    if problem := _problem(check_torch_zip, path):
        with path.open("rb") as f:
            head = f.read(2)
        if len(head) == 2 and head[0] == 0x80:  # a pickle, not a zip archive
            return safe_load_problem(path, numpy_types) or problem
        return problem
    return safe_load_problem(path, numpy_types)


def _weights_problem(folder: Path) -> str | None:
    weights = next((folder / n for n in _WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        return f"no model weights (none of {', '.join(_WEIGHTS)})"
    if weights.name == "pytorch_model.bin":
        return _torch_file_problem(weights)
    if weights.name == "model.safetensors":
        return _problem(check_safetensors, weights)
    if problem := _json_problem(weights):  # a sharded checkpoint's index
        return problem
    shards = sorted(set(json.loads(weights.read_text()).get("weight_map", {}).values()))
    if missing := [s for s in shards if not (folder / s).is_file()]:
        return f"missing weight shard(s) {missing}"
    return next(filter(None, (_problem(check_safetensors, folder / s) for s in shards)), None)


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """None if ``path`` is a checkpoint the Trainer can resume exactly from, else what is wrong.

    Every file a resume reads must be there and readable: ``trainer_state.json`` (parsed), the
    weights (``check_safetensors``, for each shard of an index too, or ``check_torch_zip``),
    ``optimizer.pt``, ``scheduler.pt`` and the RNG states (``check_torch_zip``, then read by
    torch's safe loader as the Trainer reads them: ``safe_load_problem``), and
    ``run_settings.json`` when there is one (parsed). The Trainer would otherwise crash on a
    truncated file or on a pickle its safe loader refuses, or silently resume with a fresh
    optimizer when ``optimizer.pt`` is missing.
    """
    folder = Path(path)
    if not folder.is_dir():
        return "no such folder"
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (interrupted while saving)"
    if problem := _json_problem(state):
        return problem
    if problem := _weights_problem(folder):
        return problem
    rng = sorted(folder.glob("rng_state*.pth"))
    if not rng:
        return "no rng_state*.pth (the resumed run could not draw what the original did)"
    for name in [*_ZIPPED, *(p.name for p in rng)]:
        if not (folder / name).is_file():
            return f"no {name}"
        if problem := _torch_file_problem(folder / name, numpy_types=name.startswith("rng_")):
            return problem
    # Written by our RunSettingsCallback after the Trainer's files: cut short by a full disk, it
    # would stop the resume's same-run check with a JSON traceback.
    settings = folder / "run_settings.json"
    if settings.is_file() and (problem := _json_problem(settings)):
        return problem
    return None
