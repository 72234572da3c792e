"""Reading X-rays into one-channel 8-bit PIL images (PNG 8/16-bit, JPEG, DICOM, any PIL mode).

Wide-range pixels (16-bit PNG, DICOM) are mapped to 8 bits by a window when one is given or
stored in the file (DICOM window centre / width, VOI LUT), else by the image's own min..max.
Only pixels leave a DICOM file: no tag (patient name, id, dates) is ever returned.
"""

from __future__ import annotations

from os import PathLike
from typing import BinaryIO

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


DICOM_SUFFIXES = (".dcm", ".dicom")


def read_dicom(path: str | PathLike, window: tuple[float, float] | None = None) -> Image.Image:
    """Decode a DICOM file's pixels to mode ``L`` (needs the ``dicom`` extra).

    Order: stored values -> modality LUT (rescale slope / intercept) -> VOI (``window`` if
    given, else the file's VOI LUT or first window centre / width, else 8-bit data as is and
    wider data by its own range) -> MONOCHROME1 inverted so that air is dark.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Reading DICOM needs pydicom: pip install 'hf-cxr-mae[dicom]'") from err
    ds = pydicom.dcmread(path)
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise ValueError(f"{path}: multi-frame DICOM is not supported (one radiograph per file).")
    pixels = ds.pixel_array
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        return Image.fromarray(pixels.astype(np.uint8)).convert("L")
    values = apply_modality_lut(pixels, ds).astype(np.float32)
    if window is not None:
        out = scale_to_uint8(values, window)
    elif "VOILUTSequence" in ds:
        lut_values = apply_voi_lut(values, ds)
        lut_data = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float32)
        out = scale_to_uint8(lut_values, (float(lut_data.min()), float(lut_data.max())))
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center = float(np.atleast_1d(ds.WindowCenter)[0])
        width = float(np.atleast_1d(ds.WindowWidth)[0])
        out = scale_to_uint8(values, (center - width / 2, center + width / 2))
    elif int(ds.BitsStored) <= 8 and values.min() >= 0 and values.max() <= 255:
        out = values.astype(np.uint8)
    else:
        out = scale_to_uint8(values)
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        out = 255 - out
    return Image.fromarray(out)


def read_xray(
    path: str | PathLike | BinaryIO, window: tuple[float, float] | None = None
) -> Image.Image:
    """Read an image file or file object (PNG, JPEG, DICOM, ...) as a one-channel 8-bit PIL image."""
    if str(path).lower().endswith(DICOM_SUFFIXES):
        try:
            return read_dicom(path, window)
        except ImportError:
            raise
        except Exception as err:
            raise ValueError(f"Cannot read DICOM {path}: {err}") from err
    try:
        with Image.open(path) as image:
            image.load()
            return to_grayscale(image, window)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"Cannot read image {path}: {err}") from err
