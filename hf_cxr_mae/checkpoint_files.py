"""What a checkpoint file is, read from its content (not its suffix), and whether the tensor sizes
it declares fit in it: checked before ``torch.load`` / safetensors allocate anything, so a small
file that claims terabytes is refused in words instead of exhausting memory.
"""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any


class CheckpointError(ValueError):
    """A source checkpoint that cannot be converted; the message says why, in words."""


# Bytes per element of the storage classes ``torch.save`` names in its pickles.
_STORAGE_BYTES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1,
}  # fmt: skip
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


def _safetensors_header(path: Path, size: int) -> dict | None:
    """The JSON header of a safetensors file, or None when the file is not one."""
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return None
        length = int.from_bytes(prefix, "little")
        if not 2 <= length <= size - 8:
            return None
        raw = f.read(length)
    if not raw.startswith(b"{"):
        return None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: a safetensors file with a corrupt header ({err}).") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: a safetensors file whose header is not a JSON object.")
    return header


def _check_safetensors(path: Path, header: dict, data_size: int) -> None:
    """Every tensor's declared size matches its byte range, and the ranges fit in the file."""
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            shape, (begin, end) = [int(d) for d in info["shape"]], info["data_offsets"]
            need = math.prod(shape) * _SAFETENSORS_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: tensor {key!r} has a malformed header entry.") from err
        if end - begin != need or not 0 <= begin <= end <= data_size:
            raise CheckpointError(
                f"{path}: tensor {key!r} declares shape {tuple(shape)} {info['dtype']} "
                f"({_human(need)}) but the file holds {_human(max(0, data_size - begin))} from "
                "its offset: a truncated or corrupt file; refused before allocating memory."
            )


class _Stub:
    """Stands in for every object a scanned pickle names: nothing real is imported or run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _StorageScanner(pickle.Unpickler):
    """Reads a ``torch.save`` pickle only to list the storages it declares: (key, type, count)."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.storages: list[tuple[str, str, int]] = []

    def find_class(self, module: str, name: str) -> type:
        return type(name, (_Stub,), {})

    def persistent_load(self, pid: Any) -> _Stub:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            self.storages.append((str(pid[2]), getattr(pid[1], "__name__", "?"), int(pid[4])))
        return _Stub()


def _declared_bytes(storages: list[tuple[str, str, int]]) -> dict[str, int]:
    return {key: numel * _STORAGE_BYTES.get(kind, 1) for key, kind, numel in storages}


def _scan(data: Any, path: Path) -> list[tuple[str, str, int]]:
    scanner = _StorageScanner(data)
    try:
        scanner.load()
    except Exception as err:
        raise CheckpointError(f"{path}: the checkpoint's pickle is corrupt ({err}).") from err
    return scanner.storages


def _check_torch_zip(path: Path, size: int) -> None:
    """Each storage the pickle declares exists in the archive with at least its declared size."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise CheckpointError(f"{path}: a damaged zip archive ({err}).") from err
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
        with archive.open(pickles[0]) as data:
            declared = _declared_bytes(_scan(data, path))
        for key, need in declared.items():
            info = entries.get(f"{prefix}data/{key}")
            found = info.file_size if info is not None else 0
            if need > found:
                raise CheckpointError(
                    f"{path}: storage {key!r} declares {_human(need)} of tensor data but the "
                    f"archive holds {_human(found)} for it: a truncated, corrupt or hostile file; "
                    "refused before allocating memory."
                )


def _check_torch_legacy(path: Path, size: int) -> None:
    """The legacy (pre-zip) format: the storages it declares must fit in the file."""
    with path.open("rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            _scan(f, path)
        need = sum(_declared_bytes(_scan(f, path)).values())
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
    header = _safetensors_header(path, size)
    if header is not None:
        _check_safetensors(path, header, size - 8 - int.from_bytes(head[:8], "little"))
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        _check_torch_zip(path, size)
        return "torch-zip"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5 opcode
        _check_torch_legacy(path, size)
        return "torch-legacy"
    raise CheckpointError(
        f"{path} is not a PyTorch or safetensors checkpoint: {describe_file(head)}."
    )
