"""The optional dependencies (pyproject's extras) and one import that names the extra to install
when one is missing, so a command reached from the README without it ends in one line, not a
traceback."""

from __future__ import annotations

import importlib
from types import ModuleType

# Module -> the extra of ``pip install 'hf-cxr-mae[EXTRA]'`` that brings it.
EXTRA_OF = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "gradio": "demo",
    "tensorboard": "tensorboard",
    "trackio": "trackio",
}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


def require(module: str, purpose: str) -> ModuleType:
    """``import module`` (a dotted name is fine), or ``MissingExtra`` saying that ``purpose``
    needs it and how to install it."""
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if err.name != top:
            raise  # the package is there but one of its own imports broke: show that
        raise MissingExtra(
            f"{purpose} needs {top}, which is not installed: "
            f"pip install 'hf-cxr-mae[{EXTRA_OF[top]}]'",
            name=top,
        ) from err
