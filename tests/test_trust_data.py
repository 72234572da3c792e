"""Bad-input corpus for the data loaders (issue 11, cases 6-9 and 13; issue 16, patient split).

Each test builds its own small folder in ``tmp_path`` holding one kind of bad input, and checks
that loading it gives an error naming the file and row at fault, or a counted, reported skip.
Nothing here trusts the loader for the expected answer: expectations come from the files the
test wrote.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_cxr_mae.data import DataValidationError, label_names, load_cxr_dataset
from hf_cxr_mae.data.label_stats import log_label_counts
from hf_cxr_mae.data.labels import CHEXPERT5_LABELS, NIH14_LABELS
from hf_cxr_mae.data.splits import patient_split

_rng = np.random.default_rng(1234)


def write_images(root: Path, names: list[str], mode: str = "L") -> None:
    """Tiny random images (all different bytes) at ``root / name``."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = _rng.integers(0, 255, (12, 12), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(path)


def csv_folder(tmp_path: Path, body: str, images: list[str], name: str = "labels.csv") -> Path:
    write_images(tmp_path, images)
    (tmp_path / name).write_text(body)
    return tmp_path


def all_ids(dd) -> list[str]:
    return sorted(i for split in dd.values() for i in split["image_id"])


# --- 6: the same image or patient in two splits ------------------------------------------------


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


def nih_folder(tmp_path: Path, rows: list[tuple[str, str, str]], train: list[str], test: list[str]):
    """A synthetic NIH release: ``rows`` are (Image Index, Finding Labels, Patient ID)."""
    write_images(tmp_path / "images", sorted({r[0] for r in rows}))
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID,View Position"]
    lines += [f"{name},{findings},0,{pid},PA" for name, findings, pid in rows]
    (tmp_path / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "train_val_list.txt").write_text("".join(f"{n}\n" for n in train))
    (tmp_path / "test_list.txt").write_text("".join(f"{n}\n" for n in test))
    return tmp_path


NIH_ROWS = [
    ("00000001_000.png", "Effusion", "1"),
    ("00000002_000.png", "No Finding", "2"),
    ("00000003_000.png", "Mass|Nodule", "3"),
    ("00000004_000.png", "No Finding", "4"),
    ("00000005_000.png", "Hernia", "5"),
]


def test_nih_same_patient_in_train_val_and_test_lists(tmp_path):
    rows = [*NIH_ROWS[:4], ("00000005_000.png", "Hernia", "2")]  # patient 2 in both lists
    d = nih_folder(tmp_path, rows, [r[0] for r in rows[:3]], [r[0] for r in rows[3:]])
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("nih14", d, validation_size=1)
    text = str(err.value)
    assert "Data_Entry_2017.csv line 3" in text and "Data_Entry_2017.csv line 6" in text, text
    assert "'2'" in text


