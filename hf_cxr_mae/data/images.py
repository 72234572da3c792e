"""Reading X-rays into one-channel 8-bit PIL images (PNG 8/16-bit, JPEG, DICOM, any PIL mode).

Wide-range pixels (16-bit PNG, DICOM) are mapped to 8 bits by a window when one is given or
stored in the file (DICOM window centre / width, VOI LUT), else by the image's own min..max.
Only pixels leave a DICOM file: no tag (patient name, id, dates) is ever returned. DICOM files
without the preamble and file meta header (ACR-NEMA-style exports) are read too, and a DICOM
whose one image does not decode (no pixel data, short buffer, several frames, broken stream) is
refused with the reason in words.
"""

from __future__ import annotations

import logging
import threading
from os import PathLike
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

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


def _pydicom():
    try:
        import pydicom
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Reading DICOM needs pydicom (a dependency of hf-cxr-mae): pip install pydicom") from err
    return pydicom


def read_dicom_dataset(path: str | PathLike | BinaryIO, stop_before_pixels: bool = False):
    """``pydicom.dcmread`` that also reads files without the 128-byte preamble and file meta
    (ACR-NEMA-style exports, still common in archives).

    Such files are read with ``force=True``; a file that then shows no image tags is refused as
    not DICOM. A missing transfer syntax is set from the encoding the reader found (implicit VR
    little endian for ACR-NEMA). Raises ``ValueError`` for a non-DICOM file.
    """
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        if hasattr(path, "seek"):
            path.seek(0)
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
            looks_like_image = "Rows" in ds and "Columns" in ds
        except Exception:  # any parse failure of a forced read means "not DICOM"
            looks_like_image = False
        if not looks_like_image:
            raise ValueError(
                "not a DICOM file (no 'DICM' header, and no image tags such as Rows / Columns)"
            ) from None
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
    return ds


class _QuietDecoderFailures(logging.Filter):
    """pydicom logs a traceback for each decoder plugin that fails before it raises; while we
    decode, the raised error (reported with the file and row) says the same, once."""

    active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "on", False)


_QUIET = _QuietDecoderFailures()
logging.getLogger("pydicom.pixels.decoders.base").addFilter(_QUIET)


_JPEG_FAMILY = "1.2.840.10008.1.2.4."  # JPEG, JPEG-LS, JPEG 2000 transfer syntaxes


def dicom_pixels(ds) -> np.ndarray:
    """The stored pixel values of a one-frame DICOM dataset, with a plain-words ``ValueError``
    for what breaks later otherwise: no pixel data, several frames, a pixel buffer shorter than
    its header says, or a compressed stream that does not decode."""
    from pydicom.pixels.utils import get_expected_length

    if "PixelData" not in ds:
        raise ValueError("no pixel data (the file has a header but no PixelData element)")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ValueError(f"{frames} frames; one image per file expected")
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows <= 0 or columns <= 0:
        raise ValueError(f"image size {columns}x{rows} in the header is empty")
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_encapsulated:
        # Checked here, not left to pydicom: its message does not say "truncated".
        expected, found = get_expected_length(ds, "bytes"), len(ds.PixelData)
        if found < expected:
            raise ValueError(
                f"pixel data truncated: {found} bytes, {expected} expected for {columns}x{rows} "
                f"pixels of {ds.BitsAllocated} bits x {ds.get('SamplesPerPixel', 1)} samples"
            )
    elif syntax.startswith(_JPEG_FAMILY):
        # A cut JPEG / JPEG-LS / JPEG 2000 stream can decode "successfully" (pylibjpeg fills the
        # missing rows with grey), so look for its end-of-image marker (one pad byte allowed).
        from pydicom.encaps import generate_frames

        frame = next(generate_frames(ds.PixelData, number_of_frames=1), b"")
        if frame.rstrip(b"\x00")[-2:] != b"\xff\xd9":
            raise ValueError(
                f"cannot decode its {syntax.name} pixel data: the compressed stream is "
                "truncated (no end-of-image marker)"
            )
    _QUIET.active.on = True
    try:
        pixels = ds.pixel_array
    except Exception as err:
        reason = " ".join(str(err).split())  # pydicom lists plugins on several lines
        raise ValueError(f"cannot decode its {syntax.name} pixel data: {reason}") from err
    finally:
        _QUIET.active.on = False
    if pixels.shape[:2] != (rows, columns):
        raise ValueError(f"decoded pixels are {pixels.shape}, the header says {rows}x{columns}")
    return pixels


