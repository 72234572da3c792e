"""The same X-ray in two splits under another encoding: a PNG in train, its JPEG or resized copy in
test. Byte digests (``duplicates.content_digests``) miss these; a perceptual hash does not.

The hash: the one-channel image (as ``read_xray`` gives it) shrunk to a 64 x 64 thumbnail (area
average), its 2-D DCT, and one bit per coefficient of the lowest 24 x 24 frequencies: above their
median or not (576 bits, 72 bytes). Two images are the same X-ray when their hashes differ in at most
``HASH_THRESHOLD`` (64) bits. On the 500 distinct patients of the NIH sample (measured by
``benchmarks/near_duplicates.py``), re-encodings are at most 20 bits from their original (JPEG
quality 75 or 50, 0.5x or 0.25x resize, both), distinct images at least 178 bits apart: no false
positive among the 124,750 pairs. A 64-bit hash is not enough for chest X-rays, which all look
alike at low frequencies: there distinct NIH images come within 6 bits (pHash) or 1 bit (dHash) of
each other, while re-encodings are up to 4 bits off.

Hashes are taken where the pixels are decoded anyway, when the pixel cache is built
(``cache.build_cache``, column ``perceptual_hash``); ``check_near_duplicates`` compares the
cached splits (every pair across splits, as one matrix product per block of rows). Cost, measured
on 2 shared CPU cores: 1.3 ms per 1024 x 1024 image on top of its 27 ms decode, and about 90 s to
compare the 3.1 billion cross-split pairs of NIH's 112,120 images. Crops, flips and rotations
of a copy change the hash and are not found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from datasets import Dataset
from PIL import Image

from .splits import held_out_first
from .validation import Problem, raise_or_skip

HASH_COLUMN = "perceptual_hash"
HASH_THRESHOLD = 64  # bits of HASH_BITS; see the module docstring for the measurement
_THUMBNAIL = 64
_FREQUENCIES = 24
HASH_BITS = _FREQUENCIES * _FREQUENCIES
_BLOCK = 512  # query rows per matrix product (512 x 100k float32 distances: 200 MB)


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: ``D @ x`` is the DCT of a column ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix(_THUMBNAIL)[:_FREQUENCIES]


def perceptual_hash(image: Image.Image) -> bytes:
    """The 576-bit (72-byte) DCT hash of a one-channel image (mode ``L``, as ``read_xray``
    returns it; other modes are converted by PIL first)."""
    grey = image if image.mode == "L" else image.convert("L")
    thumbnail = np.asarray(
        grey.resize((_THUMBNAIL, _THUMBNAIL), Image.Resampling.BOX), dtype=np.float64
    )
    coefficients = _DCT @ thumbnail @ _DCT.T
    return np.packbits(coefficients > np.median(coefficients)).tobytes()


def _signs(hashes: Sequence[bytes]) -> np.ndarray:
    """Hashes as rows of +1 / -1: the dot product of two rows is ``HASH_BITS - 2 * distance``
    (exact in float32), so all distances of a block come from one BLAS matrix product."""
    raw = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(len(hashes), -1)
    if raw.shape[1] * 8 != HASH_BITS:
        raise ValueError(f"perceptual hashes of {raw.shape[1] * 8} bits, {HASH_BITS} expected.")
    return np.unpackbits(raw, axis=1).astype(np.float32) * 2 - 1


def nearest_hashes(
    queries: Sequence[bytes], references: Sequence[bytes]
) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash, the index of the nearest reference hash and its Hamming distance."""
    if not references:
        raise ValueError("no reference hashes to compare with.")
    reference = _signs(references)
    index = np.empty(len(queries), dtype=np.int64)
    distance = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), _BLOCK):
        dots = _signs(queries[start : start + _BLOCK]) @ reference.T
        best = dots.argmax(axis=1)
        index[start : start + len(best)] = best
        top = dots[np.arange(len(best)), best]
        distance[start : start + len(best)] = np.rint((HASH_BITS - top) / 2).astype(np.int64)
    return index, distance


def check_near_duplicates(
    splits: Mapping[str, Dataset], on_bad: str = "raise", threshold: int = HASH_THRESHOLD
) -> dict[str, Dataset]:
    """Refuse an image of one split that is a re-encoded or resized copy of an image of another
    (perceptual hashes at most ``threshold`` bits apart), naming both files (``image_id``) and
    their splits; with ``on_bad="skip"`` the copy in the less held-out split is left out (the test
    set stays whole), as ``splits.check_split_overlap`` does for identical files.

    ``splits``: datasets with a ``perceptual_hash`` column (the pixel cache's) and, to name the
    files, ``image_id``.
    """
    names: list[str] = []
    hashes: list[bytes] = []
    owners: list[str] = []
    problems: list[Problem] = []
    leaking: dict[str, list[int]] = {}
    for split in held_out_first(splits):
        data = splits[split]
        if len(data) == 0:
            continue
        own_hashes = data[HASH_COLUMN]
        own_names = (
            data["image_id"]
            if "image_id" in data.column_names
            else [f"row {i}" for i in range(len(data))]
        )
        if hashes:
            index, distance = nearest_hashes(own_hashes, hashes)
            for row in np.flatnonzero(distance <= threshold).tolist():
                other = int(index[row])
                problems.append(
                    Problem(
                        f"{own_names[row]} (split {split!r})",
                        f"looks like {names[other]} (split {owners[other]!r}): perceptual "
                        f"hashes {distance[row]} of {HASH_BITS} bits apart (at most {threshold} "
                        "is the same X-ray), a re-encoded or resized copy?",
                    )
                )
                leaking.setdefault(split, []).append(row)
        names += own_names
        hashes += own_hashes
        owners += [split] * len(data)
    raise_or_skip(problems, on_bad, "images shared between splits as re-encoded copies")
    return {
        split: data.select(sorted(set(range(len(data))) - set(leaking[split])))
        if split in leaking
        else data
        for split, data in splits.items()
    }
