"""Every kind of bad input gives an error naming the offending file and row (or is skipped and reported)."""

import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from hf_cxr_mae.data import DataValidationError, load_cxr_dataset


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    return tmp_path


def write_csv(folder, body: str, name: str = "labels.csv"):
    (folder / name).write_text("path,A,B\n" + body)
    return name


def load(folder, name="labels.csv", **kw):
    return load_cxr_dataset("csv", folder, csv_file=name, validation_size=1, **kw)


def test_missing_image_named_with_its_row(folder):
    write_csv(folder, "0.png,1,0\n1.png,0,1\nmissing.png,1,1\n")
    with pytest.raises(
        DataValidationError, match=r"labels.csv line 4: .*missing.png: file not found"
    ):
        load(folder)


def test_truncated_image_found_when_decoding(folder):
    data = (folder / "1.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    write_csv(folder, "0.png,1,0\n1.png,0,1\ncut.png,1,1\n")
    with pytest.raises(DataValidationError, match=r"line 4: .*cut.png: unreadable image"):
        load(folder, check_images="decode")


def test_not_an_image(folder):
    (folder / "notes.png").write_text("this is text")
    write_csv(folder, "0.png,1,0\n1.png,0,1\nnotes.png,1,1\n")
    with pytest.raises(DataValidationError, match=r"line 4: .*notes.png: unreadable image"):
        load(folder)


def test_label_value_outside_the_allowed_set(folder):
    write_csv(folder, "0.png,1,0\n1.png,2,1\n2.png,1,yes\n")
    with pytest.raises(DataValidationError) as err:
        load(folder)
    assert "labels.csv line 3: column 'A': '2' is not 1, 0, -1 or blank" in str(err.value)
    assert "labels.csv line 4: column 'B': 'yes'" in str(err.value)


def test_unknown_label_name(folder):
    (folder / "d.csv").write_text("path,findings\n0.png,A|B\n1.png,A|Z\n2.png,B\n")
    with pytest.raises(
        DataValidationError, match=r"d.csv line 3: unknown label\(s\) \['Z'\]; valid: \['A', 'B'\]"
    ):
        load_cxr_dataset(
            "csv",
            folder,
            csv_file="d.csv",
            label_column="findings",
            label_names=["A", "B"],
            validation_size=1,
        )


def test_duplicate_rows(folder):
    write_csv(folder, "0.png,1,0\n1.png,0,1\n0.png,0,1\n")
    with pytest.raises(DataValidationError, match=r"line 4: duplicate of .*line 2"):
        load(folder)


def test_empty_csv(folder):
    (folder / "empty.csv").write_text("")
    with pytest.raises(DataValidationError, match=r"empty\.csv is empty"):
        load(folder, name="empty.csv")
    (folder / "header.csv").write_text("path,A\n")
    with pytest.raises(DataValidationError, match=r"header\.csv has a header but no rows"):
        load(folder, name="header.csv")


def test_path_escaping_the_data_folder(folder, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(folder / "0.png", outside / "secret.png")
    write_csv(folder, f"0.png,1,0\n1.png,0,1\n../{outside.name}/secret.png,1,1\n")
    with pytest.raises(
        DataValidationError, match=r"line 4: path '\.\./.*secret.png' escapes the data folder"
    ):
        load(folder)


def test_skip_drops_exactly_the_bad_rows_and_reports_them(folder, caplog):
    write_csv(folder, "0.png,1,0\nmissing.png,0,1\n2.png,1,7\n3.png,0,0\n1.png,1,1\n")
    with caplog.at_level(logging.WARNING):
        dd = load(folder, on_bad="skip")
    kept = sorted(i for s in dd.values() for i in s["image_id"])
    assert kept == ["0.png", "1.png", "3.png"]
    assert "line 3" in caplog.text and "missing.png" in caplog.text and "line 4" in caplog.text


@pytest.fixture
def nih_copy(nih_dir, tmp_path):
    """The real sample's label and list files beside a link to its images (nothing copied)."""
    for name in ("Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt"):
        shutil.copy(nih_dir / name, tmp_path / name)
    (tmp_path / "images").symlink_to(nih_dir / "images")
    return tmp_path


def test_list_file_naming_a_missing_image(nih_copy):
    with open(nih_copy / "test_list.txt", "a") as f:
        f.write("99999999_000.png\n")
    with pytest.raises(
        DataValidationError,
        match=r"test_list.txt line 101: 99999999_000.png is not in Data_Entry_2017.csv",
    ):
        load_cxr_dataset("nih14", nih_copy)


def test_nih_unknown_finding_and_missing_image(nih_copy):
    lines = (nih_copy / "Data_Entry_2017.csv").read_text().splitlines()
    lines[1] = lines[1].replace("Cardiomegaly", "Cardiomegally", 1)
    lines[2] = lines[2].replace("00000100_000.png", "00000100_001.png", 1)
    (nih_copy / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("nih14", nih_copy)
    assert "Data_Entry_2017.csv line 2: unknown finding(s) ['Cardiomegally']" in str(err.value)
    assert "Data_Entry_2017.csv line 3: image 00000100_001.png not found" in str(err.value)


def test_chexpert_bad_cell_names_file_row_and_column(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    (root / "train" / "patient1").mkdir(parents=True)
    Image.new("L", (8, 8)).save(root / "train" / "patient1" / "v.jpg")
    (root / "train.csv").write_text(
        "Path,Frontal/Lateral,AP/PA,Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural Effusion\n"
        "CheXpert-v1.0-small/train/patient1/v.jpg,Frontal,PA,1.0,0.5,,,\n"
    )
    with pytest.raises(
        DataValidationError,
        match=r"train.csv line 2: column 'Cardiomegaly': '0.5' is not 1, 0, -1 or blank",
    ):
        load_cxr_dataset("chexpert", root)


def test_bad_policy_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="Unknown uncertainty policy 'maybe'"):
        load_cxr_dataset("chexpert", tmp_path, uncertainty="maybe")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cxr_dataset("nih14", tmp_path / "nowhere")
