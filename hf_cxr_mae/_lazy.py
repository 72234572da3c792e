"""Packages whose public names load on first use (PEP 562), so importing one light submodule
(``onnx_runtime``, ``data.images``) does not pull in torch, transformers, datasets or pandas."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
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


class _MovedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Old import paths of modules that moved (``hf_cxr_mae.predict`` -> ``hf_cxr_mae.serving.
    predict``): the old name imports the new module, with a ``DeprecationWarning``."""

    def __init__(self, moved: dict[str, str]) -> None:
        self.moved = moved

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if fullname not in self.moved:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = self.moved[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2
        )
        return importlib.import_module(new)  # the same module object under both names

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module ran when it was imported."""


def alias_moved_modules(moved: dict[str, str]) -> None:
    """Let each old dotted name of ``moved`` (old -> new) import its new module."""
    if not any(isinstance(f, _MovedModule) and f.moved == moved for f in sys.meta_path):
        sys.meta_path.append(_MovedModule(moved))
