"""The paper's NIH split (``protocol="paper"``): the shipped split files are the paper's unchanged
with their license, they assign a full release as 75,312 / 11,212 / 25,596 images, a label file
that disagrees or a partial copy of the release is refused, and protocol values are checked."""

import csv
import lzma
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from helpers import names_and_labels, parse_lines
from PIL import Image

from hf_cxr_mae.data import NIH14_LABELS, load_cxr_dataset
from hf_cxr_mae.data.loading import load_pretraining_dataset
from hf_cxr_mae.data.validation import DataValidationError

REPO = REPO_ROOT


SHIPPED = REPO / "hf_cxr_mae" / "data" / "nih_paper_split"


FILES = {
    "train": "train_official.txt",
    "validation": "val_official.txt",
    "test": "test_official.txt",
}


PAPER_COUNTS = {"train": 75_312, "validation": 11_212, "test": 25_596}


def test_shipped_paper_files_are_the_papers_unchanged_with_its_license(paper_split):
    seen: dict[str, str] = {}
    for split, name in FILES.items():
        text = lzma.decompress((SHIPPED / f"{name}.xz").read_bytes()).decode()
        assert text == (paper_split / name).read_text()
        entries = parse_lines(text)
        assert len(entries) == PAPER_COUNTS[split]
        assert all(len(labels) == 14 and set(labels) <= {0.0, 1.0} for _, labels in entries)
        for n, _ in entries:
            assert seen.setdefault(n, split) == split, f"{n} in {seen[n]} and {split}"
    notice = (SHIPPED / "README.md").read_text()
    assert "Apache License 2.0" in notice and "lambert-x/medical_mae" in notice
    assert "Apache License" in (SHIPPED / "LICENSE").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"hf_cxr_mae.data" = ["nih_paper_split/*"]' in pyproject


def write_full_layout(root: Path, rows: list[tuple[str, list[float]]]) -> None:
    """A release-shaped NIH folder: Data_Entry_2017.csv for ``rows`` and a distinct PNG each."""
    rng = np.random.default_rng(0)
    (root / "images_001" / "images").mkdir(parents=True)
    with open(root / "Data_Entry_2017.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "View Position"]
        )
        for name, labels in rows:
            found = [n for n, v in zip(NIH14_LABELS, labels, strict=True) if v] or ["No Finding"]
            writer.writerow([name, "|".join(found), 0, name.split("_")[0], "PA"])
            pixels = rng.integers(0, 255, (16, 16), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images_001" / "images" / name)


def test_paper_protocol_reads_the_shipped_files(tmp_path):
    heads = {
        s: parse_lines(lzma.decompress((SHIPPED / f"{n}.xz").read_bytes()).decode())[:3]
        for s, n in FILES.items()
    }
    write_full_layout(tmp_path, [e for entries in heads.values() for e in entries])
    # Only a handful of the listed images exist: the rest are reported and left out.
    dd = load_cxr_dataset("nih14", tmp_path, protocol="paper", on_bad="skip")
    for split, entries in heads.items():
        assert names_and_labels(dd[split]) == dict(entries)
    # Pre-training under the paper protocol sees the train file's images only.
    images = load_pretraining_dataset(
        [("nih14", tmp_path, {"protocol": "paper", "on_bad": "skip"})]
    )
    assert sorted(Path(i).name for i in images["image_id"]) == sorted(n for n, _ in heads["train"])


def test_paper_protocol_refuses_a_label_file_that_disagrees(tmp_path):
    first = parse_lines(lzma.decompress((SHIPPED / "train_official.txt.xz").read_bytes()).decode())[
        0
    ]
    name, labels = first
    wrong = labels.copy()
    wrong[NIH14_LABELS.index("Hernia")] = 1.0 - wrong[NIH14_LABELS.index("Hernia")]
    write_full_layout(tmp_path, [(name, wrong)])
    with pytest.raises(
        DataValidationError,
        match=rf"train_official\.txt\.xz line 1: {name}: labels disagree: Hernia",
    ):
        load_cxr_dataset("nih14", tmp_path, protocol="paper")


def test_paper_split_sizes_on_a_full_label_table():
    """The three files assign a full release's 112,120 images as 75,312 / 11,212 / 25,596."""
    import pandas as pd

    from hf_cxr_mae.data.split_files import assign_split_files, paper_split_files

    entries = [
        e
        for n in FILES.values()
        for e in parse_lines(lzma.decompress((SHIPPED / f"{n}.xz").read_bytes()).decode())
    ]
    table = pd.DataFrame(
        {
            "where": [f"row {i}" for i in range(len(entries))],
            "name": [n for n, _ in entries],
            "path": [f"images/{n}" for n, _ in entries],
            "labels": [lab for _, lab in entries],
        }
    )
    parts = assign_split_files(
        table, paper_split_files(), "table", keys=("name",), label_names=NIH14_LABELS
    )
    assert {s: len(p) for s, p in parts.items()} == PAPER_COUNTS
    assert len(table) == sum(PAPER_COUNTS.values()) == 112_120


def test_protocol_values_are_checked(nih_dir):
    with pytest.raises(ValueError, match="protocol must be 'release' or 'paper'"):
        load_cxr_dataset("nih14", nih_dir, image_dir="images", protocol="papr")
    with pytest.raises(ValueError, match="not both"):
        load_cxr_dataset("nih14", nih_dir, protocol="paper", split_files="train=x.txt")


def test_paper_protocol_on_a_subset_says_it_needs_the_full_release(nih_dir, shared_data):
    """``protocol="paper"`` on a partial NIH copy (the 500-image sample): the user cannot "fix"
    the shipped split files line by line; the error must say the release is incomplete, how many
    listed images are absent, and how to go on (on_bad='skip' or own split_files)."""
    import pandas as pd
    import pytest

    from hf_cxr_mae.data import load_cxr_dataset
    from hf_cxr_mae.data.validation import DataValidationError

    listed = set()
    for name in ("train_official.txt", "val_official.txt", "test_official.txt"):
        text = (shared_data / "nih-paper-split" / name).read_text()
        listed |= {line.split()[0] for line in text.splitlines() if line.strip()}
    present = set(pd.read_csv(nih_dir / "Data_Entry_2017.csv")["Image Index"])
    absent = len(listed - present)
    assert 0 < absent < len(listed)
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("nih14", nih_dir, image_dir="images", protocol="paper")
    message = str(err.value)
    assert f"{absent:,} of the {len(listed):,}" in message
    assert "full" in message and "on_bad" in message and "split_files" in message
