"""Explicit split lists (``split_files``, ``hf_cxr_mae.data.split_files``) for every source:
exactly the files' membership and labels (or labels from the CSV), the flag and config forms,
pre-training on the train file only, and bad files or options refused naming the file and line."""

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import names_and_labels, parse_lines
from PIL import Image

from hf_cxr_mae.data import CHEXPERT5_LABELS, NIH14_LABELS, load_cxr_dataset
from hf_cxr_mae.data.loading import load_pretraining_dataset
from hf_cxr_mae.data.validation import DataValidationError

FILES = {
    "train": "train_official.txt",
    "validation": "val_official.txt",
    "test": "test_official.txt",
}


def restricted_copies(
    paper_split: Path, nih_dir: Path, out: Path, labels: bool = True
) -> dict[str, list[tuple[str, list[float]]]]:
    """The paper's three files cut down to the images of the NIH sample, written to ``out``."""
    present = {p.name for p in (nih_dir / "images").glob("*.png")}
    kept = {}
    for split, name in FILES.items():
        entries = [e for e in parse_lines((paper_split / name).read_text()) if e[0] in present]
        text = "".join(
            f"{n} {' '.join(str(int(v)) for v in lab)}\n" if labels else f"{n}\n"
            for n, lab in entries
        )
        (out / name).write_text(text)
        kept[split] = entries
    return kept


def csv_labels(nih_dir: Path) -> dict[str, list[float]]:
    with open(nih_dir / "Data_Entry_2017.csv", newline="") as f:
        return {
            r["Image Index"]: [float(n in r["Finding Labels"].split("|")) for n in NIH14_LABELS]
            for r in csv.DictReader(f)
        }


def test_split_files_give_exactly_the_files_membership_and_labels(nih_dir, paper_split, tmp_path):
    kept = restricted_copies(paper_split, nih_dir, tmp_path)
    assert all(kept.values()), "each paper file names some sample images"
    files = {s: tmp_path / n for s, n in FILES.items()}
    dd = load_cxr_dataset("nih14", nih_dir, image_dir="images", split_files=files)
    assert sorted(dd) == ["test", "train", "validation"]
    for split, entries in kept.items():
        got = names_and_labels(dd[split])
        assert len(dd[split]) == len(entries)
        assert got == dict(entries)


def test_split_files_without_labels_take_labels_from_the_csv(nih_dir, paper_split, tmp_path):
    kept = restricted_copies(paper_split, nih_dir, tmp_path, labels=False)
    truth = csv_labels(nih_dir)
    dd = load_cxr_dataset(
        "nih14",
        nih_dir,
        image_dir="images",
        split_files={s: tmp_path / n for s, n in FILES.items()},
    )
    for split, entries in kept.items():
        assert names_and_labels(dd[split]) == {n: truth[n] for n, _ in entries}
        # The file's own labels (not written here) agree with the CSV's too.
        assert {n: truth[n] for n, _ in entries} == dict(entries)


def test_split_files_flag_and_config_forms(nih_dir, paper_split, tmp_path):
    from hf_cxr_mae.training import DataArguments, FinetuneArguments, ModelArguments
    from hf_cxr_mae.training.arguments import parse_recipe_args

    kept = restricted_copies(paper_split, nih_dir, tmp_path)
    flag = ",".join(f"{s}={tmp_path / n}" for s, n in FILES.items())
    common = ["--dataset", "nih14", "--data_dir", str(nih_dir), "--image_dir", "images"]
    types = (ModelArguments, DataArguments, FinetuneArguments)
    _, data_args, _ = parse_recipe_args(
        types, [*common, "--split_files", flag, "--output_dir", str(tmp_path / "o")]
    )
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": ["nih14"],
                "data_dir": [str(nih_dir)],
                "image_dir": "images",
                # Relative names are looked up in data_dir when not found from here.
                "split_files": {
                    "train": str(tmp_path / FILES["train"]),
                    "test": str(tmp_path / FILES["test"]),
                },
                "output_dir": str(tmp_path / "o"),
            }
        )
    )
    _, yaml_args, _ = parse_recipe_args(types, [str(config)])
    by_flag = load_cxr_dataset("nih14", str(nih_dir), **data_args.source_options())
    for split, entries in kept.items():
        assert names_and_labels(by_flag[split]) == dict(entries)
    by_yaml = load_cxr_dataset("nih14", str(nih_dir), **yaml_args.source_options())
    # No validation file: a patient-disjoint validation set is carved from the train file.
    train_names = {n for n, _ in kept["train"]}
    got_train = set(names_and_labels(by_yaml["train"]))
    got_val = set(names_and_labels(by_yaml["validation"]))
    assert got_train | got_val == train_names and not got_train & got_val and got_val
    assert not set(by_yaml["train"]["patient_id"]) & set(by_yaml["validation"]["patient_id"])
    assert set(names_and_labels(by_yaml["test"])) == {n for n, _ in kept["test"]}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "nih14", "chexpert", "--data_dir", "a", "b", "--split_files", "train=t"], "one --dataset"),
        (["--dataset", "chexpert", "--data_dir", "a", "--protocol", "paper"], "option of --dataset nih14;"),
        (["--dataset", "imagefolder", "--data_dir", "a", "--split_files", "train=t"], "option of --dataset chexpert / covidx / csv / mimic_cxr / nih14;"),
    ],
)  # fmt: skip
def test_recipe_refuses_split_flags_it_cannot_apply(argv, message, tmp_path):
    from hf_cxr_mae.training import DataArguments, FinetuneArguments, ModelArguments
    from hf_cxr_mae.training.arguments import parse_recipe_args

    with pytest.raises(ValueError, match=message):
        parse_recipe_args(
            (ModelArguments, DataArguments, FinetuneArguments),
            [*argv, "--output_dir", str(tmp_path)],
        )


