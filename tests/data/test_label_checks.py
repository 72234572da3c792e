"""Label values and names (``hf_cxr_mae.data.labels``, ``label_stats``): a value outside the
allowed set or an unknown label name is an error naming file and row, a misspelled finding warns
with its close match, and the per-split label counts match the file."""

from __future__ import annotations

import logging

import pytest
from helpers import csv_folder, load_labels_csv, write_labels_csv, write_unique_images

from hf_cxr_mae.data import DataValidationError, label_names, load_cxr_dataset
from hf_cxr_mae.data.label_stats import log_label_counts


def test_label_value_outside_the_allowed_set(four_pngs):
    write_labels_csv(four_pngs, "0.png,1,0\n1.png,2,1\n2.png,1,yes\n")
    with pytest.raises(DataValidationError) as err:
        load_labels_csv(four_pngs)
    assert "labels.csv line 3: column 'A': '2' is not 1, 0, -1 or blank" in str(err.value)
    assert "labels.csv line 4: column 'B': 'yes'" in str(err.value)


def test_unknown_label_name(four_pngs):
    (four_pngs / "d.csv").write_text("path,findings\n0.png,A|B\n1.png,A|Z\n2.png,B\n")
    with pytest.raises(
        DataValidationError, match=r"d.csv line 3: unknown label\(s\) \['Z'\]; valid: \['A', 'B'\]"
    ):
        load_cxr_dataset(
            "csv",
            four_pngs,
            csv_file="d.csv",
            label_column="findings",
            label_names=["A", "B"],
            validation_size=1,
        )


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
    write_unique_images(
        tmp_path / "cls", [f"{c}/{i}.png" for c, n in (("a", 3), ("b", 5)) for i in range(n)]
    )
    dd = load_cxr_dataset("imagefolder", tmp_path / "cls", validation_size=2)
    counts = log_label_counts(dd)
    assert sum(counts["train"].values()) + sum(counts["validation"].values()) == 8
    assert counts["train"]["a"] + counts["validation"]["a"] == 3
