"""Prediction files and their resume: the probabilities kept as predicted, a file of another model
(or of read errors only) refused, the same images recognised by another path, a row cut short or
a byte-order mark added by a spreadsheet handled on resume."""

import re

import numpy as np
import pytest
from helpers import TWO_FINDINGS
from PIL import Image

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.serving.predict import load_model, predict_files, predict_to_file
from hf_cxr_mae.serving.prediction_file import read_predictions


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (64, 64), np.uint8)).save(folder / f"x{i}.png")
    return sorted(folder.glob("*.png"))


def test_prediction_file_of_one_model_is_not_resumed_by_another(two_heads, images, tmp_path):
    # Rerunning predict with another model and the same --output used to report every image as
    # "already in" the file and keep model A's probabilities as if they were B's.
    a, b = two_heads
    output = tmp_path / "predictions.csv"
    predict_to_file(load_model(str(a)), images[:3], output, fast=False, progress=False)
    with pytest.raises(ValueError, match=r"predictions.csv.*other model"):
        predict_to_file(load_model(str(b)), images, output, fast=False, progress=False)
    # The same model resumes as before.
    assert predict_to_file(load_model(str(a)), images, output, fast=False, progress=False) == (
        2,
        0,
        3,
    )


def test_resume_recognises_the_same_images_given_by_another_path(
    two_heads, images, tmp_path, monkeypatch
):
    # First run with absolute paths, the rerun from the images' folder with relative ones: the
    # images already predicted used to be predicted again and written twice (compare then
    # refuses the file).
    a, _ = two_heads
    model = load_model(str(a))
    output = tmp_path / "predictions.csv"
    predict_to_file(model, images[:3], output, fast=False, progress=False)
    monkeypatch.chdir(images[0].parent)
    relative = [type(p)(p.name) for p in images]
    assert predict_to_file(model, relative, output, fast=False, progress=False) == (2, 0, 3)