def _flip(path: Path, line: int, column: int) -> str:
    lines = path.read_text().splitlines()
    tokens = lines[line - 1].split()
    tokens[1 + column] = "0" if tokens[1 + column] == "1" else "1"
    lines[line - 1] = " ".join(tokens)
    path.write_text("\n".join(lines) + "\n")
    return tokens[0]


@pytest.mark.parametrize(
    "edit, pattern",
    [
        ("flip", r"train_official\.txt line 3: \S+: labels disagree: Effusion"),
        ("unknown", r"train_official\.txt line 1: 99999999_000\.png is not in .*Data_Entry_2017\.csv"),
        ("short", r"val_official\.txt line 2: \S+: 13 label values, expected 14"),
        ("both", r"also in split 'test'"),
    ],
)  # fmt: skip
def test_bad_split_files_are_refused_naming_file_and_line(
    nih_dir, paper_split, tmp_path, edit, pattern
):
    kept = restricted_copies(paper_split, nih_dir, tmp_path)
    files = {s: tmp_path / n for s, n in FILES.items()}
    if edit == "flip":
        _flip(files["train"], 3, NIH14_LABELS.index("Effusion"))
    elif edit == "unknown":
        text = files["train"].read_text()
        files["train"].write_text("99999999_000.png" + " 0" * 14 + "\n" + text)
    elif edit == "short":
        lines = files["validation"].read_text().splitlines()
        lines[1] = lines[1].rsplit(" ", 1)[0]
        files["validation"].write_text("\n".join(lines) + "\n")
    else:  # a test image listed in train too
        name, labels = kept["test"][0]
        with open(files["train"], "a") as f:
            f.write(f"{name} {' '.join(str(int(v)) for v in labels)}\n")
    with pytest.raises(DataValidationError, match=pattern):
        load_cxr_dataset("nih14", nih_dir, image_dir="images", split_files=files)


def test_pretraining_with_explicit_splits_uses_only_the_train_file(nih_dir, paper_split, tmp_path):
    kept = restricted_copies(paper_split, nih_dir, tmp_path)
    files = {s: tmp_path / n for s, n in FILES.items()}
    images = load_pretraining_dataset(
        [("nih14", nih_dir, {"image_dir": "images", "split_files": files})]
    )
    assert {Path(i).name for i in images["image_id"]} == {n for n, _ in kept["train"]}


def _images(root: Path, names: list[str]) -> None:
    rng = np.random.default_rng(2)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(path)


def _ids(ds) -> list[str]:
    return sorted(ds["image_id"])


def test_chexpert_split_files_by_path_with_or_without_release_folder(shared_data, tmp_path):
    with open(shared_data / "chexpert-labels-sample" / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:30]
    root = tmp_path / "chexpert"
    root.mkdir()
    (root / "train.csv").write_text(
        (shared_data / "chexpert-labels-sample" / "train.csv").read_text().splitlines(True)[0]
        + "".join(
            (shared_data / "chexpert-labels-sample" / "train.csv")
            .read_text()
            .splitlines(True)[1:31]
        )
    )
    rel = [r["Path"].split("/", 1)[1] for r in rows]
    _images(root, rel)
    patients = sorted({re.search(r"patient\d+", p).group() for p in rel})
    third = len(patients) // 3
    group = {
        p: ("train" if i < third else "validation" if i < 2 * third else "test")
        for i, p in enumerate(patients)
    }
    members = {
        s: [r for r in rel if group[re.search(r"patient\d+", r).group()] == s] for s in FILES
    }
    # train names paths as the CSV writes them (release folder first), the others without it.
    (tmp_path / "tr.txt").write_text(
        "".join(f"CheXpert-v1.0-small/{p}\n" for p in members["train"])
    )
    (tmp_path / "va.txt").write_text("".join(f"{p}\n" for p in members["validation"]))
    (tmp_path / "te.txt").write_text("".join(f"{p}\n" for p in members["test"]))
    files = {"train": tmp_path / "tr.txt", "val": tmp_path / "va.txt", "test": tmp_path / "te.txt"}
    dd = load_cxr_dataset("chexpert", root, frontal_only=False, split_files=files)
    for split in FILES:
        assert _ids(dd[split]) == sorted(members[split])


