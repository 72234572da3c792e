"""The preprocessed pixel cache: decode every image once, keep compact one-channel pixels in Arrow.

Full-size PNG decoding is the bottleneck of CXR training (about 70 images/s per core for
1024x1024 files). The cache decodes each image once, shrinks it so its shortest side is
``size``, and stores the raw uint8 pixels (``pixels``, ``height``, ``width``) and the image's
perceptual hash (``perceptual_hash``: re-encoded copies across splits, see ``near_duplicates``)
with every other column. All transforms read it directly (see ``transforms.example_image``). It is written with ``save_to_disk`` under a key
made of the content (paths, file sizes and times, labels) and the settings, so a later run with the
same data reuses it, and a crash mid-build never leaves a half cache behind (written to a temporary
``.building-<host>-<pid>-*`` folder, then renamed; the next build removes the folders of builds
whose process died).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict, Features, Image, Value, load_from_disk

from .images import read_xray
from .near_duplicates import HASH_COLUMN, perceptual_hash
from .transforms import resize_shortest, to_uint8_tensor

logger = logging.getLogger(__name__)

# 2: EXIF orientation applied (read_xray), and each image's perceptual hash kept.
CACHE_VERSION = "2"
# For library callers that give no size; the recipes size the cache from their crops
# (``cache_size_for``).
DEFAULT_CACHE_SIZE = 320
# Images whose headers are read to estimate the cache's disk cost before building it.
_ESTIMATE_SAMPLE = 32


def cache_size_for(image_size: int, min_crop_scale: float, eval_resize: int = 0) -> int:
    """The shortest side a cache needs so that no crop the recipe takes is upsampled from it.

    A RandomResizedCrop of area fraction ``s`` (aspect 1) spans ``sqrt(s)`` of the shortest side,
    resized to ``image_size``: the cache must keep ``image_size / sqrt(s)`` pixels there. The
    evaluation resize (``eval_resize``) needs its own size. Images smaller than this are kept at
    their own size (the cache never enlarges).
    """
    if not 0 < min_crop_scale <= 1:
        raise ValueError(f"min_crop_scale must be in (0, 1], got {min_crop_scale}.")
    return max(math.ceil(image_size / math.sqrt(min_crop_scale)), int(eval_resize))


def split_cache_sizes(
    splits: Iterable[str],
    image_size: int,
    min_crop_scale: float,
    eval_resize: int,
    size: int | None = None,
) -> dict[str, int]:
    """The shortest side to cache for each split: the training split what its smallest random
    crop needs (``cache_size_for``), the others the evaluation resize (so evaluating from the
    cache is identical to reading the files). A fixed ``size`` overrides both, with a warning
    when it loses detail."""
    needed = {
        split: cache_size_for(image_size, min_crop_scale, eval_resize)
        if split == "train"
        else int(eval_resize)
        for split in splits
    }
    if size:
        check_cache_size(size, max(needed.values()))
        return dict.fromkeys(needed, size)
    return needed


def check_cache_size(size: int, needed: int) -> bool:
    """Warn (and return False) when a cache of shortest side ``size`` loses detail the recipe's
    crops would use (``needed``, from ``cache_size_for``)."""
    if size >= needed:
        return True
    logger.warning(
        "Pixel cache shortest side %d is below the %d px the recipe's smallest crops need: those "
        "crops are upsampled from the cache and lose fine detail. Cache at least %d px (or leave "
        "the size unset to size the cache from the crops), or read the files (--pixel_cache false).",
        size,
        needed,
        needed,
    )
    return False


def _cached_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The (height, width) ``resize_shortest`` gives (never enlarging)."""
    short = min(height, width)
    if short <= size:
        return height, width
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def estimate_cache_bytes(data: Dataset, size: int, sample: int = _ESTIMATE_SAMPLE) -> int:
    """Bytes of pixels a cache of ``data`` at shortest side ``size`` holds, estimated from the
    headers of up to ``sample`` images spread over the dataset (no image is decoded)."""
    n = len(data)
    if n == 0:
        return 0
    picks = np.unique(np.linspace(0, n - 1, min(n, sample)).round().astype(int))
    raw = data.cast_column("image", Image(decode=False)).select(picks.tolist())
    total = 0
    for item in raw["image"]:
        source = item["path"] if item["bytes"] is None else io.BytesIO(item["bytes"])
        width, height = _image_dimensions(source)
        h, w = _cached_shape(height, width, size)
        total += h * w
    return int(total / len(picks) * n)


def _in_words(n: int) -> str:
    """Bytes as a short human figure: 1.2 GB, 40.1 MB, 3.0 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"


def _image_dimensions(source) -> tuple[int, int]:
    """(width, height) from the header (PNG / JPEG via Pillow, DICOM via pydicom)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(source) as image:
            return image.size
    except Exception:  # DICOM and other formats Pillow cannot open: decode once
        if hasattr(source, "seek"):
            source.seek(0)
        image = read_xray(source)
        return image.size


def default_cache_dir() -> Path:
    """``$HF_HOME/hf_cxr_mae/cache`` (never beside the data: data folders are often read-only)."""
    from huggingface_hub.constants import HF_HOME

    return Path(HF_HOME) / "hf_cxr_mae" / "pixel_cache"


