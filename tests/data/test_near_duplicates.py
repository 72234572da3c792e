"""Re-encoded copies across splits: the same X-ray as a PNG in train and as a JPEG (or a resized
copy) in test has other bytes, so the byte-digest leak check misses it; the perceptual hash the
pixel cache keeps finds it, names both files, and gives no false positive on 500 real, distinct
chest X-rays."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from hf_cxr_mae.cli import main
from hf_cxr_mae.data import load_cxr_dataset, read_xray
from hf_cxr_mae.training.arguments import DataArguments


def copy_layout(nih_dir: Path, root: Path, copy: str) -> tuple[str, str]:
    """A CSV source of five real NIH images (links to the shared files) over train / validation
    / test, and ``copy``: the first training image re-encoded, listed in test under another
    patient. Returns (original, copy) as the dataset names them."""
    (root / "img").mkdir(parents=True)
    sources = sorted((nih_dir / "images").glob("*.png"))[:5]
    for source in sources:
        (root / "img" / source.name).symlink_to(source)
    original = read_xray(sources[0])
    if copy.endswith(".jpg"):
        original.save(root / "img" / copy, quality=75)
    else:  # half the size, as a downsampled export
        half = (original.width // 2, original.height // 2)
        original.resize(half, Image.Resampling.LANCZOS).save(root / "img" / copy)
    splits = ["train", "train", "validation", "test", "test"]
    rows = [
        (f"img/{s.name}", "1", f"p{i}", split)
        for i, (s, split) in enumerate(zip(sources, splits, strict=True))
    ]
    rows.append((f"img/{copy}", "0", "someone-else", "test"))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "A", "pid", "split"), *rows])
    return f"img/{sources[0].name}", f"img/{copy}"


def distance(a: Path, b: Path) -> int:
    from hf_cxr_mae.data.near_duplicates import perceptual_hash

    bits = [np.unpackbits(np.frombuffer(perceptual_hash(read_xray(p)), np.uint8)) for p in (a, b)]
    return int((bits[0] != bits[1]).sum())


@pytest.mark.parametrize("copy", ["copy.jpg", "copy_half.png"])
def test_a_png_in_train_and_its_re_encoding_in_test_are_reported(nih_dir, tmp_path, copy):
    """`hf-cxr-mae cache` (and so the recipes, which build the same cache) refuses the copy in
    one line naming both files and their splits; before, the splits were cached as they were."""
    root = tmp_path / "src"
    original, copied = copy_layout(nih_dir, root, copy)
    gap = distance(root / original, root / copied)
    argv = ["cache", "csv", "--data_dir", str(root), "--image_size", "32",
            "--cache_dir", str(tmp_path / "cache"), "--patient_column", "pid",
            "--split_column", "split"]  # fmt: skip
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert str(err.value.code).splitlines() == [
        "cache: 1 bad images shared between splits as re-encoded copies:",
        f"  {original} (split 'train'): looks like {copied} (split 'test'): perceptual hashes "
        f"{gap} of 576 bits apart (at most 64 is the same X-ray), a re-encoded or resized copy?",
        "Fix them, or pass on_bad='skip' to leave them out.",
    ]
    assert gap <= 20  # the copies measured in benchmarks/near_duplicates.py


def test_the_recipes_refuse_the_copy_or_skip_it_from_train(nih_dir, tmp_path):
    """The recipes' cache_splits: an error naming both files; with --on_bad skip the training
    copy goes and the test set stays whole."""
    from hf_cxr_mae.data.validation import DataValidationError
    from hf_cxr_mae.training.data_setup import cache_splits

    root = tmp_path / "src"
    original, copied = copy_layout(nih_dir, root, "copy.jpg")
    settings = SimpleNamespace(image_size=32, crop_pct=1.0)
    training_args = SimpleNamespace(main_process_first=lambda desc: contextlib.nullcontext())
    options = {"patient_column": "pid", "split_column": "split"}
    data = load_cxr_dataset("csv", root, **options)
    args = {"dataset": ["csv"], "data_dir": [str(root)], "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(DataValidationError, match=f"{original} .*looks like {copied}"):
        cache_splits(data, DataArguments(**args), training_args, settings)
    cached = cache_splits(data, DataArguments(**args, on_bad="skip"), training_args, settings)
    assert original not in cached["train"]["image_id"]
    assert len(cached["train"]) == 1 and cached["test"]["image_id"] == data["test"]["image_id"]


def test_500_distinct_real_images_give_no_false_positive(nih_dir):
    """The sample's 500 patients, one image each: no two within the threshold, split in halves
    or pairwise; the closest distinct pair is 178 of 576 bits apart (copies: at most 20)."""
    from datasets import Dataset

    from hf_cxr_mae.data.near_duplicates import (
        HASH_THRESHOLD,
        check_near_duplicates,
        perceptual_hash,
    )

    files = sorted((nih_dir / "images").glob("*.png"))
    assert len(files) == 500
    hashes = [perceptual_hash(read_xray(p)) for p in files]
    halves = {
        "train": Dataset.from_dict({"image_id": [p.name for p in files[:250]], "perceptual_hash": hashes[:250]}),
        "test": Dataset.from_dict({"image_id": [p.name for p in files[250:]], "perceptual_hash": hashes[250:]}),
    }  # fmt: skip
    kept = check_near_duplicates(halves)
    assert [len(kept["train"]), len(kept["test"])] == [250, 250]
    bits = np.unpackbits(np.frombuffer(b"".join(hashes), np.uint8).reshape(500, -1), axis=1)
    signs = bits.astype(np.int64) * 2 - 1
    pairwise = (576 - signs @ signs.T) // 2
    closest = pairwise[np.triu_indices(500, 1)].min()
    assert closest == 178 and closest > HASH_THRESHOLD


def test_nearest_hashes_are_exact_hamming_distances():
    """The float32 matrix product gives the exact Hamming distance and the nearest row."""
    from hf_cxr_mae.data.near_duplicates import nearest_hashes

    rng = np.random.default_rng(0)
    references = [rng.bytes(72) for _ in range(700)]
    queries = [rng.bytes(72) for _ in range(600)] + [references[123]]
    index, distance_ = nearest_hashes(queries, references)
    ref_bits = np.unpackbits(np.frombuffer(b"".join(references), np.uint8).reshape(700, -1), axis=1)
    for i, query in enumerate(queries):
        bits = np.unpackbits(np.frombuffer(query, np.uint8))
        by_hand = (ref_bits != bits).sum(axis=1)
        assert distance_[i] == by_hand.min() and by_hand[index[i]] == by_hand.min()
    assert (index[-1], distance_[-1]) == (123, 0)


def test_a_copy_exactly_threshold_bits_apart_is_refused(nih_dir, tmp_path):
    """``threshold`` is inclusive: a JPEG copy whose hash is d bits from its original is refused
    at threshold d and kept at d - 1 (the limit itself, on both sides)."""
    from datasets import Dataset

    from hf_cxr_mae.data.near_duplicates import check_near_duplicates, perceptual_hash
    from hf_cxr_mae.data.validation import DataValidationError

    source = sorted((nih_dir / "images").glob("*.png"))[0]
    read_xray(source).save(tmp_path / "copy.jpg", quality=20)
    d = distance(source, tmp_path / "copy.jpg")
    assert d == 8  # a real re-encoding, not the same hash (quality 75 keeps this one's hash)

    def split(name: str, path: Path) -> Dataset:
        hashes = [perceptual_hash(read_xray(path))]
        return Dataset.from_dict({"image_id": [name], "perceptual_hash": hashes})

    splits = {"train": split("a.png", source), "test": split("copy.jpg", tmp_path / "copy.jpg")}
    with pytest.raises(DataValidationError, match=f"hashes {d} of 576 bits apart \\(at most {d} "):
        check_near_duplicates(splits, threshold=d)
    kept = check_near_duplicates(splits, threshold=d - 1)
    assert [kept["train"]["image_id"], kept["test"]["image_id"]] == [["a.png"], ["copy.jpg"]]
