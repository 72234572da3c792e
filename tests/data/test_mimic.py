"""The MIMIC-CXR loader (``hf_cxr_mae.data.mimic``): split file, CheXpert-style labels and the
metadata view filter; an unknown split value is named, not dropped."""

from __future__ import annotations

import pytest
from helpers import write_images, write_unique_images

from hf_cxr_mae.data import CHEXPERT5_LABELS, DataValidationError, load_cxr_dataset


def test_mimic_cxr_split_labels_and_views(tmp_path):
    (tmp_path / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\nd1,50,10000001,train\nd2,50,10000001,train\nd3,60,10000002,test\nd4,70,10000003,validate\n"
    )
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,ViewPosition\nd1,PA\nd2,LATERAL\nd3,AP\nd4,PA\n"
    )
    header = "subject_id,study_id," + ",".join(CHEXPERT5_LABELS)
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        header + "\n10000001,50,1.0,,-1.0,0.0,\n10000002,60,,1.0,,,\n"
    )
    write_images(
        tmp_path,
        [
            "files/p10/p10000001/s50/d1.jpg",
            "files/p10/p10000002/s60/d3.jpg",
            "files/p10/p10000003/s70/d4.jpg",
        ],
        mode="RGB",
    )
    dd = load_cxr_dataset("mimic_cxr", tmp_path, findings="competition", uncertainty="ones")
    assert sorted(dd) == ["test", "train", "validation"]
    assert len(dd["train"]) == 1  # the lateral view is filtered out
    assert dd["train"][0]["labels"] == dict(
        zip(CHEXPERT5_LABELS, [1.0, 0.0, 1.0, 0.0, 0.0], strict=True)
    )
    assert dd["validation"][0]["labels"] == dict.fromkeys(CHEXPERT5_LABELS, 0.0)  # no label row


def test_mimic_unknown_split_value_is_named_not_dropped(tmp_path):
    (tmp_path / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\nd1,50,10000001,train\nd2,51,10000002,val\n"
    )
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text("dicom_id,ViewPosition\nd1,PA\nd2,PA\n")
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        "subject_id,study_id," + ",".join(CHEXPERT5_LABELS) + "\n10000001,50,1.0,,,,\n"
    )
    write_unique_images(
        tmp_path, ["files/p10/p10000001/s50/d1.jpg", "files/p10/p10000002/s51/d2.jpg"], "RGB"
    )
    with pytest.raises(DataValidationError, match=r"split\.csv line 3: split 'val'"):
        load_cxr_dataset("mimic_cxr", tmp_path, findings="competition")
