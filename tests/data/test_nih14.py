"""The NIH ChestX-ray14 loader (``hf_cxr_mae.data.nih14``) on the real sample: labels, list files
and patient-disjoint splits, RGBA files, the same name in two image folders refused, list and
label-file errors named by file and line; and the shared-data fixtures skip without the data
(fail under CI=true)."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_cxr_mae.data import (
    NIH14_LABELS,
    DataValidationError,
    label_names,
    load_cxr_dataset,
    read_xray,
)


def nih_rows(nih_dir: Path) -> dict[str, dict[str, str]]:
    with open(nih_dir / "Data_Entry_2017.csv", newline="") as f:
        return {r["Image Index"]: r for r in csv.DictReader(f)}


def test_nih14_labels_lists_and_patient_disjoint_splits(nih_dir):
    dd = load_cxr_dataset("nih14", nih_dir, image_dir="images", validation_size=0.2, seed=1)
    assert label_names(dd["train"]) == NIH14_LABELS
    rows = nih_rows(nih_dir)
    for split in dd.values():
        for row in split.select(range(0, len(split), 37)):
            name = Path(row["image_id"]).name
            findings = rows[name]["Finding Labels"].split("|")
            assert [row["labels"][n] for n in NIH14_LABELS] == [
                float(n in findings) for n in NIH14_LABELS
            ]
            assert row["patient_id"] == rows[name]["Patient ID"]
            assert row["view"] == rows[name]["View Position"]
    names = {s: {Path(i).name for i in dd[s]["image_id"]} for s in dd}
    test_list = set((nih_dir / "test_list.txt").read_text().split())
    train_val_list = set((nih_dir / "train_val_list.txt").read_text().split())
    assert names["test"] == test_list
    assert names["train"] | names["validation"] == train_val_list
    assert len(names["validation"]) == 80
    patients = {s: set(dd[s]["patient_id"]) for s in dd}
    assert not patients["train"] & patients["validation"]
    assert not (patients["train"] | patients["validation"]) & patients["test"]


def test_nih14_rgba_files_load(nih_dir):
    rgba = [
        p.name for p in sorted((nih_dir / "images").glob("*.png")) if Image.open(p).mode == "RGBA"
    ]
    assert rgba, "the sample is documented to hold RGBA files"
    dd = load_cxr_dataset("nih14", nih_dir, image_dir="images")
    everything = {
        Path(r["image_id"]).name: r
        for s in dd.values()
        for r in s.select_columns(["image_id", "image"])
    }
    for name in rgba:
        gray = read_xray(nih_dir / "images" / name)
        assert gray.mode == "L" and gray.size == everything[name]["image"].size
        assert 10 < np.asarray(gray).mean() < 245  # a real radiograph, not a blank plane


def test_nih14_same_name_in_two_folders_is_refused(nih_dir):
    with pytest.raises(ValueError, match=r"00000075_000.png is both .*pass image_dir"):
        load_cxr_dataset("nih14", nih_dir)


@pytest.mark.parametrize("ci", [True, False])
def test_missing_shared_data_fails_under_ci_and_skips_elsewhere(tmp_path, ci):
    from conftest import run_pytest_alone

    missing = tmp_path / "no-such-folder"
    env = {"CXR_SHARED_DATA": str(missing), **({"CI": "true"} if ci else {})}
    code, out = run_pytest_alone(Path(__file__), "test_nih14_same_name_in_two_folders", env)
    reason = f"real data not found at {missing / 'nih-cxr14-sample'}"
    assert reason in out, out[-2000:]
    if ci:  # a CI without the data must go red, saying why
        assert code == 1 and "CI=true and " + reason in out and "1 error" in out, out[-2000:]
    else:
        assert code == 0 and "1 skipped" in out, out[-2000:]


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