def chexpert_folder(tmp_path: Path, train: list[str], valid: list[str]) -> Path:
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT5_LABELS)
    for name, body in (("train.csv", train), ("valid.csv", valid)):
        (tmp_path / name).write_text(header + "\n" + "\n".join(body) + "\n")
        write_images(tmp_path, [line.split(",")[0] for line in body])
    return tmp_path


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
    write_images(
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
    write_images(tmp_path, names)
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


# --- 7: duplicate label rows --------------------------------------------------------------------


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
    write_images(
        tmp_path, ["files/p10/p10000001/s50/d1.jpg", "files/p10/p10000002/s51/d2.jpg"], "RGB"
    )
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("mimic_cxr", tmp_path, findings="competition")
    text = str(err.value)
    assert "chexpert.csv line 2" in text and "chexpert.csv line 4" in text, text


# --- 8: label names that look like typos; counts per class -------------------------------------


def test_misspelled_finding_warns_with_its_close_match(tmp_path, caplog):
    d = csv_folder(
        tmp_path,
        "path,findings\na.png,Effusion\nb.png,Effusion|Mass\nc.png,Efusion\nd.png,No Finding\n",
        ["a.png", "b.png", "c.png", "d.png"],
    )
    with caplog.at_level(logging.WARNING):
        dd = load_cxr_dataset("csv", d, label_column="findings", validation_size=1)
    assert label_names(dd["train"]) == ["Effusion", "Efusion", "Mass"]  # still loaded as given
    warning = [r.getMessage() for r in caplog.records if "Efusion" in r.getMessage()]
    assert warning and "'Effusion'" in warning[0], caplog.text
    assert not any("'Mass'" in w for w in warning)


def test_label_counts_per_split_match_the_file(tmp_path, caplog):
    rows = [("a.png", "1,0,-1"), ("b.png", "1,1,0"), ("c.png", "0,,1"), ("d.png", "1,0,1")]
    d = csv_folder(
        tmp_path,
        "path,X,Y,Z\n" + "".join(f"{p},{v}\n" for p, v in rows),
        [p for p, _ in rows],
    )
    dd = load_cxr_dataset("csv", d, validation_size=1, uncertainty="ignore")
    with caplog.at_level(logging.INFO, logger="hf_cxr_mae.data.label_stats"):
        counts = log_label_counts(dd)
    for split, ds in dd.items():
        cells = {p: v.split(",") for p, v in rows}
        expected = {n: sum(cells[i][k] == "1" for i in ds["image_id"]) for k, n in enumerate("XYZ")}
        assert counts[split] == expected
        assert split in caplog.text
    # A single-label dataset counts images per class.
    write_images(
        tmp_path / "cls", [f"{c}/{i}.png" for c, n in (("a", 3), ("b", 5)) for i in range(n)]
    )
    dd = load_cxr_dataset("imagefolder", tmp_path / "cls", validation_size=2)
    counts = log_label_counts(dd)
    assert sum(counts["train"].values()) + sum(counts["validation"].values()) == 8
    assert counts["train"]["a"] + counts["validation"]["a"] == 3


# --- 9: image folders ---------------------------------------------------------------------------


def test_imagefolder_ignores_os_and_tool_junk(tmp_path):
    d = tmp_path / "set"
    write_images(d, [f"{c}/{i}.png" for c in ("normal", "pneumonia") for i in range(3)])
    write_images(d, ["__MACOSX/normal/._0.png", ".ipynb_checkpoints/x.png", ".cache/y.png"])
    write_images(d, ["normal/.hidden.png", "pneumonia/.ipynb_checkpoints/z.png"])
    (d / "normal" / "._1.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (d / ".DS_Store").write_bytes(b"junk")
    dd = load_cxr_dataset("imagefolder", d, validation_size=2)
    assert label_names(dd["train"]) == ["normal", "pneumonia"]
    assert all_ids(dd) == sorted(f"{c}/{i}.png" for c in ("normal", "pneumonia") for i in range(3))


@pytest.mark.parametrize("stray", ["stray.png", "normal/deeper/stray.png"])
def test_imagefolder_mixed_layout_names_the_stray_file(tmp_path, stray):
    d = tmp_path / "set"
    write_images(d, [f"{c}/{i}.png" for c in ("normal", "pneumonia") for i in range(3)])
    write_images(d, [stray])
    with pytest.raises(DataValidationError, match=re.escape(stray)):
        load_cxr_dataset("imagefolder", d, validation_size=2)


def test_imagefolder_split_folders(tmp_path):
    d = tmp_path / "set"
    layout = {"train": 4, "val": 2, "test": 3}
    write_images(
        d,
        [
            f"{s}/{c}/{i}.png"
            for s, n in layout.items()
            for c in ("NORMAL", "PNEUMONIA")
            for i in range(n)
        ],
    )
    dd = load_cxr_dataset("imagefolder", d)
    assert sorted(dd) == ["test", "train", "validation"]
    assert {s: len(dd[s]) for s in dd} == {"train": 8, "validation": 4, "test": 6}
    names = label_names(dd["train"])
    assert names == ["NORMAL", "PNEUMONIA"]
    for split in dd.values():
        for row in split:
            assert names[row["label"]] == row["image_id"].split("/")[1]
    # Without a validation folder, one is split off the training folder.
    shutil.rmtree(d / "val")
    dd = load_cxr_dataset("imagefolder", d, validation_size=2)
    assert {s: len(dd[s]) for s in dd} == {"train": 6, "validation": 2, "test": 6}
    # A class missing from one split is refused, naming it.
    shutil.rmtree(d / "test" / "PNEUMONIA")
    with pytest.raises(DataValidationError, match="PNEUMONIA"):
        load_cxr_dataset("imagefolder", d, validation_size=2)


def test_binary_roc_figure_has_one_panel(tmp_path):
    pytest.importorskip("matplotlib")
    from hf_cxr_mae.reports import write_report

    rng = np.random.default_rng(0)
    classes = rng.integers(0, 2, 40)
    logits = rng.normal(size=(40, 2)) + np.eye(2)[classes]
    write_report(
        tmp_path / "two",
        logits,
        classes,
        ["normal", "covid"],
        "test",
        "single_label_classification",
        n_resamples=10,
    )
    with Image.open(tmp_path / "two" / "roc.png") as im:
        width, height = im.size
    assert abs(width - height) <= 2, (width, height)  # one square panel, not two side by side
    classes3 = rng.integers(0, 3, 40)
    logits3 = rng.normal(size=(40, 3))
    write_report(
        tmp_path / "three",
        logits3,
        classes3,
        ["a", "b", "c"],
        "test",
        "single_label_classification",
        n_resamples=10,
    )
    with Image.open(tmp_path / "three" / "roc.png") as im:
        assert abs(im.size[0] - 3 * im.size[1]) <= 3, im.size


# --- 13: encodings, malformed rows, empty results, list files ----------------------------------


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-8-sig"])
def test_csv_in_other_encodings(tmp_path, encoding, caplog):
    write_images(tmp_path, ["ré.png", "b.png"])
    (tmp_path / "labels.csv").write_bytes("path,Épanchement\nré.png,1\nb.png,0\n".encode(encoding))
    with caplog.at_level(logging.WARNING):
        dd = load_cxr_dataset("csv", tmp_path, validation_size=1)
    assert all_ids(dd) == ["b.png", "ré.png"]
    assert label_names(dd["train"]) == ["Épanchement"]
    if encoding == "latin-1":  # a guess: said out loud, naming the file
        assert "labels.csv" in caplog.text and "UTF-8" in caplog.text


def test_undecodable_csv_names_the_file(tmp_path):
    (tmp_path / "labels.csv").write_bytes(b"path,A\n\x00\x00\xff\xfe\x00\xd8\x00\x00a.png,1\n")
    with pytest.raises(DataValidationError, match=r"labels\.csv"):
        load_cxr_dataset("csv", tmp_path, validation_size=1)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("path,A,B\na.png,1,0,1\nb.png,0,1\n", 2),  # extra field in the first row
        ("path,A,B\na.png,1,0\nb.png,0,1,1\n", 3),  # extra field later
        ("path,A,B\na.png,1,0\nb.png,0\n", 3),  # a field missing
        ('path,A,B\na.png,"1,0\nb.png,0,1\n', 2),  # a quote never closed
        ('path,A,B\na.png,"1,0\nb.png,0",1\nc.png,1,1\n', 2),  # a quote swallowing a line
    ],
)
def test_malformed_csv_rows_name_file_and_line(tmp_path, body, line):
    csv_folder(tmp_path, body, ["a.png", "b.png", "c.png"])
    with pytest.raises(
        DataValidationError,
        match=rf"labels\.csv line {line}: .*(fields, the header has|quote left open)",
    ):
        load_cxr_dataset("csv", tmp_path, validation_size=1)


