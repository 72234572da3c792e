"""The CheXpert loader (``hf_cxr_mae.data.chexpert``) on the real label rows with images made here:
the uncertainty policies, the paper's policy on a known row, the frontal filter and every
finding, and a bad cell named by file, row and column."""

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from hf_cxr_mae.data import CHEXPERT5_LABELS, DataValidationError, label_names, load_cxr_dataset


@pytest.fixture
def chexpert_dir(shared_data, tmp_path):
    src = shared_data / "chexpert-labels-sample" / "train.csv"
    root = tmp_path / "chexpert"
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(0)
    for r in rows:
        path = root / r["Path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 32), dtype=np.uint8)).save(path, quality=90)
    shutil.copy(src, root / "CheXpert-v1.0-small" / "train.csv")
    return root, rows


def expected_chexpert(raw: str, name: str, policy: str) -> float:
    if raw == "":
        return 0.0
    value = float(raw)
    if value != -1:
        return value
    return {
        "ones": 1.0,
        "zeros": 0.0,
        "ignore": -1.0,
        "paper": 1.0 if name in ("Edema", "Atelectasis") else 0.0,
    }[policy]


@pytest.mark.parametrize("policy", ["ones", "zeros", "ignore", "paper"])
def test_chexpert_uncertainty_policies(chexpert_dir, policy):
    root, rows = chexpert_dir
    dd = load_cxr_dataset(
        "chexpert", root / "CheXpert-v1.0-small", uncertainty=policy, frontal_only=False
    )
    assert label_names(dd["train"]) == CHEXPERT5_LABELS
    got = {
        r["image_id"]: r["labels"]
        for s in dd.values()
        for r in s.select_columns(["image_id", "labels"])
    }
    assert len(got) == len(rows)
    uncertain_rows = [r for r in rows if "-1.0" in [r[n] for n in CHEXPERT5_LABELS]][:10]
    assert uncertain_rows
    for r in uncertain_rows + rows[:5]:
        rel = r["Path"].split("/", 1)[1]
        assert [got[rel][n] for n in CHEXPERT5_LABELS] == [
            expected_chexpert(r[n], n, policy) for n in CHEXPERT5_LABELS
        ]


def test_chexpert_paper_policy_on_a_known_row(chexpert_dir):
    root, _ = chexpert_dir
    dd = load_cxr_dataset(
        "chexpert", root, uncertainty="paper"
    )  # data_dir above the release folder
    row = next(
        r
        for s in dd.values()
        for r in s
        if r["image_id"].endswith("patient00002/study2/view1_frontal.jpg")
    )
    # Uncertain in all five: Atelectasis and Edema -> 1, the others -> 0.
    assert [row["labels"][n] for n in CHEXPERT5_LABELS] == [1.0, 0.0, 0.0, 1.0, 0.0]


def test_chexpert_frontal_filter_and_all_findings(chexpert_dir):
    root, rows = chexpert_dir
    dd = load_cxr_dataset("chexpert", root, findings="all", frontal_only=True)
    n = sum(len(s) for s in dd.values())
    assert n == sum(r["Frontal/Lateral"] == "Frontal" for r in rows) < len(rows)
    assert len(label_names(dd["train"])) == 14
    assert all("lateral" not in i for s in dd.values() for i in s["image_id"])


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
