"""Serving a trained classifier: predictions on files (``predict``), the prediction files they
write and ``compare`` reads, fast PyTorch and ONNX Runtime inference, ONNX export, the demo.

This ``__init__`` imports no submodule: ``serving.onnx_runtime`` must load without torch or
transformers, and importing it runs this file first. It holds the backend choices, which the
command line reads without loading the serving code.
"""

from typing import Literal, get_args

# How a classifier runs: ``auto`` is ONNX Runtime for an ONNX export folder, PyTorch otherwise.
Backend = Literal["auto", "torch", "onnx"]
BACKENDS: tuple[str, ...] = get_args(Backend)
