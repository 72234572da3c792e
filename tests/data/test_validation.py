"""How bad input is reported (``hf_cxr_mae.data.validation``): with ``on_bad="skip"`` exactly the
bad rows are dropped and reported; when every row is bad the error still names them."""

from __future__ import annotations

import logging

import pytest
from helpers import NIH_ROWS, csv_folder, load_labels_csv, nih_folder, write_labels_csv

from hf_cxr_mae.data import DataValidationError, load_cxr_dataset


def test_skip_drops_exactly_the_bad_rows_and_reports_them(four_pngs, caplog):
    write_labels_csv(four_pngs, "0.png,1,0\nmissing.png,0,1\n2.png,1,7\n3.png,0,0\n1.png,1,1\n")
    with caplog.at_level(logging.WARNING):
        dd = load_labels_csv(four_pngs, on_bad="skip")
    kept = sorted(i for s in dd.values() for i in s["image_id"])
    assert kept == ["0.png", "1.png", "3.png"]
    assert "line 3" in caplog.text and "missing.png" in caplog.text and "line 4" in caplog.text


def test_nih_every_row_bad_with_skip(tmp_path):
    rows = [(n, "Efusion", p) for n, _, p in NIH_ROWS]
    d = nih_folder(tmp_path, rows, [r[0] for r in rows[:3]], [r[0] for r in rows[3:]])
    with pytest.raises(DataValidationError, match=r"no usable rows in .*Data_Entry_2017\.csv"):
        load_cxr_dataset("nih14", d, on_bad="skip")


def test_csv_every_row_bad_with_skip(tmp_path):
    d = csv_folder(tmp_path, "path,A\nmissing1.png,1\nmissing2.png,0\n", [])
    with pytest.raises(DataValidationError, match=r"no usable rows in .*labels\.csv"):
        load_cxr_dataset("csv", d, on_bad="skip")
