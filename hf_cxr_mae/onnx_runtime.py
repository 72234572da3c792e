"""Running an exported classifier with ONNX Runtime (no PyTorch needed to serve it).

A folder written by ``hf-cxr-mae export`` holds ``onnx/model.onnx`` (fp32) and optionally
``onnx/model_int8_dynamic.onnx`` / ``onnx/model_int8_static.onnx``; ``OnnxClassifier`` runs one.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import torch

ONNX_DIR = "onnx"
FILES = {
    None: "model.onnx",
    "dynamic": "model_int8_dynamic.onnx",
    "static": "model_int8_static.onnx",
}
# What OnnxClassifier runs when not told: the fastest graph the folder holds. Dynamic int8 was
# faster than static QDQ in 3 of 4 side-by-side runs on the 2-core CPU (ViT-S and ViT-B).
PREFERENCE = ("dynamic", "static", None)


def session(path: Path | str, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's choice (one per physical core)
    options.log_severity_level = 3  # its warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_files(folder: str | PathLike) -> dict[str | None, Path]:
    """The graphs an exported folder holds, by variant (None: fp32)."""
    onnx_dir = Path(folder) / ONNX_DIR
    return {v: onnx_dir / name for v, name in FILES.items() if (onnx_dir / name).is_file()}


class OnnxClassifier:
    """An exported classifier run by ONNX Runtime on the CPU: ``model(pixel_values) -> logits``
    (torch tensors, float32), ``model.config`` the transformers config of the folder.

    ``variant``: ``None`` picks the fastest graph present (int8 dynamic, int8 static, fp32);
    ``"fp32"``, ``"dynamic"`` or ``"static"`` ask for one. ``threads``: ONNX Runtime's intra-op
    threads (0: one per physical core)."""

    def __init__(
        self, folder: str | PathLike, variant: str | None = None, threads: int = 0
    ) -> None:
        from transformers import AutoConfig

        files = onnx_files(folder)
        if not files:
            raise FileNotFoundError(
                f"{folder} holds no exported graph ({ONNX_DIR}/{FILES[None]}); make one with "
                "`hf-cxr-mae export MODEL OUT`."
            )
        key = None if variant == "fp32" else variant
        if variant is None:
            key = next(v for v in PREFERENCE if v in files)
        elif key not in files:
            raise FileNotFoundError(
                f"{folder} has no {variant} graph ({ONNX_DIR}/{FILES.get(key, variant)}); it has "
                f"{', '.join(p.name for p in files.values())}."
            )
        self.path = files[key]
        self.variant = "fp32" if key is None else f"int8 {key}"
        self.config = AutoConfig.from_pretrained(folder)
        self.session = session(self.path, threads)

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixels = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run(["logits"], {"pixel_values": pixels})
        return torch.from_numpy(logits)


def is_onnx_folder(model: str | PathLike) -> bool:
    """An exported folder without PyTorch weights (what ``--backend auto`` runs with ONNX)."""
    folder = Path(model)
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))
    return folder.is_dir() and bool(onnx_files(folder)) and not has_weights