def verify_dicom(path: str | PathLike) -> None:
    """Raise ``ValueError`` (reason in words) unless the DICOM file's one image decodes.

    This is the data check for DICOM at every level above "exists": the header alone cannot
    tell a missing, short or undecodable pixel stream, and the loaders decode DICOM pixels
    when they build a dataset anyway.
    """
    dicom_pixels(read_dicom_dataset(path))


def dicom_size(path: str | PathLike | BinaryIO) -> tuple[int, int]:
    """(width, height) from a DICOM header, without reading the pixels."""
    ds = read_dicom_dataset(path, stop_before_pixels=True)
    return int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0)


def read_dicom(path: str | PathLike, window: tuple[float, float] | None = None) -> Image.Image:
    """Decode a DICOM file's pixels to mode ``L`` (needs the ``dicom`` extra).

    Order: stored values -> modality LUT (rescale slope / intercept) -> VOI (``window`` if
    given, else the file's VOI LUT or first window centre / width, else 8-bit data as is and
    wider data by its own range) -> MONOCHROME1 inverted so that air is dark.
    """
    _pydicom()
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = read_dicom_dataset(path)
    pixels = dicom_pixels(ds)
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


# The groups a DICOM data set without preamble begins with: its file meta (0002) or, with none
# (ACR-NEMA-style exports), the identifying group (0008); little or big endian.
_BARE_DICOM_GROUPS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _is_bare_dicom(head: bytes) -> bool:
    """A data set without the preamble: a first tag of group 0002 / 0008, then an explicit VR
    (two capital letters) or an implicit value length that is even and fits in 64 KiB (the
    first elements are short strings, UIDs and lengths)."""
    if len(head) < 8 or head[:2] not in _BARE_DICOM_GROUPS:
        return False
    if head[4:6].isalpha() and head[4:6].isupper():
        return True
    length = int.from_bytes(head[4:8], "little" if head[0] else "big")
    return length % 2 == 0 and length < 1 << 16


def has_dicom_magic(path: str | PathLike | BinaryIO) -> bool:
    """Whether the file is DICOM by its content: DICOM's 128-byte preamble and ``DICM`` (Part 10
    format), or a data set without them (ACR-NEMA-style exports; ``read_dicom_dataset`` then
    checks that it holds an image)."""
    try:
        if hasattr(path, "read"):
            start = path.tell()
            head = path.read(132)
            path.seek(start)
        else:
            with open(path, "rb") as f:
                head = f.read(132)
    except (OSError, ValueError):
        return False  # unreadable here: the image reader says why
    return head[128:132] == b"DICM" or _is_bare_dicom(head)


def read_xray(
    path: str | PathLike | BinaryIO, window: tuple[float, float] | None = None
) -> Image.Image:
    """Read an image file or file object (PNG, JPEG, DICOM, ...) as a one-channel 8-bit PIL image.
    DICOM is known by its suffix or, without one (``IM0001`` from a PACS export), by content.
    An EXIF orientation tag is applied (the upright image), as transformers' ``load_image``
    (so ``pipeline("image-classification")``) and ``datasets`` do: every reader agrees."""
    if str(path).lower().endswith(DICOM_SUFFIXES) or has_dicom_magic(path):
        try:
            return read_dicom(path, window)
        except ImportError:
            raise
        except Exception as err:
            raise ValueError(f"Cannot read DICOM {path}: {err}") from err
    try:
        with Image.open(path) as image:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return to_grayscale(image, window)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"Cannot read image {path}: {err}") from err
