"""Pre-training mixtures (``load_pretraining_dataset``): labels and test images dropped, a source
(or a DICOM folder) given twice refused, and test images of one source given through another
refused."""

from pathlib import Path

import pytest
from conftest import SHARED_DATA
from helpers import write_images

from hf_cxr_mae.data import load_pretraining_dataset
from hf_cxr_mae.data.validation import DataValidationError


def test_pretraining_mixture_drops_labels_and_test(nih_dir, tmp_path):
    write_images(tmp_path, [f"{i}.png" for i in range(4)])
    ds = load_pretraining_dataset(
        [("nih14", nih_dir, {"image_dir": "images"}), ("imagefolder", tmp_path, {})]
    )
    assert len(ds) == 400 + 4
    assert "labels" not in ds.column_names and set(ds["source"]) == {"nih14", "imagefolder"}
    test_names = set((nih_dir / "test_list.txt").read_text().split())
    assert not test_names & {Path(i).name for i in ds["image_id"]}


def test_pretraining_refuses_a_source_given_twice(tmp_path):
    write_images(tmp_path, [f"{i}.png" for i in range(4)])
    with pytest.raises(DataValidationError, match=r"4 images are in more than one source, e\.g\. "
                       r".*source 1 \(imagefolder, .*\) and source 2 .*given twice"):  # fmt: skip
        load_pretraining_dataset([("imagefolder", tmp_path, {}), ("imagefolder", tmp_path, {})])


def test_pretraining_refuses_test_images_of_one_source_given_through_another(nih_dir, tmp_path):
    """NIH holds its test_list.txt images out; the same files linked into a folder source would
    put them into pre-training."""
    test_names = (nih_dir / "test_list.txt").read_text().split()[:3]
    folder = tmp_path / "more"
    folder.mkdir()
    for name in test_names:
        (folder / name).symlink_to(nih_dir / "images" / name)
    with pytest.raises(DataValidationError, match=r"3 images held out .* by one source are "
                       r"training images of another.*held out by source 1 \(nih14"):  # fmt: skip
        load_pretraining_dataset(
            [("nih14", nih_dir, {"image_dir": "images"}), ("imagefolder", folder, {})]
        )


def _dicom_folder(folder: Path, count: int) -> Path:
    """``count`` small, distinct uncompressed DICOM files (the shared CR radiograph, 64x64)."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    shared = SHARED_DATA / "dicom"
    source = shared / "siim-cr-chest-pa-monochrome2.dcm"
    if not source.is_file():
        pytest.skip(f"real DICOM not found at {source}")
    ds = pydicom.dcmread(source)
    pixels = ds.pixel_array[::16, ::16].copy()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = pixels.shape
    folder.mkdir(parents=True)
    for i in range(count):
        ds.PixelData = (pixels + i).astype(pixels.dtype).tobytes()
        ds.save_as(folder / f"{i}.dcm", enforce_file_format=True)
    return folder


def test_pretraining_refuses_a_dicom_folder_given_twice(tmp_path):
    # SILENT. A PACS export (.dcm files) named twice in a pre-training mixture (or a DICOM test
    # set of one source given again through a folder source): DICOMs are decoded to PNG bytes
    # without a path at loading, so _check_sources_disjoint never sees them; every image is
    # trained on twice (8 rows from 4 files), no warning. The same folder of PNGs is refused.
    from hf_cxr_mae.data import load_pretraining_dataset
    from hf_cxr_mae.data.validation import DataValidationError

    folder = _dicom_folder(tmp_path / "pacs", 4)
    with pytest.raises(DataValidationError, match="more than one source"):
        load_pretraining_dataset([("imagefolder", folder, {}), ("imagefolder", folder, {})])
