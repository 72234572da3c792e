"""The carved validation split (``hf_cxr_mae.data.splits.patient_split``) is patient-disjoint, on
real CheXpert rows with several images per patient and on a synthetic table."""

from __future__ import annotations

import csv
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from hf_cxr_mae.data import load_cxr_dataset
from hf_cxr_mae.data.splits import patient_split


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
