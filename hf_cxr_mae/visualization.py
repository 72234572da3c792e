"""Pictures of models: MAE reconstructions (original | masked | reconstruction | pasted)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw


def _to_uint8(x: torch.Tensor, mean: float, std: float) -> np.ndarray:
    return (x * std + mean).clamp(0, 1).mul(255).round().byte().cpu().numpy()


@torch.no_grad()
def reconstruction_panels(
    model,
    pixel_values: torch.Tensor,
    seed: int = 0,
    normalization: Sequence[tuple[Sequence[float], Sequence[float]] | None] | None = None,
) -> list[np.ndarray]:
    """Per image, four HxW uint8 panels: original, masked (grey patches), reconstruction,
    reconstruction with the visible patches pasted back. Uses ``model.config.mask_ratio``.
    ``normalization`` gives each image's (mean, std) where it differs from the model's (per-source
    pre-training normalisation; None: the model's); the first channel's values are undone."""
    was_training = model.training
    model.eval()
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    num_patches = (pixel_values.shape[-1] // config.patch_size) ** 2
    noise = torch.rand(pixel_values.shape[0], num_patches, generator=generator).to(
        pixel_values.device
    )
    out = model(pixel_values, noise=noise)
    pred = out.logits
    if config.norm_pix_loss:  # undo the per-patch normalisation with the true patch statistics
        target = model.patchify(pixel_values)
        pred = pred * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, keepdim=True)
    recon = model.unpatchify(pred)
    mask = out.mask.unsqueeze(-1).expand(-1, -1, config.patch_size**2 * config.num_channels)
    mask = model.unpatchify(mask)
    mean = float(getattr(config, "image_mean", [0.5])[0])
    std = float(getattr(config, "image_std", [0.25])[0])
    panels = []
    for i in range(pixel_values.shape[0]):
        if normalization is not None and normalization[i] is not None:
            mean, std = float(normalization[i][0][0]), float(normalization[i][1][0])
        original = _to_uint8(pixel_values[i, 0], mean, std)
        masked = np.where(mask[i, 0].cpu().numpy() > 0.5, 128, original).astype(np.uint8)
        rec = _to_uint8(recon[i, 0], mean, std)
        pasted = np.where(mask[i, 0].cpu().numpy() > 0.5, rec, original).astype(np.uint8)
        panels.append([original, masked, rec, pasted])
    model.train(was_training)
    return panels


def reconstruction_grid(
    model,
    pixel_values: torch.Tensor,
    seed: int = 0,
    scale: int = 1,
    normalization: Sequence[tuple[Sequence[float], Sequence[float]] | None] | None = None,
) -> Image.Image:
    """One image: a row per input, columns original | masked | reconstruction | visible + recon.
    ``normalization`` as in ``reconstruction_panels``."""
    rows = reconstruction_panels(model, pixel_values, seed, normalization)
    h, w = rows[0][0].shape[0] * scale, rows[0][0].shape[1] * scale
    header, gap = 14, 2
    titles = [
        "original",
        f"masked {model.config.mask_ratio:.0%}",
        "reconstruction",
        "visible + recon.",
    ]
    canvas = Image.new("L", (4 * w + 3 * gap, header + len(rows) * (h + gap)), 255)
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text(
            (c * (w + gap) + 2, 1),
            title if draw.textlength(title) < w - 4 else title.split()[0],
            fill=0,
        )
    for r, panels in enumerate(rows):
        for c, panel in enumerate(panels):
            tile = Image.fromarray(panel).resize((w, h), Image.NEAREST)
            canvas.paste(tile, (c * (w + gap), header + r * (h + gap)))
    return canvas