def test_covidx_split_files_regroup_images_and_check_classes(tmp_path):
    _images(tmp_path, [f"train/t{i}.png" for i in range(6)] + [f"test/s{i}.png" for i in range(2)])
    (tmp_path / "train.txt").write_text(
        "".join(f"p{i} t{i}.png {'positive' if i % 2 else 'negative'} src\n" for i in range(6))
    )
    (tmp_path / "test.txt").write_text("q0 s0.png positive src\nq1 s1.png negative src\n")
    (tmp_path / "a.txt").write_text("t0.png\nt1.png positive\nt2.png\ntest/s0.png\n")
    (tmp_path / "b.txt").write_text("t3.png\nt4.png\n")
    (tmp_path / "c.txt").write_text("s1.png negative\nt5.png\n")
    files = {"train": "a.txt", "validation": "b.txt", "test": "c.txt"}  # found in data_dir
    dd = load_cxr_dataset("covidx", tmp_path, split_files=files)
    assert _ids(dd["train"]) == ["test/s0.png", "train/t0.png", "train/t1.png", "train/t2.png"]
    assert _ids(dd["validation"]) == ["train/t3.png", "train/t4.png"]
    assert _ids(dd["test"]) == ["test/s1.png", "train/t5.png"]
    classes = dd["train"].features["label"].names
    got = {r["image_id"]: classes[r["label"]] for r in dd["train"].remove_columns("image")}
    assert got == {
        "test/s0.png": "positive",
        "train/t0.png": "negative",
        "train/t1.png": "positive",
        "train/t2.png": "negative",
    }
    (tmp_path / "b.txt").write_text("t3.png negative\nt4.png\n")
    with pytest.raises(
        DataValidationError, match=r"b\.txt line 1: t3\.png: class 'negative' here, 'positive'"
    ):
        load_cxr_dataset("covidx", tmp_path, split_files=files)


def test_csv_split_files_override_the_split_column(tmp_path):
    _images(tmp_path, [f"img/{i}.png" for i in range(8)])
    (tmp_path / "labels.csv").write_text(
        "path,split,A,B\n"
        + "".join(f"img/{i}.png,train,{i % 2},{(i // 2) % 2}\n" for i in range(8))
    )
    (tmp_path / "tr.txt").write_text("img/0.png 0 0\nimg/1.png 1 0\nimg/2.png\nimg/3.png\n")
    (tmp_path / "va.txt").write_text("img/4.png\nimg/5.png\n")
    (tmp_path / "te.txt").write_text("img/6.png 0 1\n")
    options = {"split_column": "split", "label_columns": ["A", "B"]}
    dd = load_cxr_dataset(
        "csv",
        tmp_path,
        split_files=f"train={tmp_path}/tr.txt,validation={tmp_path}/va.txt,test={tmp_path}/te.txt",
        **options,
    )
    assert [_ids(dd[s]) for s in FILES] == [
        [f"img/{i}.png" for i in range(4)],
        ["img/4.png", "img/5.png"],
        ["img/6.png"],
    ]
    assert dd["test"][0]["labels"] == {"A": 0.0, "B": 1.0}
    (tmp_path / "te.txt").write_text("img/6.png 1 1\n")
    with pytest.raises(
        DataValidationError, match=r"te\.txt line 1: img/6\.png: labels disagree: A 1 here, 0"
    ):
        load_cxr_dataset(
            "csv",
            tmp_path,
            split_files={"train": tmp_path / "tr.txt", "test": tmp_path / "te.txt"},
            **options,
        )


