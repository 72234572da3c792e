"""Label cells whose findings are written with another separator than the loader's (``;`` or
``,`` instead of ``|``) are refused, naming the row, the value and the separator to pass, never
read as invented combined classes; ``label_separator`` reads them, for NIH and CSV sources, through
the library, the recipes' flags and the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_cxr_mae.cli import build_parser, main
from hf_cxr_mae.data import NIH14_LABELS, label_names, load_cxr_dataset
from hf_cxr_mae.data.validation import DataValidationError
from hf_cxr_mae.training.arguments import DataArguments

ROW_3 = "Atelectasis;Effusion;Infiltration"  # the sample's first row with several findings
ROW_3_ERROR = (
    "line 3: 'Atelectasis;Effusion;Infiltration' looks like the findings ['Atelectasis', "
    "'Effusion', 'Infiltration'] separated by ';', not '|': pass label_separator=';'"
)


def nih_layout(nih_dir: Path, root: Path, separator: str, rows: list[int] | None = None) -> Path:
    """An NIH release folder whose Data_Entry_2017.csv is the sample's with ``separator`` between
    findings (only its data rows ``rows`` if given, the list files cut to match); the images are
    the shared folder, linked."""
    root.mkdir()
    (root / "images").symlink_to(nih_dir / "images")
    with open(nih_dir / "Data_Entry_2017.csv", newline="") as f:
        table = list(csv.reader(f))
    header, body = table[0], table[1:]
    body = body if rows is None else [body[i] for i in rows]
    labels = header.index("Finding Labels")
    for row in body:
        row[labels] = row[labels].replace("|", separator)
    with open(root / "Data_Entry_2017.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    kept = {row[0] for row in body}
    for name in ("train_val_list.txt", "test_list.txt"):
        lines = (nih_dir / name).read_text().split()
        (root / name).write_text("".join(f"{n}\n" for n in lines if n in kept))
    return root


def test_nih_semicolons_are_refused_naming_rows_value_and_separator(nih_dir, tmp_path):
    """NIH's own label file rewritten with ';': every multi-finding row is named with the
    separator to pass (before: 'unknown finding(s)', and on_bad='skip' dropped all 197 of them)."""
    root = nih_layout(nih_dir, tmp_path / "nih", ";")
    for on_bad in ("raise", "skip"):  # a file-wide mistake: skipping its rows is no way out
        with pytest.raises(DataValidationError) as err:
            load_cxr_dataset("nih14", root, image_dir="images", on_bad=on_bad)
        text = str(err.value)
        assert text.startswith(
            f"197 label cells with another separator in column 'Finding Labels' of {root}"
            "/Data_Entry_2017.csv:"
        )
        assert f"{root}/Data_Entry_2017.csv {ROW_3_ERROR}" in text


def test_nih_label_separator_reads_the_same_labels_as_the_release_format(nih_dir, tmp_path):
    """With label_separator=';' the rewritten file gives exactly the release file's dataset."""
    semicolons = nih_layout(nih_dir, tmp_path / "semicolons", ";")
    pipes = nih_layout(nih_dir, tmp_path / "pipes", "|")
    ours = load_cxr_dataset("nih14", semicolons, image_dir="images", label_separator=";")
    release = load_cxr_dataset("nih14", pipes, image_dir="images")
    for split in ("train", "validation", "test"):
        columns = ["image_id", "labels", "patient_id"]
        assert (
            ours[split].select_columns(columns).to_list()
            == release[split].select_columns(columns).to_list()
        )
    assert label_names(ours["train"]) == NIH14_LABELS
    with open(nih_dir / "Data_Entry_2017.csv", newline="") as f:
        effusions = sum("Effusion" in row["Finding Labels"].split("|") for row in csv.DictReader(f))
    assert sum(r["labels"]["Effusion"] for s in ours.values() for r in s) == effusions
    # The release file read with ';' is the mistake the other way round.
    with pytest.raises(DataValidationError, match=r"separated by '\|', not ';'"):
        load_cxr_dataset("nih14", pipes, image_dir="images", label_separator=";")


