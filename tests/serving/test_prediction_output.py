"""``predict --output``: a file predict did not write is never changed, a file without the record
of its model is never resumed, a full disk keeps whole rows and a rerun finishes the file exactly,
and a read-only output folder is named before any prediction work."""

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import TWO_FINDINGS, tiny_classifier
from PIL import Image

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.serving.predict import load_model, predict_to_file

LABELS = TWO_FINDINGS  # those of the two_heads models (conftest)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (64, 64), np.uint8)).save(folder / f"x{i}.png")
    return sorted(folder.glob("*.png"))


def _predict(model, images, output, *extra):
    cli(["predict", "--model", str(model), *map(str, images), "--output", str(output), *extra])


FOREIGN = {
    # A spreadsheet of the user's own with an error column: the old resume dropped its "failed"
    # rows (and rewrote it down to its header) before refusing its columns.
    ".csv": b"path,error,notes\r\nfoo.png,bad scan,keep me\r\nbar.png,,x\r\n",
    # Someone else's JSON lines: the old resume dropped the "error" line and appended rows.
    ".jsonl": b'{"id": 1, "error": "timeout"}\n{"id": 2, "score": 0.5}\n',
}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_file_predict_did_not_write_is_refused_and_left_byte_for_byte(
    two_heads, images, tmp_path, suffix
):
    """A CSV / JSON lines file of other content named as --output must be refused before any
    change: the user's data is never rewritten, cut or appended to."""
    output = tmp_path / f"mine{suffix}"
    output.write_bytes(FOREIGN[suffix])
    with pytest.raises(SystemExit) as refused:
        _predict(two_heads[0], images, output)
    message = str(refused.value.code)
    assert message.startswith(f"predict: {output} was not written by hf-cxr-mae predict")
    assert "pass another --output" in message and "\n" not in message
    assert output.read_bytes() == FOREIGN[suffix]
    assert not Path(f"{output}.model").exists()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_prediction_file_without_its_model_record_is_not_resumed(
    two_heads, images, tmp_path, suffix
):
    """Without ``<output>.model`` nothing tells which model wrote the rows: resuming it with
    another model used to keep model A's rows under model B's name. Refused, unchanged, with
    what to do."""
    a, b = two_heads
    output = tmp_path / f"predictions{suffix}"
    _predict(a, images[:3], output)
    Path(f"{output}.model").unlink()
    before = output.read_bytes()
    with pytest.raises(SystemExit) as refused:
        _predict(b, images, output)
    assert str(refused.value.code) == (
        f"predict: {output} has no predictions{suffix}.model beside it, the record of the model "
        "that wrote it, so it cannot be resumed safely (it may hold another model's rows): pass "
        f"another --output, or delete {output} to predict every image again."
    )
    assert output.read_bytes() == before
    assert not Path(f"{output}.model").exists()


def test_two_models_built_in_memory_are_told_apart(images, tmp_path):
    """A model built in Python (no folder, no Hub id) used to leave no record of itself, so a
    second one resumed its file and kept the first one's rows; its weights' fingerprint is the
    record now, and the same model still resumes."""
    first, second = tiny_classifier(LABELS), tiny_classifier(LABELS, head_std=3.0)
    output = tmp_path / "predictions.csv"
    kwargs = {"fast": False, "num_workers": 0, "progress": False}
    assert predict_to_file(first, images[:2], output, **kwargs) == (2, 0, 0)
    with pytest.raises(ValueError, match=r"holds predictions of another model \(in-memory "):
        predict_to_file(second, images, output, **kwargs)
    assert predict_to_file(first, images, output, **kwargs) == (4, 0, 2)


