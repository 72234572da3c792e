"""Splits without leaks (``hf_cxr_mae.data.splits``): the same image (by path or by content) or the
same patient in two splits is refused naming both rows, for every source; patient ids that
differ only in leading zeros or spaces are one patient; with skip, a leak is dropped from
training and counted."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
from helpers import NIH_ROWS, chexpert_folder, csv_folder, nih_folder, write_unique_images

from hf_cxr_mae.data import DataValidationError, load_cxr_dataset
from hf_cxr_mae.data.labels import CHEXPERT5_LABELS
from hf_cxr_mae.data.splits import patient_split


def test_csv_same_path_in_train_and_test_names_both_rows(tmp_path):
    d = csv_folder(
        tmp_path,
        "path,A,split\na.png,1,train\nb.png,0,train\nc.png,1,test\na.png,1,test\n",
        ["a.png", "b.png", "c.png"],
    )
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("csv", d, split_column="split", validation_size=1)
    text = str(err.value)
    assert "labels.csv line 2" in text and "labels.csv line 5" in text, text
    assert "test" in text


def test_csv_same_bytes_under_two_names_in_two_splits(tmp_path):
    d = csv_folder(
        tmp_path,
        "path,A,split\na.png,1,train\nb.png,0,train\nc.png,1,test\n",
        ["a.png", "b.png"],
    )
    shutil.copy(d / "a.png", d / "c.png")  # the same picture, renamed: still a leak
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("csv", d, split_column="split", validation_size=1)
    text = str(err.value)
    assert "line 2" in text and "line 4" in text and "c.png" in text, text


# ``00075`` in one split and ``75`` in another is the same patient (a string column: the other
# ids are not numbers, so pandas keeps the zeros).
@pytest.mark.parametrize(
    "train_id, test_id, named", [("p1", "p1", "'p1'"), ("00075", "75", "patient '75'")]
)
def test_csv_same_patient_in_two_splits(tmp_path, train_id, test_id, named):
    d = csv_folder(
        tmp_path,
        f"path,A,pid,split\na.png,1,{train_id},train\nb.png,0,p2,train\nc.png,1,{test_id},test\n"
        "d.png,0,p3,test\n",
        ["a.png", "b.png", "c.png", "d.png"],
    )
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("csv", d, split_column="split", patient_column="pid", validation_size=1)
    text = str(err.value)
    assert "line 2" in text and "line 4" in text and named in text, text


def test_patient_ids_with_and_without_leading_zeros_are_one_patient():
    from datasets import Dataset

    from hf_cxr_mae.data.splits import patient_key

    assert {patient_key(p) for p in ("00075", "75", " 75 ", 75, 75.0)} == {"75"}
    assert (
        patient_key("-1") == "-1" and patient_key("") is None and patient_key(float("nan")) is None
    )
    ds = Dataset.from_dict({"patient_id": ["00075", "75", " 75", "p2", "p3", "p4"]})
    for seed in range(5):
        train, val = patient_split(ds, 0.3, seed=seed)
        sides = {p.strip().lstrip("0") for p in val["patient_id"]}
        assert not sides & {p.strip().lstrip("0") for p in train["patient_id"]}, seed


def test_csv_leak_skipped_from_training_and_counted(tmp_path, caplog):
    d = csv_folder(
        tmp_path,
        "path,A,pid,split\na.png,1,p1,train\nb.png,0,p2,train\ne.png,1,p4,train\n"
        "c.png,1,p1,test\nd.png,0,p3,test\n",
        ["a.png", "b.png", "c.png", "d.png", "e.png"],
    )
    with caplog.at_level(logging.WARNING):
        dd = load_cxr_dataset(
            "csv",
            d,
            split_column="split",
            patient_column="pid",
            validation_size=1,
            on_bad="skip",
        )
    # The test set stays whole; the training row of the shared patient goes.
    assert sorted(dd["test"]["image_id"]) == ["c.png", "d.png"]
    assert sorted(list(dd["train"]["image_id"]) + list(dd["validation"]["image_id"])) == [
        "b.png",
        "e.png",
    ]
    assert re.search(r"Skipping 1 bad .*line 2: patient .p1.", caplog.text, re.S), caplog.text


def test_nih_same_patient_in_train_val_and_test_lists(tmp_path):
    rows = [*NIH_ROWS[:4], ("00000005_000.png", "Hernia", "2")]  # patient 2 in both lists
    d = nih_folder(tmp_path, rows, [r[0] for r in rows[:3]], [r[0] for r in rows[3:]])
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("nih14", d, validation_size=1)
    text = str(err.value)
    assert "Data_Entry_2017.csv line 3" in text and "Data_Entry_2017.csv line 6" in text, text
    assert "'2'" in text


def test_chexpert_valid_patient_also_in_train(tmp_path):
    d = chexpert_folder(
        tmp_path,
        [
            "train/patient00001/study1/view1_frontal.jpg,F,50,Frontal,PA,1.0,,,,",
            "train/patient00002/study1/view1_frontal.jpg,F,50,Frontal,PA,0.0,,,,",
            "train/patient00003/study1/view1_frontal.jpg,F,50,Frontal,PA,,1.0,,,",
        ],
        ["valid/patient00002/study9/view1_frontal.jpg,F,50,Frontal,PA,1.0,,,,"],
    )
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("chexpert", d, validation_size=1)
    text = str(err.value)
    assert "train.csv line 3" in text and "valid.csv line 2" in text, text
    assert "patient00002" in text


def test_mimic_same_subject_in_train_and_test(tmp_path):
    (tmp_path / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\nd1,50,10000001,train\nd2,51,10000002,train\n"
        "d3,60,10000001,test\n"
    )
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,ViewPosition\nd1,PA\nd2,PA\nd3,PA\n"
    )
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        "subject_id,study_id," + ",".join(CHEXPERT5_LABELS) + "\n10000001,50,1.0,,,,\n"
    )
    write_unique_images(
        tmp_path,
        [
            "files/p10/p10000001/s50/d1.jpg",
            "files/p10/p10000002/s51/d2.jpg",
            "files/p10/p10000001/s60/d3.jpg",
        ],
        mode="RGB",
    )
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("mimic_cxr", tmp_path, findings="competition")
    text = str(err.value)
    assert "dicom_id d1" in text and "dicom_id d3" in text and "10000001" in text, text


def covidx_folder(tmp_path: Path, train: str, test: str) -> Path:
    (tmp_path / "train.txt").write_text(train)
    (tmp_path / "test.txt").write_text(test)
    names = [f"train/{line.split()[1]}" for line in train.splitlines() if line.strip()]
    names += [f"test/{line.split()[1]}" for line in test.splitlines() if line.strip()]
    write_unique_images(tmp_path, names)
    return tmp_path


def test_covidx_patient_and_image_in_train_and_test(tmp_path):
    d = covidx_folder(
        tmp_path,
        "p1 a.png positive src\np2 b.png negative src\np3 c.png negative src\n",
        "p1 x.png positive src\np9 y.png negative src\n",
    )
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("covidx", d, validation_size=1)
    text = str(err.value)
    assert "train.txt line 1" in text and "test.txt line 1" in text and "'p1'" in text, text
    # The same bytes under another patient id and name are caught by content.
    (d / "test.txt").write_text("p8 x.png positive src\np9 y.png negative src\n")
    shutil.copy(d / "train" / "b.png", d / "test" / "y.png")
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("covidx", d, validation_size=1)
    text = str(err.value)
    assert "train.txt line 2" in text and "test.txt line 2" in text, text


def test_nih_patient_ids_that_differ_only_in_spaces_are_one_patient(nih_dir, tmp_path):
    """A spreadsheet edit leaves '75 ' beside '75': still one patient, so the same person in
    train_val and test is refused rather than leaked."""
    import csv

    data = tmp_path / "nih"
    data.mkdir()
    (data / "images").symlink_to(nih_dir / "images")
    for name in ("train_val_list.txt", "test_list.txt"):
        shutil.copy(nih_dir / name, data / name)
    rows = list(csv.reader((nih_dir / "Data_Entry_2017.csv").open(newline="")))
    test_image = (nih_dir / "test_list.txt").read_text().split()[0]
    train_image = (nih_dir / "train_val_list.txt").read_text().split()[0]
    patient = next(r[3] for r in rows if r[0] == test_image)
    for r in rows:
        if r[0] == train_image:
            r[3] = f" {patient} "
    with (data / "Data_Entry_2017.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataValidationError, match=rf"patient '{patient}' is also in split 'test'"):
        load_cxr_dataset("nih14", data, image_dir="images")
