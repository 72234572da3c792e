"""Shared test helpers: reference maths written independently of the library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def mae_sincos_table(grid: int, dim: int) -> np.ndarray:
    """The MAE paper code's 2-D sin-cos table, recomputed from its formula (cls row of zeros first).

    Per patch at row r, column c (row-major order): the first half of the vector encodes c, the
    second half r; each half is [sin(p * w_k), cos(p * w_k)] with w_k = 10000 ** (-k / (dim / 4)).
    """
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows = []
    for r in range(grid):
        for c in range(grid):
            rows.append(
                np.concatenate(
                    [np.sin(c * freqs), np.cos(c * freqs), np.sin(r * freqs), np.cos(r * freqs)]
                )
            )
    return np.concatenate([np.zeros((1, dim)), np.stack(rows)], axis=0)


def patchify_by_hand(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, patch*patch*C), pixels of each patch in (row, col, channel) order."""
    b, _, h, w = x.shape
    patches = []
    for i in range(h // patch):
        for j in range(w // patch):
            block = x[:, :, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch]
            patches.append(block.permute(0, 2, 3, 1).reshape(b, -1))
    return torch.stack(patches, dim=1)


def load_nih_batch(nih_dir: Path, n: int, size: int) -> torch.Tensor:
    """n real NIH images resized to size x size, normalised with CXR mean/std, 3 channels."""
    files = sorted((nih_dir / "images").glob("*.png"))[:n]
    arrays = []
    for f in files:
        with Image.open(f) as im:
            gray = im.convert("L").resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(gray, dtype=np.float32) / 255.0)
    x = torch.from_numpy(np.stack(arrays))[:, None]
    x = (x - 0.5056) / 0.252
    return x.expand(-1, 3, -1, -1).contiguous()


def tiny_classifier(labels: list[str], head_std: float = 0.5, **config_attributes):
    """A tiny ViT classifier whose head spreads the logits (a fresh head leaves them all near 0);
    ``config_attributes`` are set on its config (e.g. stored operating points)."""
    from hf_cxr_mae import CXRClassifierConfig, CXRViTForImageClassification

    torch.manual_seed(0)
    config = CXRClassifierConfig.from_preset(
        "vit-test-patch8-dec32d1b", id2label=dict(enumerate(labels))
    )
    model = CXRViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, head_std, generator=torch.Generator().manual_seed(1))
    for key, value in config_attributes.items():
        setattr(model.config, key, value)
    return model


def save_classifier(model, folder: Path) -> Path:
    """The model and its image processor, as a fine-tuning run leaves them."""
    from hf_cxr_mae.processing import build_image_processor

    model.save_pretrained(folder)
    build_image_processor(model.config).save_pretrained(folder)
    return folder


def textured_grey(rng: np.random.Generator, period: float = 9.0) -> np.ndarray:
    """A 90 x 120 uint8 picture with smooth structure and noise: resizing and quantisation
    change it measurably (a flat or pure-noise image would hide preprocessing mistakes)."""
    y, x = np.mgrid[0:90, 0:120]
    smooth = 100 + 60 * np.sin(x / period) * np.cos(y / 13.0)
    return (smooth + rng.normal(0, 20, smooth.shape)).clip(0, 255).astype(np.uint8)