def test_prediction_csv_keeps_the_probabilities_as_predicted(two_heads, images, tmp_path):
    # A confident model's probabilities near 0 (B's Effusion: 3e-10 to 6e-7) were written with 6
    # decimals: they became 0.000000 and compare, reading the file, ranked them as ties (another
    # AUROC than the model's). The CSV now holds every float32 probability exactly, as .jsonl.
    _, b = two_heads
    model = load_model(str(b))
    expected, _ = predict_files(model, images, fast=False)
    output = tmp_path / "predictions.csv"
    predict_to_file(model, images, output, fast=False, progress=False)
    written = read_predictions(output)
    assert written.ids == [r.path for r in expected]
    table = np.array([[r.probabilities[n] for n in TWO_FINDINGS] for r in expected], dtype=np.float32)
    assert (table < 5e-7).any() or (table > 1 - 5e-7).any()  # the case that lost its ranks
    np.testing.assert_array_equal(written.probabilities.astype(np.float32), table)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_after_a_row_cut_short(two_heads, images, tmp_path, suffix):
    # A run killed in the middle of writing a row leaves half a line: the resume counted that
    # image as done (CSV) and appended the next row onto the same line, a file compare refuses.
    a, _ = two_heads
    model = load_model(str(a))
    output = tmp_path / f"predictions{suffix}"
    predict_to_file(model, images[:3], output, fast=False, progress=False)
    text = output.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    output.write_text(text[: len(text) - len(last) - 1 + len(last) // 2])  # half the last row
    assert predict_to_file(model, images, output, fast=False, progress=False) == (3, 0, 2)
    written = read_predictions(output)
    expected, _ = predict_files(model, images, fast=False)
    assert sorted(written.ids) == sorted(str(p) for p in images)
    table = {r.path: [r.probabilities[n] for n in TWO_FINDINGS] for r in expected}
    for image, row in zip(written.ids, written.probabilities, strict=True):
        np.testing.assert_allclose(row, table[image], rtol=1e-6)


def test_predict_command_names_a_reused_output_without_a_traceback(two_heads, images, tmp_path):
    a, b = two_heads
    output = tmp_path / "predictions.csv"
    cli(["predict", "--model", str(a), *map(str, images[:2]), "--output", str(output)])
    with pytest.raises(
        SystemExit, match=r"predict: .*predictions.csv holds predictions of another"
    ):
        cli(["predict", "--model", str(b), *map(str, images), "--output", str(output)])
    with pytest.raises(SystemExit, match=r"predict: --output .* is a folder"):
        cli(["predict", "--model", str(a), *map(str, images), "--output", str(tmp_path)])


def test_a_prediction_csv_of_read_errors_only_is_refused(tmp_path):
    # Every image failed to read (wrong folder mounted): compare wrote a report on 0 images.
    path = tmp_path / "predictions.csv"
    path.write_text("path,error,A,B,flagged\nx1.png,cannot read,,,\nx2.png,cannot read,,,\n")
    with pytest.raises(ValueError, match=r"predictions.csv holds no predictions \(2 rows"):
        read_predictions(path)


def test_resume_a_csv_saved_again_with_a_byte_order_mark(exported_in_place, textured_pngs, tmp_path):
    # UNCLEAR. The user opened predictions.csv in Excel / Notepad and saved it (UTF-8 with BOM).
    # The rerun refuses with "holds results with other columns (path, error, Atelectasis, ...)":
    # the very columns it writes, the BOM being invisible. Expected: it resumes (or names the BOM).
    model = load_model(str(exported_in_place), "onnx")
    out = tmp_path / "predictions.csv"
    predict_to_file(model, textured_pngs[:2], out, num_workers=0, progress=False)
    out.write_bytes(b"\xef\xbb\xbf" + out.read_bytes())
    try:
        predicted, failed, skipped = predict_to_file(
            model, textured_pngs, out, num_workers=0, progress=False
        )
    except ValueError as err:
        assert "BOM" in str(err) or "byte order" in str(err), str(err)
    else:
        assert (predicted, failed, skipped) == (1, 0, 2)


def test_resume_a_jsonl_saved_again_with_a_byte_order_mark(exported_in_place, textured_pngs, tmp_path):
    # SILENT. The same with predictions.jsonl: its first line no longer parses ("Unexpected UTF-8
    # BOM"), is taken for a line cut short by a crash, and that image is predicted again: the
    # file now holds two rows for it and the counts say "1 already in" instead of 2.
    import json

    model = load_model(str(exported_in_place), "onnx")
    out = tmp_path / "predictions.jsonl"
    predict_to_file(model, textured_pngs[:2], out, num_workers=0, progress=False)
    out.write_bytes(b"\xef\xbb\xbf" + out.read_bytes())
    counts = predict_to_file(model, textured_pngs, out, num_workers=0, progress=False)
    rows = [json.loads(line.lstrip("\ufeff")) for line in out.read_text("utf-8").splitlines()]
    paths = [row["path"] for row in rows]
    assert sorted(paths) == sorted(map(str, textured_pngs)), f"rows per image: {paths}"
    assert counts == (1, 0, 2)


def test_label_csv_column_names_are_read_trimmed_and_two_alike_refused(tmp_path):
    """A spreadsheet often leaves a space after a header (``Effusion ``): read as it is, that
    column matched no prediction and the finding silently left the comparison. Headers are read
    trimmed; two that become the same name are refused, naming both."""
    from hf_cxr_mae.evaluation.paired_files import read_labels

    path = tmp_path / "labels.csv"
    path.write_text(" image_id,Atelectasis , Effusion\nx0.png,1,0\nx1.png,0,1\n")
    labels = read_labels(path)
    assert labels.names == ["Atelectasis", "Effusion"]
    assert labels.ids == ["x0.png", "x1.png"]
    assert labels.targets.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert read_labels(path, ["Effusion"]).targets.tolist() == [[0.0], [1.0]]
    path.write_text("image_id,Effusion,Effusion \nx0.png,1,0\n")
    with pytest.raises(ValueError) as err:
        read_labels(path)
    assert str(err.value) == (
        f"{path}: columns 'Effusion' and 'Effusion ' are the same name 'Effusion' once "
        "surrounding spaces are removed."
    )


def test_an_empty_file_and_a_folder_are_named(tmp_path):
    """An empty predictions file gave pandas' "No columns to parse from file" without its name;
    a folder passed as the labels file was said not to exist."""
    from hf_cxr_mae.evaluation.paired_files import read_labels

    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(f"{empty} is empty: no header, no rows.")):
        read_predictions(empty)
    with pytest.raises(ValueError, match=re.escape(f"{empty} is empty: no header, no rows.")):
        read_labels(empty)
    folder = f"Labels file {tmp_path} is a folder; name the CSV file in it."
    with pytest.raises(ValueError, match=re.escape(folder)):
        read_labels(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"Prediction file {tmp_path} is a folder; ")):
        read_predictions(tmp_path)


def test_a_results_csv_with_the_findings_in_another_order_is_refused_untouched(
    two_heads, images, tmp_path
):
    """Findings are compared in order, not as a set: resuming a CSV whose columns hold the same
    findings swapped would append this model's Atelectasis under the file's Effusion. Refused
    before anything is written, though its ``.model`` record is this model's."""
    import csv

    a, _ = two_heads
    output = tmp_path / "predictions.csv"
    predict_to_file(load_model(str(a)), images[:3], output, fast=False, progress=False)
    with output.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "error", "Atelectasis", "Effusion", "flagged"]
    with output.open("w", newline="") as f:
        csv.writer(f).writerows([[r[0], r[1], r[3], r[2], r[4]] for r in rows])
    before = output.read_bytes()
    with pytest.raises(ValueError) as err:
        predict_to_file(load_model(str(a)), images, output, fast=False, progress=False)
    assert str(err.value) == (
        f"{output} holds results with other columns (columns path, error, Effusion, Atelectasis, "
        "flagged...); pass another --output or delete it."
    )
    assert output.read_bytes() == before
