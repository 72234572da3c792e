"""Issue 11 attacked again as a careless user would: variations the first fixes missed."""

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_cxr_mae.data import load_cxr_dataset
from hf_cxr_mae.data.validation import DataValidationError


def _png(path: Path, seed: int, size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


# ------------------------------------------------------------------ the same image under two names


def _csv_with_aliases(root: Path, copy_label: int) -> Path:
    """Ten images labelled k % 2, plus 0.png again through a symlink and 1.png as a copy."""
    rows = ["path,A"]
    for k in range(10):
        _png(root / f"{k}.png", k)
        rows.append(f"{k}.png,{k % 2}")
    os.symlink("0.png", root / "link.png")
    shutil.copy(root / "1.png", root / "copy1.png")
    rows += ["link.png,0", f"copy1.png,{copy_label}"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("seed", range(4))
def test_a_symlink_or_copy_never_lands_on_both_sides_of_the_validation_split(tmp_path, seed):
    root = _csv_with_aliases(tmp_path, copy_label=1)
    dd = load_cxr_dataset("csv", root, validation_size=0.5, seed=seed)
    # Recompute independently: the bytes of every image in each split.
    digests = {
        split: {(root / i).read_bytes() for i in dd[split]["image_id"]}
        for split in ("train", "validation")
    }
    assert not digests["train"] & digests["validation"]
    # Each distinct image is kept exactly once (the alias rows are exact duplicates).
    assert len(dd["train"]) + len(dd["validation"]) == 10


def test_a_copy_with_other_labels_is_a_conflict_naming_both_rows(tmp_path):
    root = _csv_with_aliases(tmp_path, copy_label=0)  # 1.png says A=1, its copy says A=0
    with pytest.raises(DataValidationError, match=r"line 13.*line 3") as err:
        load_cxr_dataset("csv", root)
    assert "labels" in str(err.value)


# ------------------------------------------------------------------------- imagefolder layouts


@pytest.mark.parametrize("names", [("Train", "Val", "Test"), ("TRAIN", "valid", "Test")])
def test_split_folders_in_any_case_are_splits_not_an_unlabelled_set(tmp_path, names):
    seed = 0
    for folder in names:
        for cls in ("NORMAL", "PNEUMONIA"):
            for k in range(3):
                _png(tmp_path / folder / cls / f"{k}.png", seed)
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
            _png(tmp_path / cls / f"{cls}{k}.png", 10 * c + k)
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
        _png(tmp_path / "data" / "chest_xray" / split / cls / f"{k}.png", k, 64)
    argv = [*TINY_TRAIN, "--dataset", "imagefolder", "--data_dir", str(tmp_path / "data"),
            "--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--pixel_cache", "false"]  # fmt: skip
    with pytest.raises(
        DataValidationError, match=r"no class folders.*chest_xray/train/NORMAL/0\.png"
    ):
        recipe("finetune").main(argv)


# ------------------------------------------------------------------- an explicit --learning_rate


def _parsed_lr(argv: list[str]) -> tuple[float, float | None]:
    from hf_cxr_mae.training import DataArguments, FinetuneArguments, ModelArguments
    from hf_cxr_mae.training.arguments import parse_recipe_args

    *_, training = parse_recipe_args((ModelArguments, DataArguments, FinetuneArguments), argv)
    return training.learning_rate, training.blr


def test_an_explicit_learning_rate_is_not_silently_replaced_by_the_default_blr(tmp_path, caplog):
    base = ["--dataset", "nih14", "--data_dir", str(tmp_path), "--output_dir", str(tmp_path),
            "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2"]  # fmt: skip
    assert _parsed_lr([*base, "--learning_rate", "0.001"]) == (0.001, None)
    assert _parsed_lr([*base, "--learning_rate=0.002"]) == (0.002, None)
    # Without it the recipe's base LR applies: blr x (8 x 2 x 1 process) / 256.
    lr, blr = _parsed_lr(base)
    assert lr == pytest.approx(blr * 16 / 256)
    # A flag beats the config file, either way; two flags: blr wins, as its help says, with a
    # warning.
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 0.003\nblr: 0.02\n")
    assert _parsed_lr([str(config), *base, "--learning_rate", "0.004"]) == (0.004, None)
    config.write_text("learning_rate: 0.003\n")
    assert _parsed_lr([str(config), *base]) == (0.003, None)
    blr_wins = (pytest.approx(0.01 * 16 / 256), 0.01)
    assert _parsed_lr([str(config), *base, "--blr", "0.01"]) == blr_wins
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        assert _parsed_lr([*base, "--learning_rate", "0.001", "--blr", "0.01"]) == blr_wins
    assert "learning_rate is ignored" in caplog.text


# ------------------------------------------------------------- a resume that is not the same run


def test_auto_resume_refuses_a_checkpoint_saved_with_other_settings(tmp_path, caplog):
    from recipe_utils import TINY_TRAIN, recipe

    out = tmp_path / "run"
    args = [*TINY_TRAIN, "--demo_size", "16", "--model_name_or_path", "", "--pixel_cache", "false",
            "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no",
            "--load_best_model_at_end", "false", "--output_dir", str(out), "--seed", "3"]  # fmt: skip
    recipe("finetune").main([*args, "--max_steps", "2"])
    # Another seed (or LR, batch, augmentation...) into the same folder: not silently mixed.
    with pytest.raises(ValueError, match=r"checkpoint-2 was saved by .*seed 3 there, 7 now"):
        recipe("finetune").main([*args, "--max_steps", "4", "--seed", "7"])
    assert not (out / "checkpoint-4").exists()
    # Running longer with the same settings resumes as before, workers and logging aside.
    with caplog.at_level(logging.INFO, logger="hf_cxr_mae"):
        recipe("finetune").main([*args, "--max_steps", "4", "--logging_steps", "2"])
    assert f"Resuming from {out / 'checkpoint-2'}" in caplog.text
    assert (out / "checkpoint-4" / "run_settings.json").is_file()
    # A shorter run into the same folder would save the 4-step weights as a 2-step model.
    with pytest.raises(ValueError, match=r"checkpoint-4 has trained 4 steps .*--max_steps 2"):
        recipe("finetune").main([*args, "--max_steps", "2"])


# ----------------------------------------------------------------------- predict on a folder


def _part10_dicom(path: Path, pixels: np.ndarray) -> Path:
    """An 8-bit MONOCHROME2 DICOM file (preamble, 'DICM', file meta), made with pydicom."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_predict_reads_a_dicom_without_suffix_and_skips_junk_but_names_the_rest(tmp_path, caplog):
    from hf_cxr_mae.data.images import read_xray
    from hf_cxr_mae.predict import collect_images

    pixels = np.random.default_rng(1).integers(0, 256, (12, 10), dtype=np.uint8)
    dicom = _part10_dicom(tmp_path / "IM0001", pixels)  # as PACS exports name them
    np.testing.assert_array_equal(np.asarray(read_xray(dicom)), pixels)
    with dicom.open("rb") as f:  # a file object too (an upload)
        np.testing.assert_array_equal(np.asarray(read_xray(f)), pixels)
    # The demo sizes it from its header (megapixel check before decoding), as a .dcm.
    from hf_cxr_mae.demo_app import header_size

    assert header_size(dicom) == (10, 12)
    _png(tmp_path / "a.png", 0)
    _png(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.png", 0)
    (tmp_path / "._a.png").write_bytes(b"\0\5\26\7")  # AppleDouble: not an image
    Image.new("L", (8, 8)).save(tmp_path / "scan.tif")
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        found = collect_images([tmp_path])
    assert found == sorted([tmp_path / "a.png", dicom])
    assert "scan.tif" in caplog.text and "IM0001" not in caplog.text


# ---------------------------------------------------------- NIH: one patient spelled two ways


def test_nih_patient_ids_that_differ_only_in_spaces_are_one_patient(nih_dir, tmp_path):
    """A spreadsheet edit leaves '75 ' beside '75': still one patient, so the same person in
    train_val and test is refused rather than leaked."""
    import csv

    data = tmp_path / "nih"
    data.mkdir()
    (data / "images").symlink_to(nih_dir / "images")
    for name in ("train_val_list.txt", "test_list.txt"):
        shutil.copy(nih_dir / name, data / name)
    rows = list(csv.reader((nih_dir / "Data_Entry_2017.csv").open(newline="")))
    test_image = (nih_dir / "test_list.txt").read_text().split()[0]
    train_image = (nih_dir / "train_val_list.txt").read_text().split()[0]
    patient = next(r[3] for r in rows if r[0] == test_image)
    for r in rows:
        if r[0] == train_image:
            r[3] = f" {patient} "
    with (data / "Data_Entry_2017.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataValidationError, match=rf"patient '{patient}' is also in split 'test'"):
        load_cxr_dataset("nih14", data, image_dir="images")


# ------------------------------------------------ a validation split whose mAUC is undefined


def test_a_validation_split_without_both_classes_picks_on_loss_instead_of_crashing(
    tmp_path, caplog
):
    """One validation image: no finding has positives and negatives, so there is never an
    eval_mauc; the Trainer used to stop at the first evaluation, leaving nothing."""
    import json

    from recipe_utils import TINY_TRAIN, recipe

    rows = ["path,A,B"]
    for k in range(12):
        _png(tmp_path / "data" / f"{k}.png", k, 64)
        rows.append(f"{k}.png,{k % 2},{(k // 2) % 2}")
    (tmp_path / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    argv = [*TINY_TRAIN, "--dataset", "csv", "--data_dir", str(tmp_path / "data"),
            "--validation_size", "1", "--output_dir", str(out), "--max_steps", "3",
            "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps",
            "--save_steps", "1", "--pixel_cache", "false", "--model_name_or_path", ""]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        recipe("finetune").main(argv)
    assert "picked on validation loss" in caplog.text
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    losses = [h["eval_loss"] for h in state["log_history"] if "eval_loss" in h]
    assert len(losses) == 3 and state["best_metric"] == min(losses)


# ------------------------------------------------------------ a column named twice in a CSV


def test_a_csv_header_naming_a_column_twice_is_refused_not_a_new_class(tmp_path):
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.png", 2)
    (tmp_path / "labels.csv").write_text("path,Effusion,Mass,Effusion \na.png,1,0,0\nb.png,0,1,1\n")
    with pytest.raises(DataValidationError, match=r"labels\.csv.*\['Effusion'\] more than once"):
        load_cxr_dataset("csv", tmp_path, validation_size=1)


def test_a_symlink_loop_in_an_imagefolder_is_read_once(tmp_path, caplog):
    for c, cls in enumerate(("a", "b")):
        for k in range(3):
            _png(tmp_path / cls / f"{cls}{k}.png", 10 * c + k)
    (tmp_path / "a" / "up").symlink_to("..")  # a loop: a/up/a/up/... is the same folder
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        dd = load_cxr_dataset("imagefolder", tmp_path, validation_size=2)
    ids = sorted([*dd["train"]["image_id"], *dd["validation"]["image_id"]])
    assert ids == sorted(f"{c}/{c}{k}.png" for c in "ab" for k in range(3))
    assert "up" in caplog.text


def test_evaluating_validation_with_another_validation_size_than_the_fine_tuning_is_refused(
    tmp_path,
):
    """The carved validation split depends on validation_size: evaluating 'validation' with
    another size would score images the model was trained on. Real data is split with the
    loaders' fixed seed, so another --seed is accepted and gives the same images."""
    from recipe_utils import TINY_TRAIN, recipe

    rows = ["path,A"]
    for k in range(12):
        _png(tmp_path / "data" / f"{k}.png", k, 64)
        rows.append(f"{k}.png,{k % 2}")
    (tmp_path / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    data = ["--dataset", "csv", "--data_dir", str(tmp_path / "data")]
    model = tmp_path / "ft"
    recipe("finetune").main(
        [*TINY_TRAIN, *data, "--validation_size", "4", "--output_dir", str(model),
         "--max_steps", "1", "--seed", "0", "--eval_strategy", "no", "--save_strategy", "no",
         "--load_best_model_at_end", "false", "--pixel_cache", "false", "--model_name_or_path", ""]
    )  # fmt: skip
    evaluate = [*data, "--model_name_or_path", str(model), "--split", "validation",
                "--pixel_cache", "false", "--bootstrap_resamples", "0", "--report_to", "none"]  # fmt: skip
    with pytest.raises(ValueError, match=r"fine-tuned with --validation_size 4"):
        recipe("evaluate_model").main(
            [*evaluate, "--validation_size", "3", "--output_dir", str(tmp_path / "e1")]
        )
    reports = [
        recipe("evaluate_model").main(
            [
                *evaluate,
                "--validation_size",
                "4",
                "--seed",
                seed,
                "--output_dir",
                str(tmp_path / seed),
            ]
        )
        for seed in ("0", "42")
    ]
    assert reports[0]["num_images"] == reports[1]["num_images"] == 4
    assert reports[0]["mauc"] == reports[1]["mauc"]  # the same validation images
