"""Patient metadata kept for subgroup analysis: sex, age and view with the same names and values
across sources, a CSV's own columns, bad values named, and the columns kept through the pixel
cache, truncation, the paper's split and a fine-tuning run."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from datasets import load_from_disk
from PIL import Image

from hf_cxr_mae.data import DataValidationError, load_cxr_dataset, load_pretraining_dataset
from hf_cxr_mae.data.cache import build_cache
from hf_cxr_mae.data.demo import make_demo_dataset
from hf_cxr_mae.data.metadata import normalize_age, normalize_sex, normalize_view, subgroup_columns
from hf_cxr_mae.training.data_setup import evaluation_split, truncate_splits


def _png(path: Path, seed: int, size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _by_image(dd) -> dict[str, dict]:
    """Every row of every split, without its image, by file name."""
    return {Path(r["image_id"]).name: r for ds in dd.values() for r in ds.remove_columns("image")}


@pytest.mark.parametrize(
    ("raw", "sex"),
    [("M", "M"), ("f", "F"), ("Male", "M"), (" FEMALE ", "F"), ("Unknown", None), ("", None),
     (None, None), (float("nan"), None)],
)  # fmt: skip
def test_sex_is_m_or_f_and_unknown_is_missing(raw, sex):
    assert normalize_sex(raw) == sex


@pytest.mark.parametrize("raw", ["X", "2", "Mal"])
def test_a_sex_that_is_neither_is_refused_by_the_normaliser(raw):
    with pytest.raises(ValueError, match=repr(raw)):
        normalize_sex(raw)


@pytest.mark.parametrize(
    ("raw", "years"),
    [("61", 61.0), (" 61.5 ", 61.5), ("058Y", 58.0), ("006M", 0.5), ("0", 0.0), ("120", 120.0),
     ("", None), (None, None), ("NA", None), ("unknown", None)],
)  # fmt: skip
def test_age_in_years_from_numbers_and_dicom_age_strings(raw, years):
    got = normalize_age(raw)
    assert got is None if years is None else got == pytest.approx(years)


def test_ages_out_of_range_and_unreadable_ages_are_told_apart():
    for raw in ("412", "155", "-3", "inf"):
        with pytest.raises(OverflowError, match="outside 0-120"):
            normalize_age(raw)
    for raw in ("abc", "61 years", "Y"):
        with pytest.raises(ValueError, match="not a number"):
            normalize_age(raw)


def test_views_are_upper_case_with_one_lateral_name():
    assert [normalize_view(v) for v in ("PA", "ap", "Lateral", "LAT", "LL", " ap axial", "")] == [
        "PA", "AP", "LATERAL", "LATERAL", "LL", "AP AXIAL", None,
    ]  # fmt: skip


def test_nih_sex_age_and_view_match_the_csv_row_by_row(nih_dir):
    dd = load_cxr_dataset("nih14", nih_dir, image_dir="images", check_images="exists")
    assert subgroup_columns(dd) == ["sex", "age", "view"]
    assert dd["train"].features["age"].dtype == "float32"
    got = _by_image(dd)
    truth = _rows(nih_dir / "Data_Entry_2017.csv")
    assert len(got) == len(truth) == 500
    for row in truth:
        r = got[row["Image Index"]]
        assert (r["sex"], r["age"], r["view"]) == (
            row["Patient Gender"],
            float(row["Patient Age"]),
            row["View Position"],
        )
    counts = Counter(r["sex"] for r in got.values())
    assert counts == Counter(row["Patient Gender"] for row in truth) == {"F": 237, "M": 263}


def _nih_copy(nih_dir: Path, out: Path, ages: dict[int, str]) -> Path:
    """The sample's label table with some ages replaced; the images linked, not copied."""
    out.mkdir()
    (out / "images").symlink_to(nih_dir / "images")
    for name in ("train_val_list.txt", "test_list.txt"):
        (out / name).write_text((nih_dir / name).read_text())
    rows = _rows(nih_dir / "Data_Entry_2017.csv")
    for i, age in ages.items():
        rows[i]["Patient Age"] = age
    with open(out / "Data_Entry_2017.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_nih_ages_over_120_are_set_missing_and_named(nih_dir, tmp_path, caplog):
    """The full release has a few ages over 150 (e.g. 412): never used as ages."""
    data = _nih_copy(nih_dir, tmp_path / "nih", {3: "412", 10: "155"})
    rows = _rows(data / "Data_Entry_2017.csv")
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        dd = load_cxr_dataset("nih14", data, image_dir="images", check_images="exists")
    got = _by_image(dd)
    for i in (3, 10):
        name = rows[i]["Image Index"]
        assert got[name]["age"] is None
        assert f"Data_Entry_2017.csv line {i + 2} ({name}): age '{rows[i]['Patient Age']}'" in (
            caplog.text
        )
    assert "2 out-of-range ages" in caplog.text
    assert sum(r["age"] is None for r in got.values()) == 2  # every other age is kept


def test_nih_an_unreadable_age_is_an_error_or_with_skip_a_missing_age(nih_dir, tmp_path, caplog):
    data = _nih_copy(nih_dir, tmp_path / "nih", {5: "abc"})
    name = _rows(data / "Data_Entry_2017.csv")[5]["Image Index"]
    with pytest.raises(DataValidationError, match=rf"line 7 \({name}\): age 'abc' is not a number"):
        load_cxr_dataset("nih14", data, image_dir="images", check_images="exists")
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        dd = load_cxr_dataset(
            "nih14", data, image_dir="images", check_images="exists", on_bad="skip"
        )
    got = _by_image(dd)
    assert len(got) == 500 and got[name]["age"] is None  # the image stays, its age is unknown
    assert "age 'abc'" in caplog.text


def test_nih_paper_protocol_truncation_and_evaluation_split_keep_the_metadata(nih_dir):
    dd = load_cxr_dataset(
        "nih14",
        nih_dir,
        image_dir="images",
        protocol="paper",
        on_bad="skip",  # the sample is a subset of the release the paper's files list
        check_images="exists",
    )
    truth = {r["Image Index"]: r for r in _rows(nih_dir / "Data_Entry_2017.csv")}
    args = SimpleNamespace(
        max_train_samples=7, max_eval_samples=5, dataset=["nih14"], data_dir=[str(nih_dir)]
    )
    for ds in (*truncate_splits(dd, args).values(), evaluation_split(dd, "test", args)):
        assert subgroup_columns(ds) == ["sex", "age", "view"]
        for r in ds.remove_columns("image"):
            row = truth[Path(r["image_id"]).name]
            assert (r["sex"], r["age"]) == (row["Patient Gender"], float(row["Patient Age"]))


def test_chexpert_sex_age_and_view_from_its_csv(shared_data, tmp_path, caplog):
    src = shared_data / "chexpert-labels-sample" / "train.csv"
    rows = _rows(src)
    root = tmp_path / "CheXpert-v1.0-small"
    for i, r in enumerate(rows):
        _png(tmp_path / r["Path"].replace(".jpg", ".png"), i, 16)
    text = src.read_text().replace(".jpg", ".png")
    (root / "train.csv").write_text(text)
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        dd = load_cxr_dataset(
            "chexpert", root, frontal_only=False, check_images="exists", validation_size=0.2
        )
    assert "sex values" not in caplog.text and "ages" not in caplog.text
    got = {r["image_id"]: r for ds in dd.values() for r in ds.remove_columns("image")}
    assert len(got) == len(rows)
    sex = {"Male": "M", "Female": "F", "Unknown": None}
    for r in rows:
        g = got[r["Path"].split("/", 1)[1].replace(".jpg", ".png")]
        view = r["AP/PA"] or ("LATERAL" if r["Frontal/Lateral"] == "Lateral" else None)
        assert (g["sex"], g["age"], g["view"]) == (sex[r["Sex"]], float(r["Age"]), view)
    counts = Counter(g["view"] for g in got.values())
    assert counts["LATERAL"] == sum(r["Frontal/Lateral"] == "Lateral" for r in rows) > 0
    assert Counter(g["sex"] for g in got.values()) == Counter(sex[r["Sex"]] for r in rows)


def _mimic(folder: Path) -> None:
    (folder / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\nd1,50,10000001,train\nd2,60,10000002,train\n"
        "d3,70,10000003,test\n"
    )
    (folder / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,ViewPosition,StudyDate\nd1,PA,21800506\nd2,AP,21500101\nd3,PA,21100101\n"
    )
    (folder / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        "subject_id,study_id,Edema\n10000001,50,1.0\n"
    )
    for d, s, st in (("d1", "10000001", 50), ("d2", "10000002", 60), ("d3", "10000003", 70)):
        _png(folder / f"files/p{s[:2]}/p{s}/s{st}/{d}.jpg", st)


def test_mimic_has_sex_and_age_only_with_a_patients_file(tmp_path):
    _mimic(tmp_path)
    plain = load_cxr_dataset("mimic_cxr", tmp_path, findings=["Edema"], validation_size=1)
    assert subgroup_columns(plain) == ["view"]
    (tmp_path / "patients.csv").write_text(
        "subject_id,gender,anchor_age,anchor_year,anchor_year_group\n"
        "10000001,F,52,2178,2008 - 2010\n10000002,M,91,2150,2011 - 2013\n"
    )
    dd = load_cxr_dataset(
        "mimic_cxr", tmp_path, findings=["Edema"], validation_size=1, patients_file="patients.csv"
    )
    assert subgroup_columns(dd) == ["sex", "age", "view"]
    got = _by_image(dd)
    # Age at the study: anchor_age + (study year - anchor_year); no patients row: unknown.
    assert (got["d1.jpg"]["sex"], got["d1.jpg"]["age"], got["d1.jpg"]["view"]) == ("F", 54.0, "PA")
    assert (got["d2.jpg"]["sex"], got["d2.jpg"]["age"]) == ("M", 91.0)
    assert (got["d3.jpg"]["sex"], got["d3.jpg"]["age"]) == (None, None)


def _user_csv(folder: Path, rows: list[str], n: int = 8) -> None:
    for k in range(n):
        _png(folder / f"{k}.png", k)
    header = "path,Effusion,Mass,patient,Gender,AgeYears,Site\n"
    (folder / "labels.csv").write_text(header + "\n".join(rows) + "\n")


# The two findings are the labels; the other columns are patient and metadata.
_OPTIONS = {
    "label_columns": ["Effusion", "Mass"],
    "patient_column": "patient",
    "validation_size": 2,
}


_GOOD = [
    f"{k}.png,{k % 2},{(k // 2) % 2},p{k},{'MF'[k % 2]},{30 + k},{'AB'[k % 2] if k else ''}"
    for k in range(8)
]


def test_csv_metadata_columns_are_kept_normalised_and_not_taken_as_labels(tmp_path):
    _user_csv(tmp_path, _GOOD)
    dd = load_cxr_dataset(
        "csv",
        tmp_path,
        patient_column="patient",
        metadata_columns=["Gender", "age=AgeYears", "Site"],
        validation_size=2,
    )
    # The default labels are the columns not named otherwise: none of the metadata.
    assert list(dd["train"].features["labels"]) == ["Effusion", "Mass"]
    assert subgroup_columns(dd) == ["sex", "age", "Site"]  # no view column given: none
    (tmp_path / "train.txt").write_text("".join(f"{k}.png\n" for k in range(5)))
    (tmp_path / "test.txt").write_text("".join(f"{k}.png\n" for k in range(5, 8)))
    listed = load_cxr_dataset(
        "csv",
        tmp_path,
        metadata_columns=["Gender", "age=AgeYears", "Site"],
        split_files={"train": tmp_path / "train.txt", "test": tmp_path / "test.txt"},
        **_OPTIONS,
    )
    assert subgroup_columns(listed["test"]) == ["sex", "age", "Site"]
    for got in (_by_image(dd), _by_image(listed)):
        assert len(got) == 8
        for k in range(8):
            r = got[f"{k}.png"]
            want = ("MF"[k % 2], 30.0 + k, "AB"[k % 2] if k else None)
            assert (r["sex"], r["age"], r["Site"]) == want


def test_csv_bad_metadata_values_are_named(tmp_path, caplog):
    rows = list(_GOOD)
    rows[2] = "2.png,0,1,p2,X,32,A"  # an unknown sex spelling: warned, set unknown
    rows[4] = "4.png,0,0,p4,Unknown,200,A"  # unknown sex: no warning; age 200: warned
    rows[5] = "5.png,1,0,p5,F,abc,B"  # an unreadable age: an error by default
    _user_csv(tmp_path, rows)
    options = {"metadata_columns": ["Gender", "age=AgeYears", "Site"], **_OPTIONS}
    with pytest.raises(DataValidationError, match=r"labels\.csv line 7 \(5\.png\): age 'abc'"):
        load_cxr_dataset("csv", tmp_path, **options)
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        dd = load_cxr_dataset("csv", tmp_path, on_bad="skip", **options)
    got = _by_image(dd)
    assert len(got) == 8  # no image is lost for its metadata
    assert got["2.png"]["sex"] is None and got["4.png"]["sex"] is None
    assert got["4.png"]["age"] is None and got["5.png"]["age"] is None
    assert "labels.csv line 4 (2.png): sex 'X' is not M, F" in caplog.text
    assert "labels.csv line 6 (4.png): age '200' is outside 0-120" in caplog.text
    assert "1 unreadable sex values" in caplog.text and "sex 'Unknown'" not in caplog.text


def test_csv_metadata_columns_that_cannot_be_kept_are_refused(tmp_path):
    _user_csv(tmp_path, _GOOD)
    with pytest.raises(DataValidationError, match=r"no column\(s\) \['Ward'\]"):
        load_cxr_dataset("csv", tmp_path, metadata_columns=["Ward"], **_OPTIONS)
    with pytest.raises(ValueError, match="replace the dataset's own 'labels'"):
        load_cxr_dataset("csv", tmp_path, metadata_columns=["labels"], **_OPTIONS)
    with pytest.raises(ValueError, match="two sex columns"):
        load_cxr_dataset("csv", tmp_path, metadata_columns=["Gender", "sex=Site"])


def test_metadata_columns_survive_the_pixel_cache(tmp_path):
    _user_csv(tmp_path / "data", _GOOD)
    dd = load_cxr_dataset(
        "csv", tmp_path / "data", metadata_columns=["Gender", "AgeYears", "Site"], **_OPTIONS
    )
    cached = build_cache(dd, size=16, cache_dir=tmp_path / "cache")
    assert "pixels" in cached["train"].column_names
    assert subgroup_columns(cached) == subgroup_columns(dd) == ["sex", "AgeYears", "Site"]
    for split in dd:
        columns = ["image_id", "sex", "AgeYears", "Site"]
        assert (
            cached[split].select_columns(columns).to_list()
            == dd[split].select_columns(columns).to_list()
        )


def test_pretraining_mixes_sources_with_different_metadata(nih_dir, tmp_path):
    _user_csv(tmp_path, _GOOD)
    images = load_pretraining_dataset(
        [
            ("nih14", nih_dir, {"image_dir": "images", "check_images": "exists"}),
            ("csv", tmp_path, {"metadata_columns": ["Gender", "Site"], **_OPTIONS}),
        ]
    )
    assert images.column_names == ["image", "image_id", "patient_id", "view", "source"]


def test_demo_data_has_sex_age_and_view():
    demo = make_demo_dataset(num_train=40, num_validation=4, num_test=4, size=32)
    assert subgroup_columns(demo) == ["sex", "age", "view"]
    train = demo["train"]
    assert set(train["sex"]) == {"M", "F"} and set(train["view"]) == {"PA", "AP"}
    assert all(18 <= a < 95 for a in train["age"])


def test_metadata_columns_flag_reaches_the_csv_loader_and_training_runs(tmp_path):
    from recipe_utils import TINY_TRAIN, recipe

    from hf_cxr_mae.training import DataArguments
    from hf_cxr_mae.training.data_setup import load_labelled_data

    with pytest.raises(ValueError, match="--metadata_columns is an option of --dataset csv"):
        DataArguments(dataset=["nih14"], data_dir=["x"], metadata_columns=["Site"])
    rows = [
        f"{k}.png,{k % 2},{(k // 2) % 2},p{k},{'MF'[k % 2]},{30 + k},{'AB'[k % 3 % 2]}"
        for k in range(12)
    ]
    _user_csv(tmp_path / "data", rows, n=12)
    data = ["--dataset", "csv", "--data_dir", str(tmp_path / "data"), "--validation_size", "4"]
    data += [
        "--label_columns",
        "Effusion",
        "Mass",
        "--metadata_columns",
        "Gender",
        "AgeYears",
        "Site",
    ]
    data_args = DataArguments(
        dataset=["csv"],
        data_dir=[str(tmp_path / "data")],
        label_columns=["Effusion", "Mass"],
        metadata_columns=["Gender", "AgeYears", "Site"],
        validation_size=4,
    )
    assert subgroup_columns(load_labelled_data(data_args, 0)) == ["sex", "AgeYears", "Site"]
    out = tmp_path / "out"
    argv = [*TINY_TRAIN, *data, "--output_dir", str(out), "--max_steps", "2",
            "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "no",
            "--load_best_model_at_end", "false", "--auto_augment", "",
            "--cache_dir", str(tmp_path / "cache"), "--model_name_or_path", ""]  # fmt: skip
    recipe("finetune").main(argv)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics
    # Trained and evaluated from the pixel cache, which holds the metadata beside the pixels.
    caches = [load_from_disk(str(p)) for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(caches) == 2  # train and validation
    assert all(subgroup_columns(c) == ["sex", "AgeYears", "Site"] for c in caches)