class FullDisk:
    """The file system of ``output`` holds ``capacity`` bytes of it: a write beyond is cut there
    (its count returned, as the kernel does) and the next one raises ENOSPC; with
    ``at_fsync`` the writes all succeed and ``fsync`` reports ENOSPC (delayed allocation)."""

    def __init__(self, output: Path, capacity: int, at_fsync: bool) -> None:
        self.output, self.capacity, self.at_fsync = output, capacity, at_fsync
        self.write, self.fsync = os.write, os.fsync

    def _ours(self, fd: int) -> bool:
        if not self.output.exists():
            return False
        mine, theirs = os.fstat(fd), self.output.stat()
        return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)

    def fake_write(self, fd, data):
        if self.at_fsync or not self._ours(fd):
            return self.write(fd, data)
        room = self.capacity - os.fstat(fd).st_size
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.write(fd, bytes(data)[:room])

    def fake_fsync(self, fd):
        if self.at_fsync and self._ours(fd) and os.fstat(fd).st_size > self.capacity:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.fsync(fd)


@pytest.mark.parametrize("at_fsync", [False, True], ids=["write", "fsync"])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_full_disk_keeps_whole_rows_and_a_rerun_finishes_the_file_exactly(
    two_heads, images, tmp_path, monkeypatch, suffix, at_fsync
):
    """The disk fills up in the middle of the second batch: a one-line "no space left on"
    error naming the file, the first batch's rows kept as they were (no half row), and the
    same command run again gives the file an uninterrupted run writes, byte for byte."""
    a, _ = two_heads
    flags = ("--batch_size", "2", "--num_workers", "0", "--no_fast")
    reference = tmp_path / f"reference{suffix}"
    _predict(a, images, reference, *flags)
    expected = reference.read_bytes()
    lines = expected.splitlines(keepends=True)
    header = 1 if suffix == ".csv" else 0
    first_batch = b"".join(lines[: header + 2])
    output = tmp_path / f"predictions{suffix}"
    disk = FullDisk(output, len(first_batch) + len(lines[header + 2]) // 2, at_fsync)
    monkeypatch.setattr(os, "write", disk.fake_write)
    monkeypatch.setattr(os, "fsync", disk.fake_fsync)
    with pytest.raises(SystemExit) as failed:
        _predict(a, images, output, *flags)
    message = str(failed.value.code)
    assert message.startswith(f"predict: no space left on {output} ") and "\n" not in message
    assert output.read_bytes() == first_batch
    monkeypatch.undo()  # space freed
    _predict(a, images, output, *flags)
    assert output.read_bytes() == expected


def test_predict_to_file_says_no_space_left_as_an_oserror(two_heads, images, tmp_path, monkeypatch):
    """The library call raises an OSError (errno ENOSPC) whose text names the file, so a caller
    can tell a full disk from a bad image."""
    output = tmp_path / "predictions.csv"
    disk = FullDisk(output, 10, at_fsync=False)  # not even the header fits
    monkeypatch.setattr(os, "write", disk.fake_write)
    model = load_model(str(two_heads[0]))
    with pytest.raises(OSError, match=rf"^no space left on {output} ") as failed:
        predict_to_file(model, images, output, fast=False, num_workers=0, progress=False)
    assert failed.value.errno == errno.ENOSPC
    assert output.read_bytes() == b""


def _no_model_loading(monkeypatch):
    import hf_cxr_mae.serving.predict as predict

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(predict, "load_model", refuse)


def _read_only(monkeypatch, folder: Path):
    """``folder`` read-only as the OS reports it (chmod does not stop root, who runs CI here)."""
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_a_read_only_output_folder_is_named_before_any_work(two_heads, images, tmp_path, monkeypatch):
    """--output in a folder without write permission: one line naming the folder, before the
    model is loaded (it used to fail with a traceback, or only after the predictions)."""
    folder = tmp_path / "results"
    folder.mkdir()
    _read_only(monkeypatch, folder)
    _no_model_loading(monkeypatch)
    with pytest.raises(SystemExit) as refused:
        _predict(two_heads[0], images, folder / "sub" / "predictions.csv")
    assert str(refused.value.code) == (
        f"predict: --output {folder}/sub/predictions.csv: the folder {folder} is read-only (no "
        "permission to create files in it); name a writable one."
    )
    assert list(folder.iterdir()) == []


def test_a_read_only_heatmap_folder_is_named_before_any_work(two_heads, images, tmp_path, monkeypatch):
    """--heatmap OUT_DIR is written after every prediction: a read-only one must be named at
    once, not as a traceback once the predictions are done."""
    folder = tmp_path / "heatmaps"
    folder.mkdir()
    _read_only(monkeypatch, folder)
    _no_model_loading(monkeypatch)
    with pytest.raises(SystemExit) as refused:
        cli(["predict", "--model", str(two_heads[0]), str(images[0]), "--heatmap", str(folder)])
    assert str(refused.value.code) == (
        f"predict: --heatmap {folder}: the folder {folder} is read-only (no permission to "
        "create files in it); name a writable one."
    )


@pytest.mark.parametrize("flag", ["--output", "--heatmap"])
def test_an_output_under_a_file_is_named_before_any_work(
    two_heads, images, tmp_path, monkeypatch, flag
):
    """A path whose folder is in fact a file cannot be created, whoever runs it (root too): it
    is named at once instead of a NotADirectoryError traceback."""
    afile = tmp_path / "notes.txt"
    afile.write_text("not a folder")
    _no_model_loading(monkeypatch)
    target = afile / "out" / ("predictions.csv" if flag == "--output" else "maps")
    with pytest.raises(SystemExit) as refused:
        cli(["predict", "--model", str(two_heads[0]), str(images[0]), flag, str(target)])
    assert str(refused.value.code) == f"predict: {flag} {target}: {afile} is a file, not a folder."
    assert afile.read_text() == "not a folder"


def test_a_folder_without_write_permission_is_refused_for_real(two_heads, images, tmp_path):
    """The same with a real chmod 0o555, where the OS enforces it (not for root)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes (simulated above)")
        with pytest.raises(SystemExit, match=rf"the folder {folder} is read-only"):
            _predict(two_heads[0], images, folder / "predictions.csv")
    finally:
        folder.chmod(0o755)


def test_a_resume_with_other_precision_is_refused_and_says_which(two_heads, images, tmp_path):
    """A file started on the default fast path (bf16 where native) was resumed with --no_fast
    (fp32), so one file mixed two precisions under one model's name. The record now holds how
    the model ran; another setting is refused before any change, naming it."""
    from hf_cxr_mae.serving.inference import native_bf16

    output = tmp_path / "predictions.csv"
    _predict(two_heads[0], images[:2], output, "--num_workers", "0")
    before = output.read_bytes()
    with pytest.raises(SystemExit) as refused:
        _predict(two_heads[0], images, output, "--num_workers", "0", "--no_fast")
    fast = f"fast path, {'bfloat16' if native_bf16('cpu') else 'float32'}"
    assert str(refused.value.code).startswith(
        f"predict: {output} holds predictions of this model run otherwise (run: {fast} then, "
        "float32 (--no_fast) now)"
    )
    assert output.read_bytes() == before
    _predict(two_heads[0], images, output, "--num_workers", "0")  # the same settings resume
    assert len(output.read_text().splitlines()) == 1 + len(images)


def test_a_byte_identical_copy_of_the_model_resumes(two_heads, images, tmp_path):
    """A copy of the model folder (same weights, same sha256) was refused as "another model":
    the record's identity is the weights' fingerprint and the run settings, the folder only
    informative. Other weights are still refused."""
    import shutil

    copy = shutil.copytree(two_heads[0], tmp_path / "copy")
    output = tmp_path / "predictions.csv"
    kwargs = {"fast": False, "num_workers": 0, "progress": False}
    assert predict_to_file(load_model(str(two_heads[0])), images[:2], output, **kwargs) == (2, 0, 0)
    assert predict_to_file(load_model(str(copy)), images, output, **kwargs) == (4, 0, 2)
    with pytest.raises(ValueError, match="holds predictions of another model"):
        predict_to_file(load_model(str(two_heads[1])), images, output, **kwargs)
