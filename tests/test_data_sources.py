import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Sequence
from datasets import Image as HFImage
from PIL import Image

from hf_cxr_mae.data import (
    CHEXPERT5_LABELS,
    NIH14_LABELS,
    label_names,
    load_cxr_dataset,
    load_pretraining_dataset,
    read_xray,
)
from hf_cxr_mae.data.validation import DataValidationError


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


# --- CheXpert: the real label rows, images made here -------------------------------------


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


# --- generic CSV, image folders, COVIDx, MIMIC, datasets objects ----------------------------


def write_images(root: Path, names: list[str], mode: str = "L") -> None:
    rng = np.random.default_rng(1)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).convert(mode).save(path)


def test_csv_delimited_and_per_column_labels(tmp_path):
    write_images(tmp_path, [f"img/{i}.png" for i in range(6)])
    (tmp_path / "delim.csv").write_text(
        "file,findings,pid\n"
        + "\n".join(f"img/{i}.png,{'A|B' if i % 2 else 'No Finding'},p{i}" for i in range(6))
    )
    dd = load_cxr_dataset(
        "csv",
        tmp_path,
        csv_file="delim.csv",
        image_column="file",
        label_column="findings",
        patient_column="pid",
        validation_size=2,
    )
    assert label_names(dd["train"]) == ["A", "B"]
    rows = {r["image_id"]: r["labels"] for s in dd.values() for r in s}
    assert rows["img/1.png"] == {"A": 1.0, "B": 1.0} and rows["img/2.png"] == {"A": 0.0, "B": 0.0}
    (tmp_path / "cols.csv").write_text(
        "path,X,Y,split\nimg/0.png,1,,train\nimg/1.png,-1,0,train\nimg/2.png,0,1,test\n"
    )
    dd = load_cxr_dataset(
        "csv",
        tmp_path,
        csv_file="cols.csv",
        split_column="split",
        uncertainty="ones",
        validation_size=1,
    )
    assert label_names(dd["test"]) == ["X", "Y"] and dd["test"][0]["labels"] == {"X": 0.0, "Y": 1.0}
    train_rows = {r["image_id"]: r["labels"] for s in ("train", "validation") for r in dd[s]}
    assert train_rows["img/1.png"] == {"X": 1.0, "Y": 0.0}


def test_imagefolder_classes_and_unlabelled(tmp_path):
    write_images(tmp_path / "cls", [f"{c}/{i}.png" for c in ("covid", "normal") for i in range(5)])
    dd = load_cxr_dataset("imagefolder", tmp_path / "cls", validation_size=2)
    assert isinstance(dd["train"].features["label"], ClassLabel)
    assert label_names(dd["train"]) == ["covid", "normal"]
    # Each image labelled by its own folder, every image once (names alone would not show a mix-up).
    rows = [(r["image_id"], r["label"]) for s in dd.values() for r in s.remove_columns("image")]
    assert sorted(rows) == sorted(
        (f"{c}/{i}.png", k) for k, c in enumerate(("covid", "normal")) for i in range(5)
    )
    write_images(tmp_path / "flat", [f"{i}.jpg" for i in range(3)], mode="RGB")
    dd = load_cxr_dataset("imagefolder", tmp_path / "flat")
    assert len(dd["train"]) == 3 and "label" not in dd["train"].column_names


def test_covidx_split_files(tmp_path):
    write_images(
        tmp_path, [f"train/t{i}.png" for i in range(6)] + [f"test/s{i}.png" for i in range(2)]
    )
    (tmp_path / "train.txt").write_text(
        "\n".join(f"p{i} t{i}.png {'positive' if i % 2 else 'negative'} src" for i in range(6))
    )
    (tmp_path / "test.txt").write_text("q0 s0.png positive src\nq1 s1.png negative src\n")
    dd = load_cxr_dataset("covidx", tmp_path, validation_size=2)
    assert label_names(dd["test"]) == ["negative", "positive"]
    assert [r["label"] for r in dd["test"]] == [1, 0]
    labels = {r["image_id"]: r["label"] for s in dd.values() for r in s.remove_columns("image")}
    assert len(labels) == 8 and all(
        labels[next(k for k in labels if k.endswith(f"t{i}.png"))] == i % 2 for i in range(6)
    )


