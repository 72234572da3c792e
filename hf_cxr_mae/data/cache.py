"""The preprocessed pixel cache: decode every image once, keep compact one-channel pixels in Arrow.

Full-size PNG decoding is the bottleneck of CXR training (about 70 images/s per core for
1024x1024 files). The cache decodes each image once, shrinks it so its shortest side is
``size`` (default 320, so a scale-0.5 RandomResizedCrop to 224 does not upsample), and stores the
raw uint8 pixels (``pixels``, ``height``, ``width``) with every other column. All transforms read
it directly (see ``transforms.example_image``). It is written with ``save_to_disk`` under a key
made of the content (paths, file sizes and times, labels) and the settings, so a later run with the
same data reuses it, and a crash mid-build never leaves a half cache behind (written to a temporary
``.building-<host>-<pid>-*`` folder, then renamed; the next build removes the folders of builds
whose process died).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict, Features, Image, Value, load_from_disk

from .images import read_xray
from .transforms import resize_shortest, to_uint8_tensor

logger = logging.getLogger(__name__)

CACHE_VERSION = "1"
DEFAULT_CACHE_SIZE = 320


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
    pixels, heights, widths = [], [], []
    for item in batch["image"]:
        source = item["path"] if item["bytes"] is None else io.BytesIO(item["bytes"])
        try:
            image = to_uint8_tensor(read_xray(source))
        except Exception as err:
            raise ValueError(
                f"Cannot decode {item['path'] or 'an embedded image'} while building the cache: {err}"
            ) from err
        image = resize_shortest(image, size)[0].numpy()
        pixels.append(np.ascontiguousarray(image).tobytes())
        heights.append(image.shape[0])
        widths.append(image.shape[1])
    return {"pixels": pixels, "height": heights, "width": widths}


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
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"{_cache_key(data, size)}-{size}"
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(root)
    if (target / "dataset_info.json").is_file():
        logger.info("Reusing pixel cache %s", target)
        return load_from_disk(str(target))
    work = Path(
        tempfile.mkdtemp(prefix=f"{_BUILDING}{socket.gethostname()}-{os.getpid()}-", dir=root)
    )
    try:
        features = Features({k: v for k, v in data.features.items() if k != "image"})
        features.update(
            {"pixels": Value("binary"), "height": Value("int32"), "width": Value("int32")}
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