def test_nih_every_row_bad_with_skip(tmp_path):
    rows = [(n, "Efusion", p) for n, _, p in NIH_ROWS]
    d = nih_folder(tmp_path, rows, [r[0] for r in rows[:3]], [r[0] for r in rows[3:]])
    with pytest.raises(DataValidationError, match=r"no usable rows in .*Data_Entry_2017\.csv"):
        load_cxr_dataset("nih14", d, on_bad="skip")


def test_csv_every_row_bad_with_skip(tmp_path):
    d = csv_folder(tmp_path, "path,A\nmissing1.png,1\nmissing2.png,0\n", [])
    with pytest.raises(DataValidationError, match=r"no usable rows in .*labels\.csv"):
        load_cxr_dataset("csv", d, on_bad="skip")


def test_nih_list_with_bom_and_a_duplicated_entry(tmp_path, caplog):
    train = [r[0] for r in NIH_ROWS[:3]]
    test = [r[0] for r in NIH_ROWS[3:]]
    d = nih_folder(tmp_path, NIH_ROWS, train, test)
    # Notepad's "UTF-8 with BOM", and the second name listed twice.
    (d / "train_val_list.txt").write_bytes(
        "\n".join([*train, train[1]]).encode("utf-8-sig") + b"\n"
    )
    with caplog.at_level(logging.WARNING):
        dd = load_cxr_dataset("nih14", d, validation_size=1)
    assert all_ids(dd) == sorted(f"images/{r[0]}" for r in NIH_ROWS)
    assert "train_val_list.txt line 4" in caplog.text and "line 2" in caplog.text, caplog.text
    assert "line 4: duplicate of" in caplog.text
    # UTF-16 list files (a Windows editor's "Unicode") read too.
    (d / "test_list.txt").write_text("\n".join(test) + "\n", encoding="utf-16")
    dd = load_cxr_dataset("nih14", d, validation_size=1)
    assert sorted(dd["test"]["image_id"]) == [f"images/{n}" for n in test]


