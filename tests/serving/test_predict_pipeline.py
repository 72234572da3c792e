"""Folder prediction as a pipeline (``hf_cxr_mae.serving.predict``): results written batch by batch (a
killed run keeps them and a rerun skips them), unreadable files listed in the output and tried
again on resume, and a model retrained into the same folder never resuming the old file."""

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import ABC_LABELS, save_classifier, tiny_classifier
from PIL import Image

from hf_cxr_mae.serving.predict import load_model, predict_files, predict_to_file


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_csv_matches_the_in_memory_predictions_with_workers(flagged_classifier_dir, pngs_with_a_broken_one, tmp_path):
    model = load_model(str(flagged_classifier_dir))
    expected, failures = predict_files(model, pngs_with_a_broken_one, batch_size=7, fast=False)
    # B's threshold between the images' probabilities, so that some are flagged and some not.
    b = sorted(result.probabilities["B"] for result in expected)
    threshold = (b[10] + b[11]) / 2
    model.config.operating_points["thresholds"]["B"] = threshold
    output = tmp_path / "out.csv"
    predicted, failed, skipped = predict_to_file(
        model, pngs_with_a_broken_one, output, batch_size=5, fast=False, num_workers=2, progress=False
    )
    assert (predicted, failed, skipped) == (23, 1, 0)
    rows = _rows(output)
    assert [r["path"] for r in rows if not r["error"]] == [p.path for p in expected]
    bad = [r for r in rows if r["error"]]
    assert [r["path"] for r in bad] == [failures[0][0]] and bad[0]["path"].endswith("img05.png")
    for row, result in zip([r for r in rows if not r["error"]], expected, strict=True):
        got = [float(row[name]) for name in ABC_LABELS]
        np.testing.assert_allclose(got, list(result.probabilities.values()), atol=1e-6)
        # flagged: at or above the stored threshold; C has none, so it is never flagged.
        probs = result.probabilities
        marks = [n for n, t in (("A", 0.5), ("B", threshold)) if probs[n] >= t]
        assert row["flagged"] == ";".join(marks)
    flagged_b = ["B" in r["flagged"].split(";") for r in rows if not r["error"]]
    assert sum(flagged_b) == 12  # the 12 images above the middle


def test_an_injected_crash_keeps_the_finished_batches_and_a_rerun_skips_them(
    flagged_classifier_dir, pngs_with_a_broken_one, tmp_path, monkeypatch
):
    import hf_cxr_mae.serving.predict as predict

    model = load_model(str(flagged_classifier_dir))
    real_runner, calls = predict._runner, []

    def crashing_runner(model, fast):
        run = real_runner(model, fast)

        def crash_on_third(pixels):
            calls.append(len(pixels))
            if len(calls) == 3:
                raise RuntimeError("out of memory (injected)")
            return run(pixels)

        return crash_on_third

    monkeypatch.setattr(predict, "_runner", crashing_runner)
    output = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError, match="injected"):
        predict_to_file(model, pngs_with_a_broken_one, output, batch_size=4, fast=False, progress=False)
    lines = output.read_text().splitlines()
    assert len(lines) == 8  # two whole batches, nothing of the third
    monkeypatch.setattr(predict, "_runner", real_runner)
    calls.clear()
    predicted, failed, skipped = predict_to_file(
        model, pngs_with_a_broken_one, output, batch_size=4, fast=False, progress=False
    )
    # The unreadable img05 (in the second batch) failed: it is tried again, not skipped.
    assert skipped == 7 and predicted + failed == len(pngs_with_a_broken_one) - 7
    import json

    paths = [json.loads(line)["path"] for line in output.read_text().splitlines()]
    assert sorted(paths) == sorted(map(str, pngs_with_a_broken_one))  # each file once


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_failed_images_are_tried_again_on_resume(flagged_classifier_dir, pngs_with_a_broken_one, tmp_path, suffix):
    folder = tmp_path / "images"
    folder.mkdir()
    copies = []
    for image in pngs_with_a_broken_one[:6]:
        copies.append(folder / image.name)
        copies[-1].write_bytes(image.read_bytes())
    broken = folder / "img05.png"  # unreadable in the fixture
    model = load_model(str(flagged_classifier_dir))
    output = tmp_path / f"out{suffix}"
    assert predict_to_file(model, copies, output, fast=False, progress=False) == (5, 1, 0)
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(broken)  # the user fixes the file
    assert predict_to_file(model, copies, output, fast=False, progress=False) == (1, 0, 5)
    if suffix == ".csv":
        rows = _rows(output)
    else:
        import json

        rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(map(str, copies))  # each image once
    fixed = next(r for r in rows if r["path"] == str(broken))
    assert not fixed.get("error")
    (expected,), _ = predict_files(model, [broken], fast=False)
    got = fixed["probabilities"] if suffix == ".jsonl" else {n: float(fixed[n]) for n in ABC_LABELS}
    assert got == pytest.approx(expected.probabilities, abs=1e-7)


