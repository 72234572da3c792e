"""Packages whose public names load on first use (PEP 562), so importing one light submodule
(``onnx_runtime``, ``data.images``) does not pull in torch, transformers, datasets or pandas."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: a name of ``exports`` (name -> submodule)
    is imported from its submodule when first asked for, and a submodule by its name (as after
    an eager ``import package.sub``)."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            setattr(sys.modules[package], name, value)  # later lookups skip this function
            return value
        if name.startswith("__"):  # dunder probes (copy, pickle, inspect) are no submodules
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            return importlib.import_module(f".{name}", package)
        except ModuleNotFoundError as err:
            if err.name != f"{package}.{name}":  # it exists but one of its imports fails
                raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
