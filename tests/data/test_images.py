"""Reading X-rays into one-channel 8-bit images (``hf_cxr_mae.data.images``): 16-bit PNGs by range
or window, every colour mode, DICOM MONOCHROME1 inverted, DICOMs without preamble or file meta
(ACR-NEMA style) with their modality LUT or window, broken DICOMs caught by the default check
(named by file and CSV row, or skipped and counted), a non-DICOM named .dcm named as such, and
no patient tag ever reaching a dataset, a cache or any output."""

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from hf_cxr_mae.data import load_cxr_dataset, read_xray, to_grayscale
from hf_cxr_mae.data.cache import build_cache
from hf_cxr_mae.data.validation import DataValidationError

SECRETS = ("SECRET^PATIENT", "SECRET-ID-4711", "19450101")


ROWS, COLS = 32, 40


def dataset(bits: int = 8, photometric: str = "MONOCHROME2") -> Dataset:
    """A CR image header with patient tags (which must never reach any output)."""
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = SECRETS
    ds.Modality = "CR"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit = bits, bits - 1
    ds.PixelRepresentation = 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def save(ds: Dataset, path, syntax=ExplicitVRLittleEndian) -> None:
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def ramp() -> np.ndarray:
    return (np.arange(ROWS * COLS) % 251).astype(np.uint8).reshape(ROWS, COLS)


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(ramp()).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def good(path) -> None:
    ds = dataset()
    ds.PixelData = ramp().tobytes()
    save(ds, path)


def no_pixel_data(path) -> None:
    save(dataset(), path)


def short_pixel_buffer(path) -> None:
    ds = dataset()
    ds.PixelData = ramp().tobytes()[:500]
    save(ds, path)


def cut_file(path) -> None:
    good(path)
    path.write_bytes(path.read_bytes()[:-300])


def multi_frame(path) -> None:
    ds = dataset()
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack([ramp()] * 3).tobytes()
    save(ds, path)


