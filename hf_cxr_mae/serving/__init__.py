"""Serving a trained classifier: predictions on files (``predict``), the prediction files they
write and ``compare`` reads, fast PyTorch and ONNX Runtime inference, ONNX export, the demo.

This ``__init__`` imports nothing: ``serving.onnx_runtime`` must load without torch or
transformers, and importing it runs this file first.
"""