_BUILDING = ".building-"
# Build folders of older versions carry no owner; one untouched this long is abandoned.
_UNOWNED_STALE_SECONDS = 24 * 3600


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_builds(root: Path) -> list[Path]:
    """Delete the build folders of builds that died (``kill -9``, out of memory); return them.

    A build folder is named ``.building-<host>-<pid>-<random>``: it is stale when that process no
    longer runs on this host. Builds by live processes (other DDP ranks, other jobs) and builds
    on other hosts (a shared file system) are left alone.
    """
    host = socket.gethostname()
    removed = []
    for folder in root.glob(f"{_BUILDING}*"):
        owner = folder.name[len(_BUILDING) :].rsplit("-", 2)
        if len(owner) == 3 and owner[1].isdigit():
            stale = owner[0] == host and not _process_alive(int(owner[1]))
        else:
            stale = time.time() - folder.stat().st_mtime > _UNOWNED_STALE_SECONDS
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            logger.warning("Removed %s, left by a pixel-cache build that was killed.", folder)
    return removed


def _cache_key(dataset: Dataset, size: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}|size={size}|".encode())
    raw = dataset.cast_column("image", Image(decode=False))
    for item in raw["image"]:
        if item["path"] is not None and os.path.exists(item["path"]):
            stat = os.stat(item["path"])
            digest.update(f"{item['path']}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        else:
            digest.update(hashlib.sha256(item["bytes"] or b"").digest())
    others = raw.remove_columns("image").data.table
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, others.schema) as writer:
        writer.write_table(others)
    digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()[:24]


def _decode_batch(batch: dict[str, list], size: int) -> dict[str, list]:
    pixels, heights, widths, hashes = [], [], [], []
    for item in batch["image"]:
        source = item["path"] if item["bytes"] is None else io.BytesIO(item["bytes"])
        try:
            decoded = read_xray(source)
            hashes.append(perceptual_hash(decoded))  # here, where the pixels are decoded anyway
            image = to_uint8_tensor(decoded)
        except Exception as err:
            raise ValueError(
                f"Cannot decode {item['path'] or 'an embedded image'} while building the cache: {err}"
            ) from err
        image = resize_shortest(image, size)[0].numpy()
        pixels.append(np.ascontiguousarray(image).tobytes())
        heights.append(image.shape[0])
        widths.append(image.shape[1])
    return {HASH_COLUMN: hashes, "pixels": pixels, "height": heights, "width": widths}


def non_empty_splits(data: DatasetDict | dict[str, Dataset], source: str) -> dict[str, Dataset]:
    """The splits that hold images; each empty one is skipped with a warning (as the recipes
    skip an empty validation or test split): a cache of no image is no cache."""
    for split in [k for k, v in data.items() if len(v) == 0]:
        logger.warning("The %s split is empty (0 images) in %s: not cached.", split, source)
    return {k: v for k, v in data.items() if len(v) > 0}


def _complete(folder: Path) -> bool:
    """Whether ``folder`` is a whole saved dataset: its state lists data files and every one is
    there (an empty split saved by older versions left a folder with none)."""
    try:
        files = json.loads((folder / "state.json").read_text())["_data_files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(files) and all((folder / f["filename"]).is_file() for f in files)


def build_cache(
    data: Dataset | DatasetDict,
    size: int = DEFAULT_CACHE_SIZE,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
) -> Dataset | DatasetDict:
    """Decode and shrink every image once; return the cached dataset(s) (reused when present)."""
    if isinstance(data, DatasetDict):
        return DatasetDict({k: build_cache(v, size, cache_dir, num_proc) for k, v in data.items()})
    if "image" not in data.column_names:
        raise ValueError(f"Nothing to cache: no 'image' column (columns: {data.column_names}).")
    if len(data) == 0:
        # Nothing to decode; saved, it would be a folder without data that no reuse could load.
        return data
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"{_cache_key(data, size)}-{size}"
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(root)
    if (target / "dataset_info.json").is_file():
        if _complete(target):
            logger.info("Reusing pixel cache %s", target)
            return load_from_disk(str(target))
        logger.warning("Pixel cache %s is incomplete (data files missing): rebuilt.", target)
        shutil.rmtree(target, ignore_errors=True)
    logger.info(
        "Building the pixel cache of %d images at shortest side %d px in %s: about %s on disk "
        "(estimated from image headers).",
        len(data),
        size,
        root,
        _in_words(estimate_cache_bytes(data, size)),
    )
    work = Path(
        tempfile.mkdtemp(prefix=f"{_BUILDING}{socket.gethostname()}-{os.getpid()}-", dir=root)
    )
    try:
        features = Features({k: v for k, v in data.features.items() if k != "image"})
        features.update(
            {
                HASH_COLUMN: Value("binary"),
                "pixels": Value("binary"),
                "height": Value("int32"),
                "width": Value("int32"),
            }
        )
        cached = data.cast_column("image", Image(decode=False)).map(
            _decode_batch,
            fn_kwargs={"size": size},
            batched=True,
            batch_size=32,
            num_proc=num_proc,
            remove_columns=["image"],
            features=features,
            cache_file_name=str(work / "map.arrow"),
            desc=f"Caching pixels (shortest side {size})",
        )
        cached.save_to_disk(str(work / "final"))
        del cached
        os.replace(work / "final", target)  # atomic: a crash leaves no half cache at `target`
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("Wrote pixel cache %s", target)
    return load_from_disk(str(target))
