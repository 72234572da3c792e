"""Reading a ``torch.save`` pickle without trusting it: every global it names becomes a stub
(nothing is imported or run), and only the storages it declares are listed, so that their sizes
can be checked against the file before torch allocates anything (``checkpoint_files``)."""

from __future__ import annotations

import pickle
from typing import Any

# Bytes per element of the storage classes ``torch.save`` names in its pickles.
_STORAGE_BYTES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1,
}  # fmt: skip


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


class StorageScanner(pickle.Unpickler):
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


def declared_bytes(storages: list[tuple[str, str, int]]) -> dict[str, int]:
    """Bytes each storage declares (by its key), from ``StorageScanner.storages``."""
    return {key: numel * _STORAGE_BYTES.get(kind, 1) for key, kind, numel in storages}
