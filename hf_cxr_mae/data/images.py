"""Reading X-rays into one-channel 8-bit PIL images (PNG 8/16-bit, JPEG, any PIL mode)."""

from __future__ import annotations

from os import PathLike

import numpy as np
from PIL import Image

# PIL modes holding one channel wider than 8 bits.
_WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def scale_to_uint8(pixels: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Map a wide-range array to uint8.

    With ``window=(low, high)`` that range maps to [0, 255] (values outside are clipped);
    without, the image's own min..max does (a constant image becomes all zeros).
    """
    pixels = pixels.astype(np.float32, copy=False)
    low, high = window if window is not None else (float(pixels.min()), float(pixels.max()))
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.uint8)
    scaled = (pixels - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_grayscale(image: Image.Image, window: tuple[float, float] | None = None) -> Image.Image:
    """Any PIL image to mode ``L``.

    16-bit / 32-bit gray is scaled by its own range (or ``window``), never clipped at 255 as
    ``Image.convert`` would. RGBA / LA are composited on black (X-ray background), palette and
    CMYK images go through RGB, and colour uses ITU-R 601 luma.
    """
    mode = image.mode
    if mode == "L":
        return image
    if mode in _WIDE_GRAY_MODES:
        return Image.fromarray(scale_to_uint8(np.asarray(image), window))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    if mode == "1":
        return image.convert("L")
    return image.convert("RGB").convert("L")


def read_xray(path: str | PathLike, window: tuple[float, float] | None = None) -> Image.Image:
    """Read an image file as a one-channel 8-bit PIL image (fully decoded, file closed)."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_grayscale(image, window)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"Cannot read image {path}: {err}") from err
