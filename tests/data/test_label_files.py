"""Reading label and list files (``hf_cxr_mae.data.files``): encodings detected, byte-order marks
and repeated list entries handled, an empty or undecodable CSV, malformed rows and a header
naming a column twice refused naming file and line."""

from __future__ import annotations

import logging

import pytest
from helpers import (
    NIH_ROWS,
    all_ids,
    csv_folder,
    load_labels_csv,
    nih_folder,
    random_png,
    write_unique_images,
)

from hf_cxr_mae.data import DataValidationError, label_names, load_cxr_dataset


def test_empty_csv(four_pngs):
    (four_pngs / "empty.csv").write_text("")
    with pytest.raises(DataValidationError, match=r"empty\.csv is empty"):
        load_labels_csv(four_pngs, name="empty.csv")
    (four_pngs / "header.csv").write_text("path,A\n")
    with pytest.raises(DataValidationError, match=r"header\.csv has a header but no rows"):
        load_labels_csv(four_pngs, name="header.csv")


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-8-sig"])
def test_csv_in_other_encodings(tmp_path, encoding, caplog):
    write_unique_images(tmp_path, ["ré.png", "b.png"])
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


def test_a_csv_header_naming_a_column_twice_is_refused_not_a_new_class(tmp_path):
    random_png(tmp_path / "a.png", 1)
    random_png(tmp_path / "b.png", 2)
    (tmp_path / "labels.csv").write_text("path,Effusion,Mass,Effusion \na.png,1,0,0\nb.png,0,1,1\n")
    with pytest.raises(DataValidationError, match=r"labels\.csv.*\['Effusion'\] more than once"):
        load_cxr_dataset("csv", tmp_path, validation_size=1)
