"""Fast classifier inference: bf16 weights where the hardware runs them natively, inference
mode, optional ``torch.compile``. Same maths as the saved model (checked by the tests to a
bf16 tolerance); ten-crop test-time augmentation."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch


def native_bf16(device: torch.device | str) -> bool:
    """Whether bf16 matmuls are native here (CUDA with bf16, or a CPU with AVX-512 BF16 / AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def fast_classifier(
    model: torch.nn.Module, dtype: torch.dtype | None = None, compile: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``pixel_values -> float32 logits`` running a copy of ``model`` in ``dtype``
    (default: bf16 where native, else fp32) under ``torch.inference_mode``, with the ``cxr``
    attention kernel."""
    device = next(model.parameters()).device
    dtype = dtype or (torch.bfloat16 if native_bf16(device) else torch.float32)
    fast = copy.deepcopy(model).to(dtype).eval()
    if hasattr(fast, "set_attn_implementation"):
        from ..attention import use_fast_attention

        use_fast_attention(fast)
    forward = torch.compile(fast) if compile else fast

    def run(pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = forward(pixel_values.to(device=device, dtype=dtype))
            logits = out.logits if hasattr(out, "logits") else out
            return logits.float()

    return run


class TenCrop(torch.nn.Module):
    """Averages a classifier's logits over ten crops (the corners, the centre and their mirrors)."""

    def __init__(self, model: torch.nn.Module, num_channels: int) -> None:
        super().__init__()
        self.model, self.config, self.num_channels = model, model.config, num_channels

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import ImageClassifierOutput

        b, n = pixel_values.shape[:2]
        flat = pixel_values.flatten(0, 1).expand(-1, self.num_channels, -1, -1)
        return ImageClassifierOutput(
            logits=self.model(pixel_values=flat).logits.view(b, n, -1).mean(1)
        )