# --- issue 16: the validation split is by patient, on data with several images per patient -----


@pytest.fixture
def chexpert_rows(shared_data, tmp_path):
    """The real CheXpert label rows (several images per patient), with small fake images."""
    src = shared_data / "chexpert-labels-sample" / "train.csv"
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    root = tmp_path / "chexpert"
    rng = np.random.default_rng(0)
    for r in rows:
        path = root / r["Path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(path)
    shutil.copy(src, root / "CheXpert-v1.0-small" / "train.csv")
    return root, rows


def test_validation_split_is_patient_disjoint_with_many_images_per_patient(chexpert_rows):
    root, rows = chexpert_rows
    # Frontal images per patient, read from the paths by this test (the loader keeps frontal).
    images_per_patient: dict[str, int] = {}
    for r in rows:
        if r["Frontal/Lateral"] == "Frontal":
            p = re.search(r"train/(patient\d+)/", r["Path"]).group(1)
            images_per_patient[p] = images_per_patient.get(p, 0) + 1
    # Enough patients with several images that splitting by image would cut some in two.
    assert sum(n > 1 for n in images_per_patient.values()) > 30
    for seed in range(3):
        dd = load_cxr_dataset(
            "chexpert", root, findings="all", validation_size=0.3, seed=seed, check_images="exists"
        )

        def patients(ds):
            return {re.search(r"(patient\d+)/", i).group(1) for i in ds["image_id"]}

        train, val = patients(dd["train"]), patients(dd["validation"])
        assert len(val) > 5 and not train & val, sorted(train & val)
        # Every image of a validation patient went to validation.
        n_val = sum(images_per_patient[p] for p in val)
        assert len(dd["validation"]) == n_val
        assert len(dd["train"]) + len(dd["validation"]) == sum(images_per_patient.values())


def test_patient_split_on_a_synthetic_table():
    from datasets import Dataset

    rng = np.random.default_rng(3)
    patients = [f"p{i}" for i in range(40) for _ in range(rng.integers(1, 6))]
    ds = Dataset.from_dict({"patient_id": patients, "row": list(range(len(patients)))})
    train, val = patient_split(ds, 0.25, seed=7)
    assert not set(train["patient_id"]) & set(val["patient_id"])
    assert sorted(list(train["row"]) + list(val["row"])) == list(range(len(patients)))
    assert len(val) >= 0.25 * len(patients)


def test_mimic_unknown_split_value_is_named_not_dropped(tmp_path):
    (tmp_path / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\nd1,50,10000001,train\nd2,51,10000002,val\n"
    )
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text("dicom_id,ViewPosition\nd1,PA\nd2,PA\n")
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        "subject_id,study_id," + ",".join(CHEXPERT5_LABELS) + "\n10000001,50,1.0,,,,\n"
    )
    write_images(
        tmp_path, ["files/p10/p10000001/s50/d1.jpg", "files/p10/p10000002/s51/d2.jpg"], "RGB"
    )
    with pytest.raises(DataValidationError, match=r"split\.csv line 3: split 'val'"):
        load_cxr_dataset("mimic_cxr", tmp_path, findings="competition")
