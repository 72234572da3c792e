"""The leak checks at their limits: ``check_split_overlap`` (the same path, the same bytes under
another name, or the same patient in two splits; with ``on_bad="skip"`` the row of the less
held-out split goes), ``content_digests`` (files equal in size and first 16 KiB but not in full
are different images), ``drop_duplicates`` (a repeat differing in any one column is a conflict)
and ``patient_split`` (whole patients, taken in the documented seeded order until the target is
reached; a target of 0 or of every image refused)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset

from hf_cxr_mae.data.duplicates import content_digests, drop_duplicates
from hf_cxr_mae.data.splits import check_split_overlap, patient_key, patient_split
from hf_cxr_mae.data.validation import DataValidationError


def frame(rows):
    """A split's records: (where, path, patient)."""
    return pd.DataFrame(rows, columns=["where", "path", "patient_id"])


def image(path, data: bytes):
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    head = rng.bytes(16384)
    return {
        "a": image(tmp_path / "a.png", rng.bytes(20000)),
        "b": image(tmp_path / "b.png", rng.bytes(20000)),
        "c": image(tmp_path / "c.png", rng.bytes(30000)),
        "a_copy": None,  # filled per test
        "head1": image(tmp_path / "head1.png", head + b"x" * 5000),
        "head2": image(tmp_path / "head2.png", head + b"y" * 5000),
    }


@pytest.mark.parametrize(
    "first, second, dropped",
    [
        ("train", "test", "train"),
        ("train", "validation", "train"),
        ("validation", "test", "validation"),
    ],
)
def test_a_shared_image_is_charged_to_the_less_held_out_split(files, first, second, dropped):
    """The same path in two splits: refused naming both rows; skipped, the row of the less
    held-out split (train before validation before test) is the one left out, whatever the order
    the splits are given in."""
    parts = {
        first: frame(
            [(f"{first} line 2", files["a"], "p1"), (f"{first} line 3", files["b"], "p2")]
        ),
        second: frame([(f"{second} line 2", files["a"], "p3")]),
    }
    with pytest.raises(DataValidationError) as err:
        check_split_overlap(parts, "raise")
    assert f"{first} line 2" in str(err.value) and f"{second} line 2" in str(err.value)
    for order in (parts, dict(reversed(parts.items()))):
        kept = check_split_overlap(order, "skip")
        kept_split = second if dropped == first else first
        assert len(kept[dropped]) == len(parts[dropped]) - 1
        assert files["a"] not in set(kept[dropped]["path"])
        assert kept[kept_split]["path"].tolist() == parts[kept_split]["path"].tolist()


def test_same_bytes_under_another_name_are_one_image(files, tmp_path):
    """A byte-identical copy in another split is a leak; in the same split it is not (that is
    the duplicates check's business)."""
    with open(files["a"], "rb") as f:
        copy = image(tmp_path / "copy.png", f.read())
    leak = {
        "train": frame([("train line 2", files["a"], None)]),
        "test": frame([("test line 2", copy, None)]),
    }
    with pytest.raises(DataValidationError, match="has the same bytes as"):
        check_split_overlap(leak, "raise")
    same_split = {"train": frame([("l2", files["a"], None), ("l3", copy, None)])}
    assert len(check_split_overlap(same_split, "raise")["train"]) == 2


def test_equal_size_and_first_16_kib_are_not_equal_bytes(files):
    """Two files equal in size and in their first 16 KiB but not after are different images:
    no leak. Their full digests differ; files of unique size are never read."""
    parts = {
        "train": frame([("train line 2", files["head1"], None)]),
        "test": frame([("test line 2", files["head2"], None)]),
    }
    assert len(check_split_overlap(parts, "raise")["test"]) == 1
    digests = content_digests(
        {files["head1"]: {"train"}, files["head2"]: {"test"}, files["c"]: {"test"}}
    )
    assert set(digests) == {files["head1"], files["head2"]}
    assert digests[files["head1"]] != digests[files["head2"]]


@pytest.mark.parametrize(
    "train_patient, test_patient, leak",
    [
        ("00075", "75", True),
        (" p1 ", "p1", True),
        (75.0, "75", True),
        ("p1", "p10", False),
        ("075a", "75a", False),
        (None, None, False),
        ("", "", False),
    ],
)
def test_the_same_patient_in_two_splits(files, train_patient, test_patient, leak):
    """Patients are compared trimmed and, when numeric, without leading zeros; a missing id is
    nobody's."""
    parts = {
        "train": frame([("train line 2", files["a"], train_patient)]),
        "test": frame([("test line 2", files["b"], test_patient)]),
    }
    if leak:
        with pytest.raises(DataValidationError, match=r"patient .* is also in split 'test'"):
            check_split_overlap(parts, "raise")
    else:
        assert len(check_split_overlap(parts, "raise")["train"]) == 1
    assert (patient_key(train_patient) is not None and
            patient_key(train_patient) == patient_key(test_patient)) is leak  # fmt: skip


