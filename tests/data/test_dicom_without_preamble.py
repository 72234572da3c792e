"""DICOM files without the 128-byte preamble and "DICM" and without a suffix (ACR-NEMA-style
exports, old PACS dumps named IM0001) are read by their content, exactly as the same image with
a preamble and a ``.dcm`` suffix; a suffix-less file that only looks like one is refused in
words naming it."""

import json

import numpy as np
import pydicom
import pytest
from helpers import save_classifier, tiny_classifier

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.data.images import has_dicom_magic, read_xray
from hf_cxr_mae.serving.predict import collect_images


@pytest.fixture
def legacy_folder(shared_data, tmp_path):
    """The shared DICOM twice without preamble or suffix: with its file meta (JPEG pixels), and
    ACR-NEMA style (no file meta at all, implicit VR little endian, raw pixels); plus a file
    that begins like a bare DICOM but holds no image, and a text file."""
    source = shared_data / "dicom" / "siim-cr-chest-pa-monochrome2.dcm"
    folder = tmp_path / "pacs"
    folder.mkdir()
    ds = pydicom.dcmread(source)
    ds.preamble = None
    ds.save_as(folder / "IM0001", enforce_file_format=False)
    acr = pydicom.dcmread(source)
    acr.decompress()
    acr.file_meta, acr.preamble = pydicom.dataset.FileMetaDataset(), None
    acr.save_as(folder / "IM0002", implicit_vr=True, little_endian=True, enforce_file_format=False)
    # Group 0008 first, like a bare data set, but no Rows / Columns / pixels.
    (folder / "IM0003").write_bytes(b"\x08\x00\x05\x00\x0a\x00\x00\x00ISO_IR 100" + bytes(64))
    (folder / "NOTES").write_text("scanned by the night shift\n")
    return source, folder


def test_bare_dicom_without_suffix_reads_as_its_dcm_twin(legacy_folder):
    source, folder = legacy_folder
    for name in ("IM0001", "IM0002"):
        assert (folder / name).read_bytes()[128:132] != b"DICM"
        assert has_dicom_magic(folder / name)
        np.testing.assert_array_equal(
            np.asarray(read_xray(folder / name)), np.asarray(read_xray(source))
        )
    assert not has_dicom_magic(folder / "NOTES")


def test_a_folder_lists_bare_dicoms_and_names_what_it_leaves_out(legacy_folder, caplog):
    _, folder = legacy_folder
    with caplog.at_level("WARNING"):
        found = collect_images([folder])
    assert found == [folder / "IM0001", folder / "IM0002", folder / "IM0003"]
    assert "Left out 1 files" in caplog.text and "NOTES" in caplog.text
    with pytest.raises(ValueError) as info:
        read_xray(folder / "IM0003")
    assert str(info.value) == (
        f"Cannot read DICOM {folder / 'IM0003'}: not a DICOM file (no 'DICM' header, and no "
        "image tags such as Rows / Columns)"
    )


def test_predict_gives_a_bare_dicom_the_probabilities_of_its_twin(legacy_folder, tmp_path, capsys):
    source, folder = legacy_folder
    model = save_classifier(tiny_classifier(["Effusion", "Nodule"]), tmp_path / "model")
    with pytest.raises(SystemExit) as info:  # exit 2: some images could not be read
        cli(["predict", "--model", str(model), "--json", "--no_fast", str(source), str(folder)])
    assert info.value.code == 2
    out = json.loads(capsys.readouterr().out)
    rows = {row["path"]: row["probabilities"] for row in out["predictions"]}
    assert list(rows) == [str(source), str(folder / "IM0001"), str(folder / "IM0002")]
    assert rows[str(folder / "IM0001")] == rows[str(source)] == rows[str(folder / "IM0002")]
    assert [f["path"] for f in out["failures"]] == [str(folder / "IM0003")]