def test_mimic_split_files_by_dicom_id_keep_the_view_filter(tmp_path, caplog):
    (tmp_path / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\n"
        "d1,50,10000001,train\nd2,50,10000001,train\nd3,60,10000002,test\nd4,70,10000003,validate\n"
    )
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,ViewPosition\nd1,PA\nd2,LATERAL\nd3,AP\nd4,PA\n"
    )
    header = "subject_id,study_id," + ",".join(CHEXPERT5_LABELS)
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        header + "\n10000001,50,1.0,,-1.0,0.0,\n10000002,60,,1.0,,,\n"
    )
    _images(tmp_path, ["files/p10/p10000001/s50/d1.jpg", "files/p10/p10000002/s60/d3.jpg",
                       "files/p10/p10000003/s70/d4.jpg"])  # fmt: skip
    # The official test image goes to train, the official validation image to test.
    (tmp_path / "tr.txt").write_text("d3\nd2\n")
    (tmp_path / "va.txt").write_text("files/p10/p10000001/s50/d1.jpg 1 0 1 0 0\n")
    (tmp_path / "te.txt").write_text("d4\n")
    files = {
        "train": tmp_path / "tr.txt",
        "validation": tmp_path / "va.txt",
        "test": tmp_path / "te.txt",
    }
    dd = load_cxr_dataset(
        "mimic_cxr", tmp_path, findings="competition", uncertainty="ones", split_files=files
    )
    assert [_ids(dd[s]) for s in FILES] == [
        ["files/p10/p10000002/s60/d3.jpg"],
        ["files/p10/p10000001/s50/d1.jpg"],
        ["files/p10/p10000003/s70/d4.jpg"],
    ]
    assert "1 images listed in the split files are left out: view not in" in caplog.text


def test_pretrain_recipe_flag_reaches_the_loader_and_keeps_train_only(
    nih_dir, paper_split, tmp_path, monkeypatch
):
    from recipe_utils import TINY_TRAIN, recipe

    from hf_cxr_mae.training import data_setup

    kept = restricted_copies(paper_split, nih_dir, tmp_path)
    seen = {}

    class Stop(Exception):
        pass

    def capture(sources):
        seen["images"] = load_pretraining_dataset(sources)
        raise Stop  # what the recipe trains on is known; no need to train

    monkeypatch.setattr(data_setup, "load_pretraining_dataset", capture)
    flag = ",".join(f"{s}={tmp_path / n}" for s, n in FILES.items())
    with pytest.raises(Stop):
        recipe("pretrain").main(
            [*TINY_TRAIN, "--dataset", "nih14", "--data_dir", str(nih_dir), "--image_dir", "images",
             "--split_files", flag, "--output_dir", str(tmp_path / "out")]
        )  # fmt: skip
    names = {Path(i).name for i in seen["images"]["image_id"]}
    assert names == {n for n, _ in kept["train"]}


@pytest.mark.parametrize(
    "given, error, message",
    [
        ("train=a.txt,tset=b.txt", ValueError, "unknown split 'tset'"),
        ("validation=a.txt", ValueError, "needs a train file"),
        ("train=a.txt,train=b.txt", ValueError, "twice"),
        ("train", ValueError, "is not split=path"),
        ("train=missing.txt", FileNotFoundError, "missing.txt"),
    ],
)  # fmt: skip
def test_split_files_option_errors_name_the_fault(nih_dir, tmp_path, given, error, message):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("00000001_000.png\n")
    given = given.replace("a.txt", str(tmp_path / "a.txt")).replace(
        "b.txt", str(tmp_path / "b.txt")
    )
    with pytest.raises(error, match=message):
        load_cxr_dataset("nih14", nih_dir, image_dir="images", split_files=given)


def test_split_file_paths_may_hold_commas(nih_dir, tmp_path):
    """The flag form splits on a comma only where ``split=`` follows it."""
    folder = tmp_path / "runs,2026"
    folder.mkdir()
    (folder / "train, all.txt").write_text("00000001_000.png\n")
    (folder / "test.txt").write_text("00000003_000.png\n")
    from hf_cxr_mae.data.split_files import parse_split_files

    parsed = parse_split_files(f"train={folder / 'train, all.txt'}, test={folder / 'test.txt'}")
    assert parsed == {"train": folder / "train, all.txt", "test": folder / "test.txt"}
    trailing = parse_split_files(f"train={folder / 'train, all.txt'},test={folder / 'test.txt'},")
    assert trailing == parsed
    with pytest.raises(ValueError, match="unknown split 'tset'"):
        parse_split_files(f"train={folder / 'train, all.txt'},tset={folder / 'test.txt'}")


def test_a_header_line_in_a_split_file_is_named_as_such(nih_dir, tmp_path):
    listed = tmp_path / "train.txt"
    listed.write_text("Image_Index\n00000075_000.png\n")
    with pytest.raises(DataValidationError, match=r"train\.txt line 1: Image_Index is not in .*"
                       r"it looks like a header line: split files have none, delete it"):  # fmt: skip
        load_cxr_dataset("nih14", nih_dir, image_dir="images", split_files=f"train={listed}")
    listed.write_text("99999999_000.png\n00000075_000.png\n")  # an unknown image is not a header
    with pytest.raises(DataValidationError) as raised:
        load_cxr_dataset("nih14", nih_dir, image_dir="images", split_files=f"train={listed}")
    assert "looks like a header" not in str(raised.value)
