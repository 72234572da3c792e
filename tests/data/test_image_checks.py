"""Image rows checked against the disk (``hf_cxr_mae.data.image_paths``): a missing, truncated or
non-image file and a path escaping the data folder are errors naming the CSV file and row."""

import shutil

import pytest
from helpers import load_labels_csv, write_labels_csv

from hf_cxr_mae.data import DataValidationError


def test_missing_image_named_with_its_row(four_pngs):
    write_labels_csv(four_pngs, "0.png,1,0\n1.png,0,1\nmissing.png,1,1\n")
    with pytest.raises(
        DataValidationError, match=r"labels.csv line 4: .*missing.png: file not found"
    ):
        load_labels_csv(four_pngs)


def test_truncated_image_found_when_decoding(four_pngs):
    data = (four_pngs / "1.png").read_bytes()
    (four_pngs / "cut.png").write_bytes(data[: len(data) // 2])
    write_labels_csv(four_pngs, "0.png,1,0\n1.png,0,1\ncut.png,1,1\n")
    with pytest.raises(DataValidationError, match=r"line 4: .*cut.png: unreadable image"):
        load_labels_csv(four_pngs, check_images="decode")


def test_not_an_image(four_pngs):
    (four_pngs / "notes.png").write_text("this is text")
    write_labels_csv(four_pngs, "0.png,1,0\n1.png,0,1\nnotes.png,1,1\n")
    with pytest.raises(DataValidationError, match=r"line 4: .*notes.png: unreadable image"):
        load_labels_csv(four_pngs)


def test_path_escaping_the_data_folder(four_pngs, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(four_pngs / "0.png", outside / "secret.png")
    write_labels_csv(four_pngs, f"0.png,1,0\n1.png,0,1\n../{outside.name}/secret.png,1,1\n")
    with pytest.raises(
        DataValidationError, match=r"line 4: path '\.\./.*secret.png' escapes the data folder"
    ):
        load_labels_csv(four_pngs)
