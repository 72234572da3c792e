"""One set of checkpoint-file checks for conversion and resume (``hf_cxr_mae.checkpoint_files``):
damage that torch / safetensors themselves refuse (padding, gaps, overlaps, bad CRCs, missing
storages, non-integer offsets) is refused by both callers in a sentence naming the file, never a
traceback or a silent pass."""

import json
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hf_cxr_mae.checkpoint_files import checkpoint_format
from hf_cxr_mae.training.trainer import checkpoint_problem

TENSORS = {"a": torch.arange(4, dtype=torch.float32), "b": torch.ones(2, 3)}


def raw_safetensors(path: Path, header: dict, data: bytes) -> None:
    """A safetensors file written by hand: 8-byte header length, JSON header, data."""
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


def resumable_folder(folder: Path) -> Path:
    """The files a Trainer checkpoint holds, small and honest."""
    folder.mkdir()
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    save_file(TENSORS, folder / "model.safetensors")
    torch.save({"state": {0: {"exp_avg": torch.zeros(8)}}}, folder / "optimizer.pt")
    torch.save({"last_epoch": 3}, folder / "scheduler.pt")
    torch.save({"cpu": torch.get_rng_state()}, folder / "rng_state.pth")
    return folder


def refused_by_both(path: Path, folder: Path, words: str) -> None:
    """``checkpoint_format`` raises a ValueError naming ``path``; ``checkpoint_problem`` of the
    folder holding it says ``words`` and the file's name."""
    with pytest.raises(ValueError) as info:
        checkpoint_format(path)
    assert str(path) in str(info.value) and words in str(info.value), info.value
    problem = checkpoint_problem(folder)
    assert problem is not None and path.name in problem and words in problem, problem


def padded(data: bytes) -> bytes:
    return data + bytes(16)


def gap_first(path: Path) -> None:
    raw_safetensors(
        path,
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}},
        bytes(16),
    )


def overlapping(path: Path) -> None:
    raw_safetensors(
        path,
        {
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
        },
        bytes(12),
    )


@pytest.mark.parametrize("damage", ["padded", "gap", "overlap"])
def test_safetensors_that_safetensors_refuses_is_refused_by_both(tmp_path, damage):
    folder = resumable_folder(tmp_path / "checkpoint-3")
    weights = folder / "model.safetensors"
    assert checkpoint_format(weights) == "safetensors" and checkpoint_problem(folder) is None
    if damage == "padded":
        weights.write_bytes(padded(weights.read_bytes()))
    else:
        (gap_first if damage == "gap" else overlapping)(weights)
    with pytest.raises(SafetensorError):  # the library's own verdict: not loadable
        load_file(weights)
    refused_by_both(weights, folder, "do not cover its data exactly")


def test_non_integer_offsets_are_a_sentence_not_a_type_error(tmp_path):
    folder = resumable_folder(tmp_path / "checkpoint-3")
    weights = folder / "model.safetensors"
    raw_safetensors(
        weights, {"a": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}}, bytes(8)
    )
    refused_by_both(weights, folder, "malformed header entry")


def rewrite_zip(path: Path, change) -> None:
    """Rewrites a torch.save archive member by member, passing each (name, bytes) through
    ``change``; the CRCs zipfile writes are those of the changed bytes."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(*change(name, data))


def test_torch_archive_with_a_bad_crc_is_refused_by_both(tmp_path):
    folder = resumable_folder(tmp_path / "checkpoint-3")
    optimizer = folder / "optimizer.pt"
    data = bytearray(optimizer.read_bytes())
    with zipfile.ZipFile(optimizer) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
        # The member's bytes follow its local header: 30 bytes, then name and extra field.
        name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
        start = info.header_offset + 30 + name_len + extra_len
        assert archive.read(info) == data[start : start + info.file_size]
    data[start] ^= 0x40  # one bit of the first tensor's data
    optimizer.write_bytes(bytes(data))
    with zipfile.ZipFile(optimizer) as archive, pytest.raises(zipfile.BadZipFile, match="CRC"):
        archive.read(info.filename)
    refused_by_both(optimizer, folder, "fails its CRC check")


def test_torch_archive_missing_a_storage_is_refused_by_both(tmp_path):
    folder = resumable_folder(tmp_path / "checkpoint-3")
    rng = folder / "rng_state.pth"
    rewrite_zip(rng, lambda name, data: (name.replace("/data/0", "/data/7"), data))
    with zipfile.ZipFile(rng) as archive:
        assert archive.testzip() is None  # every CRC is right: only the storage is gone
    with pytest.raises(RuntimeError):  # torch's own verdict
        torch.load(rng, weights_only=True)
    refused_by_both(rng, folder, "storage '0'")
