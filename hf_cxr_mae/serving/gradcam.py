"""Grad-CAM heatmaps of a PyTorch classifier: the map of one finding, and the heatmap files of a
prediction (``predict --heatmap``). The overlay on the X-ray is drawn by ``figures``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..data.images import read_xray
from ..data.transforms import create_transform
from ..figures import heatmap_overlay
from .predict import Prediction


def grad_cam(model, pixel_values: torch.Tensor, index: int) -> np.ndarray:
    """Grad-CAM on the output tokens of the last transformer block: a (grid, grid) map in [0, 1]."""
    if getattr(model.config, "model_type", None) != "beit":
        raise ValueError(
            "Heatmaps are implemented for ViT classifiers (BEiT checkpoints from hf-cxr-mae)."
        )
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = model(pixel_values=pixel_values, output_hidden_states=True)
        tokens = out.hidden_states[-1]
        tokens.retain_grad()
        out.logits[0, index].backward()
    patches, grads = tokens[0, 1:].detach(), tokens.grad[0, 1:]
    cam = torch.relu((patches * grads.mean(0)).sum(-1))
    grid = math.isqrt(cam.numel())
    cam = cam.reshape(grid, grid)
    return (cam / cam.max()).numpy() if cam.max() > 0 else cam.numpy()


def write_heatmaps(model, prediction: Prediction, out_dir: Path, top: int = 3) -> list[str]:
    """One PNG per top finding in ``out_dir``: ``<stem>_<finding>.png``, the finding's name made
    safe (``file_names.safe_file_stems``: it comes from the model's config)."""
    from ..file_names import safe_file_stems
    from ..processing import data_settings

    settings = data_settings(model)
    image = read_xray(prediction.path)
    pixels = create_transform(settings, "eval")(image)[None].expand(
        -1, settings.num_channels, -1, -1
    )
    names = list(prediction.probabilities)
    best = sorted(names, key=prediction.probabilities.get, reverse=True)[:top]
    stems = safe_file_stems(names)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in best:
        cam = grad_cam(model, pixels, names.index(name))
        path = out_dir / f"{Path(prediction.path).stem}_{stems[name]}.png"
        heatmap_overlay(image, cam, settings).save(path)
        written.append(str(path))
    return written