def test_a_model_retrained_into_the_same_folder_does_not_resume_the_old_file(pngs_with_a_broken_one, tmp_path):
    folder = save_classifier(tiny_classifier(ABC_LABELS), tmp_path / "model")
    output = tmp_path / "out.csv"
    predict_to_file(load_model(str(folder)), pngs_with_a_broken_one[:3], output, fast=False, progress=False)
    retrained = tiny_classifier(ABC_LABELS)
    for parameter in retrained.parameters():
        parameter.data.add_(0.01)
    save_classifier(retrained, folder)  # same folder, other weights
    with pytest.raises(ValueError, match="another model"):
        predict_to_file(load_model(str(folder)), pngs_with_a_broken_one[:6], output, fast=False, progress=False)


CHILD = textwrap.dedent(
    """
    import sys, time
    import hf_cxr_mae.serving.predict as predict
    real = predict._runner
    def slow(model, fast):
        run = real(model, fast)
        def step(pixels):
            time.sleep(0.4)  # a slow model, so the parent can kill it half-way
            return run(pixels)
        return step
    predict._runner = slow
    from hf_cxr_mae.cli import main
    main(sys.argv[1:])
    """
)


def test_a_run_killed_half_way_keeps_its_partial_results(flagged_classifier_dir, pngs_with_a_broken_one, tmp_path):
    output = tmp_path / "killed.csv"
    command = [sys.executable, "-c", CHILD, "predict", "--model", str(flagged_classifier_dir)]
    command += [str(pngs_with_a_broken_one[0].parent), "--output", str(output), "--batch_size", "3"]
    command += ["--num_workers", "1", "--no_fast"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if output.is_file() and len(output.read_text().splitlines()) >= 1 + 9:
            break
        time.sleep(0.05)
    assert child.poll() is None, child.communicate()[1].decode()[-2000:]
    child.send_signal(signal.SIGKILL)
    child.wait()
    rows = _rows(output)
    assert 9 <= len(rows) < len(pngs_with_a_broken_one) and len(rows) % 3 == 0  # whole batches only
    # What it wrote is right: the same numbers as predicting those files now.
    model = load_model(str(flagged_classifier_dir))
    done = [r for r in rows if not r["error"]]
    expected, _ = predict_files(model, [r["path"] for r in done], fast=False)
    for row, result in zip(done, expected, strict=True):
        assert row["path"] == result.path
        np.testing.assert_allclose(
            [float(row[n]) for n in ABC_LABELS], list(result.probabilities.values()), atol=1e-6
        )
    # The rerun finishes the folder without predicting the kept rows again (the failed one is
    # tried again, so it moves to the end).
    subprocess.run(command[:2] + command[2:], env=env, check=True, capture_output=True)
    final = _rows(output)
    assert final[: len(done)] == done and sorted(r["path"] for r in final) == sorted(
        map(str, pngs_with_a_broken_one)
    )