def write_csv_source(root: Path, cells: list[str]) -> Path:
    """A CSV source: one distinct noise image per row, its findings in column 'findings'."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = []
    for i, cell in enumerate(cells):
        Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(root / f"img/{i}.png")
        rows.append({"path": f"img/{i}.png", "findings": cell, "pid": f"p{i}", "split": "train"})
    rows[-1]["split"] = "test"
    rows[-2]["split"] = "validation"
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


CELLS = ["Effusion", "Atelectasis,Effusion", "No Finding", "Mass", "Atelectasis", "Mass,Effusion"]
CSV_OPTIONS = {"label_column": "findings", "patient_column": "pid", "split_column": "split"}


def test_csv_commas_are_refused_instead_of_becoming_classes(tmp_path):
    """Before: 'Atelectasis,Effusion' and 'Mass,Effusion' were two more classes."""
    root = write_csv_source(tmp_path / "src", CELLS)
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("csv", root, **CSV_OPTIONS)
    assert str(err.value).splitlines()[1:3] == [
        f"  {root}/labels.csv line 3: 'Atelectasis,Effusion' looks like the findings "
        "['Atelectasis', 'Effusion'] separated by ',', not '|': pass label_separator=','",
        f"  {root}/labels.csv line 7: 'Mass,Effusion' looks like the findings ['Mass', "
        "'Effusion'] separated by ',', not '|': pass label_separator=','",
    ]
    # With the classes given, the same cells are refused the same way.
    with pytest.raises(DataValidationError, match="line 3: 'Atelectasis,Effusion' looks like"):
        load_cxr_dataset(
            "csv", root, label_names=["Atelectasis", "Effusion", "Mass"], **CSV_OPTIONS
        )


@pytest.mark.parametrize("option", ["label_separator", "label_delimiter"])
def test_csv_label_separator_and_its_old_name(tmp_path, option):
    """label_separator reads the cells; label_delimiter, its old public name, still does."""
    root = write_csv_source(tmp_path / "src", CELLS)
    dd = load_cxr_dataset("csv", root, **CSV_OPTIONS, **{option: ","})
    assert label_names(dd["train"]) == ["Atelectasis", "Effusion", "Mass"]
    rows = {r["image_id"]: r["labels"] for s in dd.values() for r in s}
    assert rows["img/1.png"] == {"Atelectasis": 1.0, "Effusion": 1.0, "Mass": 0.0}
    assert rows["img/5.png"] == {"Atelectasis": 0.0, "Effusion": 1.0, "Mass": 1.0}
    assert rows["img/2.png"] == {"Atelectasis": 0.0, "Effusion": 0.0, "Mass": 0.0}


def test_a_listed_class_name_holding_a_comma_is_not_split(tmp_path):
    """No false alarm: a class the user lists, separator inside its name, stays one class."""
    root = write_csv_source(
        tmp_path / "src", ["Opacity, diffuse", "Effusion|Opacity, diffuse", "Effusion"] * 2
    )
    dd = load_cxr_dataset("csv", root, label_names=["Effusion", "Opacity, diffuse"], **CSV_OPTIONS)
    rows = {r["image_id"]: r["labels"] for s in dd.values() for r in s}
    assert rows["img/1.png"] == {"Effusion": 1.0, "Opacity, diffuse": 1.0}
    with pytest.raises(ValueError, match="disagree"):
        load_cxr_dataset("csv", root, label_separator=";", label_delimiter=",", **CSV_OPTIONS)


def test_recipe_flags_carry_label_separator_to_the_loader(tmp_path):
    """--label_separator reaches the nih14 / csv loaders; --label_delimiter is its alias; a
    source that takes no separator refuses the flag instead of dropping it."""
    args = DataArguments(dataset=["nih14"], data_dir=["/d"], label_separator=";")
    assert args.sources() == [("nih14", "/d", {"label_separator": ";"})]
    old = DataArguments(dataset=["csv"], data_dir=["/d"], label_delimiter=",")
    assert old.sources() == [("csv", "/d", {"label_separator": ","})]
    with pytest.raises(ValueError, match="disagree"):
        DataArguments(dataset=["csv"], data_dir=["/d"], label_delimiter=",", label_separator=";")
    with pytest.raises(ValueError, match="--label_separator is an option of --dataset"):
        DataArguments(dataset=["chexpert"], data_dir=["/d"], label_separator=";")


def test_cli_commands_that_read_a_dataset_take_label_separator(nih_dir, tmp_path, capsys):
    """cache and export (calibration) take --label_separator, compare as its dataset options;
    without it cache names the rows in one line (no traceback), with it the cache is built."""
    parser = build_parser()
    for argv in (
        ["cache", "nih14", "--data_dir", "d"],
        ["export", "m", "out", "--calibration", "nih14", "--data_dir", "d"],
        ["compare", "a", "b", "--dataset", "nih14", "--data_dir", "d", "--output_dir", "o"],
    ):
        assert parser.parse_args([*argv, "--label_separator", ","]).label_separator == ","
    # Ten rows of train_val_list (row 3 among them) and two of test_list.
    root = nih_layout(nih_dir, tmp_path / "nih", ";", rows=[*range(10), 498, 499])
    base = ["cache", "nih14", "--data_dir", str(root), "--image_dir", "images",
            "--validation_size", "2", "--image_size", "32",
            "--cache_dir", str(tmp_path / "cache")]  # fmt: skip
    with pytest.raises(SystemExit) as err:
        main(base)
    assert f"{root}/Data_Entry_2017.csv {ROW_3_ERROR}" in str(err.value.code)
    main([*base, "--label_separator", ";"])
    assert "12 images cached" in capsys.readouterr().out


def test_slash_plus_and_word_and_between_known_findings_are_refused(tmp_path):
    """'Effusion / Mass' (or '+', ' and ') became one more class and the image a negative for
    both findings; where every part is a known finding it is refused like ';' and ','."""
    cells = ["Effusion", "Effusion / Mass", "Mass", "Atelectasis + Effusion", "Atelectasis",
             "Mass and Atelectasis", "No Finding"]  # fmt: skip
    root = write_csv_source(tmp_path / "src", cells)
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("csv", root, **CSV_OPTIONS)
    assert str(err.value).splitlines()[1:4] == [
        f"  {root}/labels.csv line 3: 'Effusion / Mass' looks like the findings ['Effusion', "
        "'Mass'] separated by '/', not '|': pass label_separator='/'",
        f"  {root}/labels.csv line 5: 'Atelectasis + Effusion' looks like the findings "
        "['Atelectasis', 'Effusion'] separated by '+', not '|': pass label_separator='+'",
        f"  {root}/labels.csv line 7: 'Mass and Atelectasis' looks like the findings ['Mass', "
        "'Atelectasis'] separated by ' and ', not '|': pass label_separator=' and '",
    ]
    slashes = write_csv_source(tmp_path / "slashes", ["Effusion", "Effusion / Mass", "Mass"] * 2)
    dd = load_cxr_dataset("csv", slashes, label_separator="/", **CSV_OPTIONS)
    rows = {r["image_id"]: r["labels"] for s in dd.values() for r in s}
    assert rows["img/1.png"] == {"Effusion": 1.0, "Mass": 1.0}


def test_a_slash_name_whose_parts_are_not_all_findings_stays_one_class(tmp_path):
    """No false alarm: '/' inside a class name is a separator only where every part is a label."""
    root = write_csv_source(tmp_path / "src", ["Effusion", "Effusion/fluid", "Mass"] * 2)
    dd = load_cxr_dataset("csv", root, **CSV_OPTIONS)
    assert label_names(dd["train"]) == ["Effusion", "Effusion/fluid", "Mass"]


def test_no_finding_together_with_a_finding_is_refused_naming_the_row(nih_dir, tmp_path):
    """'No Finding|Effusion' contradicts itself (NIH never combines them); it was read as an
    Effusion positive in silence. Refused naming the row, or left out with on_bad='skip'."""
    root = write_csv_source(tmp_path / "src", ["Effusion", "No Finding|Effusion", "Mass"] * 2)
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("csv", root, **CSV_OPTIONS)
    assert (
        f"{root}/labels.csv line 3: 'No Finding' together with the finding(s) ['Effusion']: "
        "contradictory (NIH's release never combines them); write either 'No Finding' or the "
        "findings" in str(err.value)
    )
    dd = load_cxr_dataset("csv", root, on_bad="skip", **CSV_OPTIONS)
    assert sorted(r["image_id"] for s in dd.values() for r in s) == [
        "img/0.png", "img/2.png", "img/3.png", "img/5.png"
    ]  # fmt: skip
    nih = nih_layout(nih_dir, tmp_path / "nih", "|")
    entry = nih / "Data_Entry_2017.csv"
    lines = entry.read_text().splitlines()
    lines[1] = lines[1].replace(lines[1].split(",")[1], "No Finding|Effusion", 1)
    entry.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match=r"line 2: 'No Finding' together with"):
        load_cxr_dataset("nih14", nih, image_dir="images")


def test_one_known_part_is_enough_for_a_common_separator_but_not_for_a_loose_one():
    """';' and ',' are never inside a class name, so one known part marks the cell as split
    on them ('Atelectasis;Opacity_X' is refused though Opacity_X is new); '/' may be inside a
    name, so 'Atelectasis/Opacity_X' (one part unknown) stays one class."""
    from hf_cxr_mae.data.labels import check_separator_use

    with pytest.raises(DataValidationError) as err:
        check_separator_use(["Atelectasis", "Atelectasis;Opacity_X"], ["row 1", "row 2"], "|", "t")
    assert str(err.value).splitlines()[1] == (
        "  row 2: 'Atelectasis;Opacity_X' looks like the findings ['Atelectasis', 'Opacity_X'] "
        "separated by ';', not '|': pass label_separator=';'"
    )
    loose = ["Atelectasis", "Atelectasis/Opacity_X"]
    assert check_separator_use(loose, ["row 1", "row 2"], "|", "t") is None