def test_mimic_cxr_split_labels_and_views(tmp_path):
    (tmp_path / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\nd1,50,10000001,train\nd2,50,10000001,train\nd3,60,10000002,test\nd4,70,10000003,validate\n"
    )
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,ViewPosition\nd1,PA\nd2,LATERAL\nd3,AP\nd4,PA\n"
    )
    header = "subject_id,study_id," + ",".join(CHEXPERT5_LABELS)
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        header + "\n10000001,50,1.0,,-1.0,0.0,\n10000002,60,,1.0,,,\n"
    )
    write_images(
        tmp_path,
        [
            "files/p10/p10000001/s50/d1.jpg",
            "files/p10/p10000002/s60/d3.jpg",
            "files/p10/p10000003/s70/d4.jpg",
        ],
        mode="RGB",
    )
    dd = load_cxr_dataset("mimic_cxr", tmp_path, findings="competition", uncertainty="ones")
    assert sorted(dd) == ["test", "train", "validation"]
    assert len(dd["train"]) == 1  # the lateral view is filtered out
    assert dd["train"][0]["labels"] == dict(
        zip(CHEXPERT5_LABELS, [1.0, 0.0, 1.0, 0.0, 0.0], strict=True)
    )
    assert dd["validation"][0]["labels"] == dict.fromkeys(CHEXPERT5_LABELS, 0.0)  # no label row


def test_datasets_object_with_classlabel_lists(tmp_path):
    write_images(tmp_path, ["a.png", "b.png"])
    features = Features({"img": HFImage(), "findings": Sequence(ClassLabel(names=["x", "y", "z"]))})
    ds = Dataset.from_dict(
        {"img": [str(tmp_path / "a.png"), str(tmp_path / "b.png")], "findings": [[0, 2], []]},
        features=features,
    )
    dd = load_cxr_dataset(ds, image_column="img", labels_column="findings")
    assert label_names(dd["train"]) == ["x", "y", "z"]
    assert dd["train"][0]["labels"] == {"x": 1.0, "y": 0.0, "z": 1.0}
    assert dd["train"][1]["image"].size == (24, 24)


def test_pretraining_mixture_drops_labels_and_test(nih_dir, tmp_path):
    write_images(tmp_path, [f"{i}.png" for i in range(4)])
    ds = load_pretraining_dataset(
        [("nih14", nih_dir, {"image_dir": "images"}), ("imagefolder", tmp_path, {})]
    )
    assert len(ds) == 400 + 4
    assert "labels" not in ds.column_names and set(ds["source"]) == {"nih14", "imagefolder"}
    test_names = set((nih_dir / "test_list.txt").read_text().split())
    assert not test_names & {Path(i).name for i in ds["image_id"]}


def test_pretraining_refuses_a_source_given_twice(tmp_path):
    write_images(tmp_path, [f"{i}.png" for i in range(4)])
    with pytest.raises(DataValidationError, match=r"4 images are in more than one source, e\.g\. "
                       r".*source 1 \(imagefolder, .*\) and source 2 .*given twice"):  # fmt: skip
        load_pretraining_dataset([("imagefolder", tmp_path, {}), ("imagefolder", tmp_path, {})])


def test_pretraining_refuses_test_images_of_one_source_given_through_another(nih_dir, tmp_path):
    """NIH holds its test_list.txt images out; the same files linked into a folder source would
    put them into pre-training."""
    test_names = (nih_dir / "test_list.txt").read_text().split()[:3]
    folder = tmp_path / "more"
    folder.mkdir()
    for name in test_names:
        (folder / name).symlink_to(nih_dir / "images" / name)
    with pytest.raises(DataValidationError, match=r"3 images held out .* by one source are "
                       r"training images of another.*held out by source 1 \(nih14"):  # fmt: skip
        load_pretraining_dataset(
            [("nih14", nih_dir, {"image_dir": "images"}), ("imagefolder", folder, {})]
        )


def test_unknown_source_and_option():
    with pytest.raises(ValueError, match="Unknown dataset 'nih15'"):
        load_cxr_dataset("nih15", ".")
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['uncertainty'\].*valid"):
        load_cxr_dataset("nih14", ".", uncertainty="ones")


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
