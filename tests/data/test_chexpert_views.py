"""CheXpert's frontal filter (``frontal_only``, the default) applies to every split: train, the
validation carved from it, and the test split read from the official ``valid.csv`` (which holds
lateral views too), and to every split of explicit split files; with ``frontal_only=False``
every view stays, laterals marked ``LATERAL``."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_cxr_mae.data import CHEXPERT5_LABELS, load_cxr_dataset

RELEASE = "CheXpert-v1.0-small"


def rows(split: str, patients: range) -> list[tuple[str, str, str]]:
    """(path, Frontal/Lateral, AP/PA): a frontal and a lateral view per patient."""
    out = []
    for p in patients:
        study = f"{split}/patient{p:05d}/study1"
        out += [
            (f"{study}/view1_frontal.jpg", "Frontal", "PA"),
            (f"{study}/view2_lateral.jpg", "Lateral", ""),
        ]
    return out


TRAIN, VALID = rows("train", range(1, 11)), rows("valid", range(64541, 64545))


@pytest.fixture
def chexpert(tmp_path) -> Path:
    """A release folder with train.csv and valid.csv (both with lateral views) and an image of
    its own bytes for each row."""
    root = tmp_path / RELEASE
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT5_LABELS)
    for name, table in (("train.csv", TRAIN), ("valid.csv", VALID)):
        lines = [header]
        for k, (path, side, position) in enumerate(table):
            lines.append(f"{RELEASE}/{path},F,{50 + k},{side},{position},{k % 2}.0,,1.0,,0.0")
            image = root / path
            image.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.random.default_rng(zlib.crc32(path.encode())).integers(0, 255, (24, 20))
            Image.fromarray(pixels.astype(np.uint8)).save(image, quality=95)
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def ids(dataset) -> set[str]:
    return set(dataset["image_id"])


def frontal(table) -> set[str]:
    return {p for p, side, _ in table if side == "Frontal"}


def test_frontal_only_filters_train_validation_and_the_official_valid_csv(chexpert):
    """The default keeps exactly the frontal rows of train.csv (split into train and validation)
    and of valid.csv (the test split)."""
    dd = load_cxr_dataset("chexpert", chexpert, validation_size=0.2, check_images="exists")
    assert ids(dd["test"]) == frontal(VALID)
    assert ids(dd["train"]) | ids(dd["validation"]) == frontal(TRAIN)
    assert len(dd["validation"]) == 2
    for split in dd.values():
        assert set(split["view"]) == {"PA"}


def test_frontal_only_false_keeps_every_view_of_every_split(chexpert):
    """Every row of both files, laterals with view ``LATERAL``."""
    dd = load_cxr_dataset(
        "chexpert", chexpert, frontal_only=False, validation_size=0.2, check_images="exists"
    )
    assert ids(dd["test"]) == {p for p, _, _ in VALID}
    assert ids(dd["train"]) | ids(dd["validation"]) == {p for p, _, _ in TRAIN}
    views = dict(zip(dd["test"]["image_id"], dd["test"]["view"], strict=True))
    assert {views[p] for p in frontal(VALID)} == {"PA"}
    assert {views[p] for p, side, _ in VALID if side == "Lateral"} == {"LATERAL"}


@pytest.mark.parametrize("frontal_only", [True, False])
def test_split_files_are_filtered_in_every_split(chexpert, tmp_path, frontal_only):
    """Split files naming both views: with the filter on, each split keeps exactly its frontal
    images (the test file's, drawn from valid.csv, too); off, exactly the listed images."""
    listed = {"train": TRAIN[:12], "validation": TRAIN[12:], "test": VALID}
    files = {}
    for split, table in listed.items():
        files[split] = tmp_path / f"{split}.txt"
        files[split].write_text("\n".join(f"{RELEASE}/{p}" for p, _, _ in table) + "\n")
    dd = load_cxr_dataset(
        "chexpert", chexpert, split_files=files, frontal_only=frontal_only, check_images="exists"
    )
    for split, table in listed.items():
        expected = frontal(table) if frontal_only else {p for p, _, _ in table}
        assert ids(dd[split]) == expected, split
