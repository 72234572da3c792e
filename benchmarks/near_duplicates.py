"""The perceptual hash of the re-encoded-copy check: its distances and its cost (printed tables).

    python benchmarks/near_duplicates.py [--nih_dir ../shared/data/nih-cxr14-sample] [--full]

1. Distances on the 500 distinct patients of the NIH sample (``images/``): each image against its
   re-encodings (JPEG quality 75 and 50, 0.5x and 0.25x resize, 0.5x resize saved as JPEG 75),
   and every pair of distinct images; the false positives at the threshold (distinct pairs at
   most ``HASH_THRESHOLD`` bits apart). The same for a 64-bit DCT pHash and a 64-bit dHash, which
   chest X-rays defeat (distinct images as close as re-encodings).
2. Cost per image on the 1024 x 1024 release PNGs (``full-res/``): decoding (paid by the cache
   build anyway) and hashing, extrapolated to NIH ChestX-ray14's 112,120 images; and the
   comparison of every pair across the paper split's train / validation / test (75,312 / 11,212
   / 25,596), timed on a share of the query rows and extrapolated (``--full``: all of them).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from hf_cxr_mae.data.images import read_xray
from hf_cxr_mae.data.near_duplicates import (
    HASH_BITS,
    HASH_THRESHOLD,
    nearest_hashes,
    perceptual_hash,
)

NIH_IMAGES = 112_120
PAPER_SPLIT = {"train": 75_312, "validation": 11_212, "test": 25_596}


def reencode(image: Image.Image, how: str) -> Image.Image:
    """``image`` written in another form and read back as ``read_xray`` reads files."""
    buffer = io.BytesIO()
    half = (image.width // 2, image.height // 2)
    if how == "jpeg q75":
        image.save(buffer, "JPEG", quality=75)
    elif how == "jpeg q50":
        image.save(buffer, "JPEG", quality=50)
    elif how == "0.5x png":
        image.resize(half, Image.Resampling.LANCZOS).save(buffer, "PNG")
    elif how == "0.25x png":
        quarter = (image.width // 4, image.height // 4)
        image.resize(quarter, Image.Resampling.BILINEAR).save(buffer, "PNG")
    else:  # 0.5x jpeg q75
        image.resize(half, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=75)
    buffer.seek(0)
    return read_xray(buffer)


KINDS = ("jpeg q75", "0.5x png", "jpeg q50", "0.25x png", "0.5x jpeg q75")


def _dct(n: int) -> np.ndarray:
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT32 = _dct(32)


def phash64(image: Image.Image) -> np.ndarray:
    """The common 64-bit pHash: 8 x 8 lowest DCT frequencies of a 32 x 32 thumbnail."""
    a = np.asarray(image.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    c = (_DCT32 @ a @ _DCT32.T)[:8, :8]
    return (c > np.median(c)).ravel()


def dhash64(image: Image.Image) -> np.ndarray:
    """The common 64-bit difference hash: neighbours compared on a 9 x 8 thumbnail."""
    a = np.asarray(image.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    return (a[:, 1:] > a[:, :-1]).ravel()


def ours(image: Image.Image) -> np.ndarray:
    return np.unpackbits(np.frombuffer(perceptual_hash(image), dtype=np.uint8)).astype(bool)


def distances(hashes: np.ndarray) -> np.ndarray:
    """Hamming distances of every pair of distinct rows."""
    signs = hashes.astype(np.float32) * 2 - 1
    bits = hashes.shape[1]
    full = (bits - signs @ signs.T) / 2
    return np.rint(full[np.triu_indices(len(hashes), 1)]).astype(np.int64)


def distance_table(files: list[Path]) -> None:
    variants: dict[str, tuple[Callable, int | None]] = {
        f"ours: DCT 24x24 of 64x64 ({HASH_BITS} bits)": (ours, HASH_THRESHOLD),
        "pHash: DCT 8x8 of 32x32 (64 bits)": (phash64, None),
        "dHash: 9x8 (64 bits)": (dhash64, None),
    }
    originals = [read_xray(f) for f in files]
    copies = [[reencode(image, how) for how in KINDS] for image in originals]
    pairs = len(files) * (len(files) - 1) // 2
    print(f"\n{len(files)} distinct images ({pairs:,} pairs); Hamming distances in bits")
    print("re-encoding: max over the images (99th percentile) per kind of copy")
    head = f"{'hash':<40} " + " ".join(f"{k:>13}" for k in KINDS)
    print(head + "\n" + "-" * len(head))
    found = {}
    for name, (fn, _) in variants.items():
        hashes = np.array([fn(image) for image in originals])
        per_kind = np.array(
            [[int((h != fn(c)).sum()) for c in row] for h, row in zip(hashes, copies, strict=True)]
        )
        found[name] = (hashes, per_kind)
        cells = [
            f"{m:>4} ({p:>5.1f})"
            for m, p in zip(per_kind.max(0), np.percentile(per_kind, 99, 0), strict=True)
        ]
        print(f"{name:<40} " + " ".join(f"{c:>13}" for c in cells))
    print("\ndistinct pairs: smallest distances and the false positives")
    head = (
        f"{'hash':<40} {'min':>5} {'0.01%':>6} {'0.1%':>6} {'1%':>6} {'median':>7} "
        f"{'threshold':>9} {'pairs <= threshold':>19} {'pairs <= copies max':>20}"
    )
    print(head + "\n" + "-" * len(head))
    for name, (_, threshold) in variants.items():
        hashes, per_kind = found[name]
        d = distances(hashes)
        q = np.percentile(d, [0.01, 0.1, 1, 50])
        worst_copy = int(per_kind.max())
        at = "-" if threshold is None else str(threshold)
        within = "-" if threshold is None else f"{int((d <= threshold).sum()):,}"
        print(
            f"{name:<40} {d.min():>5} {q[0]:>6.0f} {q[1]:>6.0f} {q[2]:>6.0f} {q[3]:>7.0f} "
            f"{at:>9} {within:>19} {int((d <= worst_copy).sum()):>20,}"
        )


def cost_table(full_res: list[Path], full: bool) -> None:
    decode, hashing = [], []
    for path in full_res:
        start = time.perf_counter()
        image = read_xray(path)
        middle = time.perf_counter()
        perceptual_hash(image)
        decode.append(middle - start)
        hashing.append(time.perf_counter() - middle)
    decode_ms, hash_ms = 1e3 * float(np.median(decode)), 1e3 * float(np.median(hashing))
    size = "x".join(map(str, read_xray(full_res[0]).size))
    print(f"\ncost per image, median of {len(full_res)} release PNGs ({size}), one process")
    head = f"{'step':<44} {'ms / image':>10} {'NIH 112,120 images':>19}"
    print(head + "\n" + "-" * len(head))
    for name, ms in (
        ("decode (read_xray; the cache build pays it)", decode_ms),
        ("hash (added to the cache build)", hash_ms),
        ("decode + hash (a check at load would pay)", decode_ms + hash_ms),
    ):
        print(f"{name:<44} {ms:>10.2f} {ms * NIH_IMAGES / 1e3 / 60:>15.1f} min")

    rng = np.random.default_rng(0)
    random_hash = lambda n: [rng.bytes(HASH_BITS // 8) for _ in range(n)]  # noqa: E731
    hashes = {split: random_hash(n) for split, n in PAPER_SPLIT.items()}
    # As check_near_duplicates runs: validation against test, train against both.
    work = [
        ("validation vs test", hashes["validation"], hashes["test"]),
        ("train vs validation + test", hashes["train"], hashes["validation"] + hashes["test"]),
    ]
    print(f"\ncomparing every pair across the paper split ({os.cpu_count()} CPUs, BLAS threads)")
    head = f"{'queries vs references':<28} {'pairs':>15} {'timed rows':>11} {'seconds':>9}"
    print(head + "\n" + "-" * len(head))
    total = 0.0
    for name, queries, references in work:
        timed = queries if full else queries[:4096]
        start = time.perf_counter()
        nearest_hashes(timed, references)
        seconds = (time.perf_counter() - start) * len(queries) / len(timed)
        total += seconds
        print(f"{name:<28} {len(queries) * len(references):>15,} {len(timed):>11,} {seconds:>9.1f}")
    print(f"{'all':<28} {'':>15} {'':>11} {total:>9.1f}")


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "nih-cxr14-sample"
    parser = argparse.ArgumentParser()
    parser.add_argument("--nih_dir", type=Path, default=default)
    parser.add_argument("--full", action="store_true", help="time the whole NIH-size comparison")
    args = parser.parse_args()
    files = sorted((args.nih_dir / "images").glob("*.png"))
    full_res = sorted((args.nih_dir / "full-res").glob("*.png"))
    if not files or not full_res:
        raise SystemExit(f"No PNGs in {args.nih_dir}/images or {args.nih_dir}/full-res")
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    distance_table(files)
    cost_table(full_res, args.full)


if __name__ == "__main__":
    main()