RECORD = {
    "where": "f line 2",
    "path": "x.png",
    "labels": (1.0, 0.0),
    "patient_id": "p1",
    "view": "PA",
}


@pytest.mark.parametrize(
    "column, other", [("labels", (1.0, 1.0)), ("patient_id", "p2"), ("view", "AP")]
)
def test_a_repeat_differing_in_any_one_column_is_a_conflict(column, other, caplog):
    """A row repeating a key with one column changed is refused naming both rows and that
    column; skipped, every copy of that key goes. An exact repeat is kept once with a warning."""
    second = {**RECORD, "where": "f line 3", column: other}
    third = {**RECORD, "where": "f line 4", "path": "y.png"}
    records = pd.DataFrame([RECORD, second, third])
    with pytest.raises(DataValidationError, match=rf"f line 3: duplicate of f line 2 .*{column}"):
        drop_duplicates(records, "path", "raise", "rows")
    kept = drop_duplicates(records, "path", "skip", "rows")
    assert kept["where"].tolist() == ["f line 4"]
    exact = pd.DataFrame([RECORD, {**RECORD, "where": "f line 3"}, third])
    with caplog.at_level(logging.WARNING):
        kept = drop_duplicates(exact, "path", "raise", "rows")
    assert kept["where"].tolist() == ["f line 2", "f line 4"]
    assert "exact duplicate of f line 2" in caplog.text


def split_reference(patients, validation_size, seed):
    """The documented algorithm: patients (a missing id its own patient) in sorted order,
    shuffled by default_rng(seed), taken whole until the validation images reach the target."""
    keys = [patient_key(p) or f"__row{i}" for i, p in enumerate(patients)]
    target = validation_size * len(keys) if validation_size < 1 else validation_size
    order = sorted(set(keys))
    np.random.default_rng(seed).shuffle(order)
    rows: list[int] = []
    for p in order:
        if len(rows) >= target:
            break
        rows += [i for i, k in enumerate(keys) if k == p]
    return sorted(rows)


@pytest.mark.parametrize("validation_size", [0.2, 0.25, 3, 5, 0.5, 11])
@pytest.mark.parametrize("seed", [0, 3])
def test_patient_split_takes_whole_patients_up_to_the_target(validation_size, seed):
    """The validation rows are exactly the reference's: whole patients until at least the
    target is reached (5 of 20 images at 0.25 is reached, not passed by another patient)."""
    patients = ["p1", "p1", "p2", "00003", "3", "p4", None, "p5", "p5", "p5",
                "p6", "p7", "", "p8", "p9", "p9", "p10", "p11", "p12", "p13"]  # fmt: skip
    ds = Dataset.from_dict({"patient_id": patients, "row": list(range(20))})
    train, validation = patient_split(ds, validation_size, seed)
    expected = split_reference(patients, validation_size, seed)
    assert validation["row"] == expected
    assert train["row"] == [i for i in range(20) if i not in expected]
    target = validation_size * 20 if validation_size < 1 else validation_size
    assert len(expected) >= target


@pytest.mark.parametrize(
    "validation_size, refused",
    [(0, True), (1, False), (19, False), (20, True), (0.95, False), (0.99, True)],
)
def test_patient_split_refuses_an_empty_side(validation_size, refused):
    """A target of no image, or one that takes every patient (20 images: 19 leaves one for
    training, 0.99 x 20 = 19.8 takes all 20), leaves a side empty: refused."""
    ds = Dataset.from_dict({"patient_id": [f"p{i}" for i in range(20)]})
    if refused:
        with pytest.raises(ValueError, match=r"validation_size=\S+ leaves no training"):
            patient_split(ds, validation_size, 0)
    else:
        train, validation = patient_split(ds, validation_size, 0)
        assert len(train) == 20 - len(validation) >= 1 and len(validation) >= 1


def test_patient_split_refuses_when_whole_patients_overshoot_into_every_image():
    """Two patients of 10 images and a target of 11: the second patient is taken whole, and
    nothing is left to train on: refused, naming the patients."""
    ds = Dataset.from_dict({"patient_id": ["p1"] * 10 + ["p2"] * 10})
    with pytest.raises(ValueError, match=r"take all 2 patients \(20 images\)"):
        patient_split(ds, 11, 0)
