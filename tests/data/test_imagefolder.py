"""The image-folder loader (``hf_cxr_mae.data.imagefolder``): class folders, split folders in any
case, unlabelled images, OS and tool junk ignored, unused files named, a stray file or a wrapper
folder too many named, a symlink loop read once."""

from __future__ import annotations

import logging
import re
import shutil

import pytest
from datasets import ClassLabel
from helpers import all_ids, random_png, write_images, write_unique_images
from PIL import Image

from hf_cxr_mae.data import DataValidationError, label_names, load_cxr_dataset


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


def test_imagefolder_ignores_os_and_tool_junk(tmp_path):
    d = tmp_path / "set"
    write_unique_images(d, [f"{c}/{i}.png" for c in ("normal", "pneumonia") for i in range(3)])
    write_unique_images(d, ["__MACOSX/normal/._0.png", ".ipynb_checkpoints/x.png", ".cache/y.png"])
    write_unique_images(d, ["normal/.hidden.png", "pneumonia/.ipynb_checkpoints/z.png"])
    (d / "normal" / "._1.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (d / ".DS_Store").write_bytes(b"junk")
    dd = load_cxr_dataset("imagefolder", d, validation_size=2)
    assert label_names(dd["train"]) == ["normal", "pneumonia"]
    assert all_ids(dd) == sorted(f"{c}/{i}.png" for c in ("normal", "pneumonia") for i in range(3))


@pytest.mark.parametrize("stray", ["stray.png", "normal/deeper/stray.png"])
def test_imagefolder_mixed_layout_names_the_stray_file(tmp_path, stray):
    d = tmp_path / "set"
    write_unique_images(d, [f"{c}/{i}.png" for c in ("normal", "pneumonia") for i in range(3)])
    write_unique_images(d, [stray])
    with pytest.raises(DataValidationError, match=re.escape(stray)):
        load_cxr_dataset("imagefolder", d, validation_size=2)


def test_imagefolder_split_folders(tmp_path):
    d = tmp_path / "set"
    layout = {"train": 4, "val": 2, "test": 3}
    write_unique_images(
        d,
        [
            f"{s}/{c}/{i}.png"
            for s, n in layout.items()
            for c in ("NORMAL", "PNEUMONIA")
            for i in range(n)
        ],
    )
    dd = load_cxr_dataset("imagefolder", d)
    assert sorted(dd) == ["test", "train", "validation"]
    assert {s: len(dd[s]) for s in dd} == {"train": 8, "validation": 4, "test": 6}
    names = label_names(dd["train"])
    assert names == ["NORMAL", "PNEUMONIA"]
    for split in dd.values():
        for row in split:
            assert names[row["label"]] == row["image_id"].split("/")[1]
    # Without a validation folder, one is split off the training folder.
    shutil.rmtree(d / "val")
    dd = load_cxr_dataset("imagefolder", d, validation_size=2)
    assert {s: len(dd[s]) for s in dd} == {"train": 6, "validation": 2, "test": 6}
    # A class missing from one split is refused, naming it.
    shutil.rmtree(d / "test" / "PNEUMONIA")
    with pytest.raises(DataValidationError, match="PNEUMONIA"):
        load_cxr_dataset("imagefolder", d, validation_size=2)


@pytest.mark.parametrize("names", [("Train", "Val", "Test"), ("TRAIN", "valid", "Test")])
def test_split_folders_in_any_case_are_splits_not_an_unlabelled_set(tmp_path, names):
    seed = 0
    for folder in names:
        for cls in ("NORMAL", "PNEUMONIA"):
            for k in range(3):
                random_png(tmp_path / folder / cls / f"{k}.png", seed)
                seed += 1
    dd = load_cxr_dataset("imagefolder", tmp_path)
    assert set(dd) == {"train", "validation", "test"}
    for split, folder in zip(("train", "validation", "test"), names, strict=True):
        assert dd[split].features["label"].names == ["NORMAL", "PNEUMONIA"]
        assert sorted(dd[split]["image_id"]) == sorted(
            str(p.relative_to(tmp_path)) for p in (tmp_path / folder).rglob("*.png")
        )


def test_imagefolder_names_the_files_it_does_not_use(tmp_path, caplog):
    for c, cls in enumerate(("a", "b")):
        for k in range(3):
            random_png(tmp_path / cls / f"{cls}{k}.png", 10 * c + k)
    Image.new("L", (8, 8)).save(tmp_path / "a" / "scan.tif")  # an X-ray in an unread format
    (tmp_path / "b" / "IM0001").write_bytes(b"\0" * 128 + b"DICM")  # a DICOM without suffix
    for junk in ("Thumbs.db", "desktop.ini", ".DS_Store"):
        (tmp_path / "a" / junk).write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        dd = load_cxr_dataset("imagefolder", tmp_path)
    assert len(dd["train"]) + len(dd["validation"]) == 6
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "scan.tif" in warned and "IM0001" in warned
    assert "Thumbs.db" not in warned and "desktop.ini" not in warned


def test_finetuning_an_imagefolder_without_class_folders_names_the_layout(tmp_path):
    """One wrapper folder too many (data_dir/chest_xray/train/NORMAL/x.png) must not become an
    unlabelled set that fails later with "Dataset has no 'labels'"."""
    from recipe_utils import TINY_TRAIN, recipe

    for k, (split, cls) in enumerate(
        [("train", "NORMAL"), ("train", "PNEUMONIA"), ("test", "NORMAL")]
    ):
        random_png(tmp_path / "data" / "chest_xray" / split / cls / f"{k}.png", k, 64)
    argv = [*TINY_TRAIN, "--dataset", "imagefolder", "--data_dir", str(tmp_path / "data"),
            "--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--pixel_cache", "false"]  # fmt: skip
    with pytest.raises(
        DataValidationError, match=r"no class folders.*chest_xray/train/NORMAL/0\.png"
    ):
        recipe("finetune").main(argv)


def test_a_symlink_loop_in_an_imagefolder_is_read_once(tmp_path, caplog):
    for c, cls in enumerate(("a", "b")):
        for k in range(3):
            random_png(tmp_path / cls / f"{cls}{k}.png", 10 * c + k)
    (tmp_path / "a" / "up").symlink_to("..")  # a loop: a/up/a/up/... is the same folder
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        dd = load_cxr_dataset("imagefolder", tmp_path, validation_size=2)
    ids = sorted([*dd["train"]["image_id"], *dd["validation"]["image_id"]])
    assert ids == sorted(f"{c}/{c}{k}.png" for c in "ab" for k in range(3))
    assert "up" in caplog.text