def broken_jpeg(path) -> None:
    ds = dataset()
    stream = jpeg_bytes()
    ds.PixelData = encapsulate([stream[: len(stream) // 2]])
    save(ds, path, JPEGBaseline8Bit)


def broken_jpeg_ls(path) -> None:
    ds = dataset()
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\x00garbage" * 20])
    save(ds, path, JPEGLSLossless)


def broken_rle(path) -> None:
    ds = dataset()
    ds.PixelData = ramp().tobytes()
    ds.compress(RLELossless)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])
    save(ds, path, RLELossless)


# case -> (maker, words the error must contain)
BROKEN = {
    "no_pixel_data": (no_pixel_data, "no pixel data"),
    "short_pixel_buffer": (short_pixel_buffer, "truncated"),
    "cut_file": (cut_file, "truncated"),
    "multi_frame": (multi_frame, "3 frames; one image per file expected"),
    "broken_jpeg": (broken_jpeg, "cannot decode"),
    "broken_jpeg_ls": (broken_jpeg_ls, "cannot decode"),
    "broken_rle": (broken_rle, "cannot decode"),
}


def csv_folder(root, bad_maker):
    """Three good DICOMs and one bad one (CSV line 4), listed in labels.csv."""
    root.mkdir()
    names = ["a.dcm", "b.dcm", "bad.dcm", "c.dcm"]
    for name in names:
        (bad_maker if name == "bad.dcm" else good)(root / name)
    rows = [f"{n},{i % 2}" for i, n in enumerate(names)]
    (root / "labels.csv").write_text("path,Effusion\n" + "\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_dicom_fails_the_default_check_naming_file_and_row(tmp_path, case):
    maker, words = BROKEN[case]
    root = csv_folder(tmp_path / case, maker)
    with pytest.raises(DataValidationError) as info:
        load_cxr_dataset("csv", root, validation_size=1)
    message = str(info.value)
    assert "labels.csv line 4" in message and str(root / "bad.dcm") in message, message
    assert words in message, message
    assert "1 bad" in message and "a.dcm" not in message


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_dicom_is_skipped_and_counted(tmp_path, case, caplog):
    root = csv_folder(tmp_path / case, BROKEN[case][0])
    with caplog.at_level("WARNING"):
        dd = load_cxr_dataset("csv", root, validation_size=1, on_bad="skip")
    kept = sorted([*dd["train"]["image_id"], *dd["validation"]["image_id"]])
    assert kept == ["a.dcm", "b.dcm", "c.dcm"]
    assert "1 bad image rows" in caplog.text and "line 4" in caplog.text
    assert "Traceback" not in caplog.text  # one line per skipped file, no decoder tracebacks


def test_good_dicom_pixels_survive_the_check(tmp_path):
    root = csv_folder(tmp_path / "ok", good)
    dd = load_cxr_dataset("csv", root, validation_size=1, on_bad="skip")
    assert len(dd["train"]) + len(dd["validation"]) == 4  # 'good' stands in for 'bad' too
    image = dd["train"][0]["image"]
    np.testing.assert_array_equal(np.asarray(image), ramp())


def write_raw(ds: Dataset, path, implicit: bool = True) -> None:
    """The dataset alone: no 128-byte preamble, no 'DICM', no group 0002."""
    del ds.file_meta
    pydicom.dcmwrite(path, ds, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    head = path.read_bytes()[:132]
    assert b"DICM" not in head and head[:2] == b"\x08\x00"  # starts with a group-8 tag


def stored_values(bits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**bits, (ROWS, COLS), dtype=np.uint16)


def by_range(values: np.ndarray) -> np.ndarray:
    low, high = values.min(), values.max()
    return np.rint((values - low) * 255.0 / (high - low))


def by_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    # DICOM PS3.3 C.11.2.1.2.1 (linear VOI function), output range 0..255.
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(scaled, 0, 255)


@pytest.mark.parametrize("implicit", [True, False])
def test_acr_nema_12_bit_monochrome1_with_modality_lut(tmp_path, implicit):
    stored = stored_values(12, seed=1)
    ds = dataset(bits=12, photometric="MONOCHROME1")
    ds.RescaleSlope, ds.RescaleIntercept = "2.5", "-1024"
    ds.PixelData = stored.tobytes()
    write_raw(ds, tmp_path / "cr.dcm", implicit)
    out = np.asarray(read_xray(tmp_path / "cr.dcm")).astype(float)
    expected = 255 - by_range(stored * 2.5 - 1024)  # MONOCHROME1: high values are dark
    assert out.shape == (ROWS, COLS)
    np.testing.assert_allclose(out, expected, atol=1)


def test_acr_nema_10_bit_monochrome1_with_window(tmp_path):
    stored = stored_values(10, seed=2)
    ds = dataset(bits=10, photometric="MONOCHROME1")
    ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
    ds.WindowCenter, ds.WindowWidth = "400", "500"
    ds.PixelData = stored.tobytes()
    write_raw(ds, tmp_path / "cr10.dcm")
    out = np.asarray(read_xray(tmp_path / "cr10.dcm")).astype(float)
    expected = 255 - by_window(stored.astype(float), 400, 500)
    np.testing.assert_allclose(out, expected, atol=1.01)
    assert (out == 255).any() and (out == 0).any()  # the window clips on both sides


def test_acr_nema_files_load_and_no_patient_tag_reaches_any_output(tmp_path):
    root = tmp_path / "archive"
    (root / "Effusion").mkdir(parents=True)
    (root / "Normal").mkdir()
    for i, folder in enumerate(["Effusion", "Normal", "Effusion", "Normal"]):
        ds = dataset(bits=12, photometric="MONOCHROME1")
        ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
        ds.PixelData = stored_values(12, seed=10 + i).tobytes()
        write_raw(ds, root / folder / f"im{i}.dcm")
    dd = load_cxr_dataset("imagefolder", root, validation_size=1)
    rows = [row for split in dd.values() for row in split.cast_column("image", _raw_image(split))]
    assert len(rows) == 4
    for row in rows:
        text = repr({k: v for k, v in row.items() if k != "image"}).encode()
        blob = row["image"]["bytes"]
        assert blob is not None and row["image"]["path"] is None
        assert not any(s.encode() in text or s.encode() in blob for s in SECRETS)
    cache_dir = tmp_path / "cache"
    build_cache(dd["train"], size=32, cache_dir=cache_dir)
    for path in cache_dir.rglob("*"):
        if path.is_file():
            assert not any(s.encode() in path.read_bytes() for s in SECRETS), path


def _raw_image(split):
    return split.features["image"].__class__(decode=False)


def test_a_non_dicom_named_dcm_is_named_without_pointing_at_force(tmp_path):
    fake = tmp_path / "scan.dcm"
    fake.write_text("patient list exported as text\n" * 20)
    with pytest.raises(ValueError) as info:
        read_xray(fake)
    message = str(info.value)
    assert str(fake) in message and "not a DICOM file" in message
    assert "force" not in message


MONO2 = "siim-cr-chest-pa-monochrome2.dcm"


MONO1 = "siim-cr-chest-pa-monochrome1-header.dcm"


def test_16bit_png_scaled_by_range_or_window(tmp_path):
    ramp = np.linspace(1000, 5000, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "w.png")
    out = np.asarray(read_xray(tmp_path / "w.png"))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    np.testing.assert_allclose(out, (ramp - 1000) / 4000 * 255, atol=0.51)
    windowed = np.asarray(read_xray(tmp_path / "w.png", window=(2000, 3000)))
    assert windowed[0, 0] == 0 and windowed[-1, -1] == 255


def test_color_modes_become_one_channel():
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    base = Image.fromarray(gray)
    for image in [
        base.convert("RGB"),
        base.convert("RGBA"),
        base.convert("P"),
        base.convert("CMYK"),
        base.convert("I"),
    ]:
        out = to_grayscale(image)
        assert out.mode == "L" and out.size == (16, 16)
        assert np.abs(np.asarray(out).astype(int) - gray).max() <= 2, image.mode


def test_dicom_monochrome1_is_inverted(shared_data):
    mono2 = np.asarray(read_xray(shared_data / "dicom" / MONO2)).astype(int)
    mono1 = np.asarray(read_xray(shared_data / "dicom" / MONO1)).astype(int)
    # The two files store identical pixels; only the header differs. Displayed correctly
    # (air dark) the MONOCHROME1 one is the exact inverse of the MONOCHROME2 one.
    stored = pydicom.dcmread(shared_data / "dicom" / MONO1).pixel_array.astype(int)
    np.testing.assert_array_equal(mono2, stored)
    np.testing.assert_array_equal(mono1, 255 - mono2)
    assert (
        mono2[:32, :32].mean() < 40 < 150 < mono2[480:544, 480:544].mean()
    )  # air dark, body bright


def test_no_patient_tag_reaches_dataset_or_cache(shared_data, tmp_path):
    header = pydicom.dcmread(shared_data / "dicom" / MONO2, stop_before_pixels=True)
    secrets = {str(header.PatientName), str(header.PatientID), str(header.StudyInstanceUID)}
    folder = tmp_path / "export"
    folder.mkdir()
    for name in (MONO1, MONO2):
        (folder / name).symlink_to(shared_data / "dicom" / name)
    dd = load_cxr_dataset("imagefolder", folder)
    ds = dd["train"]
    assert len(ds) == 2 and ds[0]["image"].size == (1024, 1024)
    for row in ds.cast_column("image", ds.features["image"].__class__(decode=False)):
        text = repr({k: v for k, v in row.items() if k != "image"}) + repr(row["image"]["path"])
        assert not any(s in text for s in secrets)
        assert row["image"]["bytes"] is not None and not any(
            s.encode() in row["image"]["bytes"] for s in secrets
        )
    cache_dir = tmp_path / "cache"
    build_cache(ds, size=256, cache_dir=cache_dir)
    for path in cache_dir.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert not any(s.encode() in blob for s in secrets), path
