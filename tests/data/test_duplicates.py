"""Repeated rows and repeated files (``hf_cxr_mae.data.duplicates``): exact repeats kept once with
a warning, conflicting label rows refused naming both rows, for every source; the same image
under another name (a symlink or a copy) is the same image, never on both sides of the
validation split."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from helpers import (
    NIH_ROWS,
    all_ids,
    chexpert_folder,
    csv_folder,
    load_labels_csv,
    nih_folder,
    random_png,
    write_labels_csv,
    write_unique_images,
)

from hf_cxr_mae.data import DataValidationError, load_cxr_dataset
from hf_cxr_mae.data.labels import CHEXPERT5_LABELS, NIH14_LABELS


def test_duplicate_rows(four_pngs):
    write_labels_csv(four_pngs, "0.png,1,0\n1.png,0,1\n0.png,0,1\n")
    with pytest.raises(DataValidationError, match=r"line 4: duplicate of .*line 2"):
        load_labels_csv(four_pngs)


def test_nih_conflicting_duplicate_label_rows(tmp_path):
    rows = [*NIH_ROWS, ("00000002_000.png", "Effusion", "2")]
    d = nih_folder(tmp_path, rows, [r[0] for r in NIH_ROWS[:3]], [r[0] for r in NIH_ROWS[3:]])
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("nih14", d, validation_size=1)
    text = str(err.value)
    assert "Data_Entry_2017.csv line 3" in text and "Data_Entry_2017.csv line 7" in text, text


def test_nih_exact_duplicate_label_row_warns_and_keeps_one(tmp_path, caplog):
    rows = [*NIH_ROWS, NIH_ROWS[2]]
    d = nih_folder(tmp_path, rows, [r[0] for r in NIH_ROWS[:3]], [r[0] for r in NIH_ROWS[3:]])
    with caplog.at_level(logging.WARNING):
        dd = load_cxr_dataset("nih14", d, validation_size=1)
    assert all_ids(dd) == sorted(f"images/{r[0]}" for r in NIH_ROWS)
    assert "line 4" in caplog.text and "line 7" in caplog.text, caplog.text
    row = next(r for s in dd.values() for r in s if r["image_id"].endswith("00000003_000.png"))
    assert [n for n in NIH14_LABELS if row["labels"][n] == 1.0] == ["Mass", "Nodule"]


def test_csv_conflicting_and_exact_duplicates(tmp_path, caplog):
    d = csv_folder(
        tmp_path, "path,A,B\na.png,1,0\nb.png,0,1\na.png,0,0\n", ["a.png", "b.png", "c.png"]
    )
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("csv", d, validation_size=1)
    assert "line 2" in str(err.value) and "line 4" in str(err.value), str(err.value)
    (d / "labels.csv").write_text("path,A,B\na.png,1,0\nb.png,0,1\nc.png,1,1\na.png,1.0,0\n")
    with caplog.at_level(logging.WARNING):
        dd = load_cxr_dataset("csv", d, validation_size=1)
    assert all_ids(dd) == ["a.png", "b.png", "c.png"]
    assert "line 2" in caplog.text and "line 5" in caplog.text, caplog.text


def test_chexpert_conflicting_duplicate_rows(tmp_path):
    line = "train/patient00001/study1/view1_frontal.jpg,F,50,Frontal,PA,{},,,,"
    d = chexpert_folder(
        tmp_path,
        [
            line.format("1.0"),
            "train/patient00002/study1/view1_frontal.jpg,F,50,Frontal,PA,0.0,,,,",
            line.format("0.0"),
        ],
        ["valid/patient00009/study1/view1_frontal.jpg,F,50,Frontal,PA,1.0,,,,"],
    )
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("chexpert", d, validation_size=1)
    assert "train.csv line 2" in str(err.value) and "train.csv line 4" in str(err.value)


def test_mimic_conflicting_label_rows_for_one_study(tmp_path):
    (tmp_path / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\nd1,50,10000001,train\nd2,51,10000002,test\n"
    )
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text("dicom_id,ViewPosition\nd1,PA\nd2,PA\n")
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        "subject_id,study_id,"
        + ",".join(CHEXPERT5_LABELS)
        + "\n10000001,50,1.0,,,,\n10000002,51,,,,,\n10000001,50,0.0,,,,\n"
    )
    write_unique_images(
        tmp_path, ["files/p10/p10000001/s50/d1.jpg", "files/p10/p10000002/s51/d2.jpg"], "RGB"
    )
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("mimic_cxr", tmp_path, findings="competition")
    text = str(err.value)
    assert "chexpert.csv line 2" in text and "chexpert.csv line 4" in text, text


def _csv_with_aliases(root: Path, copy_label: int) -> Path:
    """Ten images labelled k % 2, plus 0.png again through a symlink and 1.png as a copy."""
    rows = ["path,A"]
    for k in range(10):
        random_png(root / f"{k}.png", k)
        rows.append(f"{k}.png,{k % 2}")
    os.symlink("0.png", root / "link.png")
    shutil.copy(root / "1.png", root / "copy1.png")
    rows += ["link.png,0", f"copy1.png,{copy_label}"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("seed", range(4))
def test_a_symlink_or_copy_never_lands_on_both_sides_of_the_validation_split(tmp_path, seed):
    root = _csv_with_aliases(tmp_path, copy_label=1)
    dd = load_cxr_dataset("csv", root, validation_size=0.5, seed=seed)
    # Recompute independently: the bytes of every image in each split.
    digests = {
        split: {(root / i).read_bytes() for i in dd[split]["image_id"]}
        for split in ("train", "validation")
    }
    assert not digests["train"] & digests["validation"]
    # Each distinct image is kept exactly once (the alias rows are exact duplicates).
    assert len(dd["train"]) + len(dd["validation"]) == 10


def test_a_copy_with_other_labels_is_a_conflict_naming_both_rows(tmp_path):
    root = _csv_with_aliases(tmp_path, copy_label=0)  # 1.png says A=1, its copy says A=0
    with pytest.raises(DataValidationError, match=r"line 13.*line 3") as err:
        load_cxr_dataset("csv", root)
    assert "labels" in str(err.value)
