"""The preprocessed pixel cache (``hf_cxr_mae.data.cache``): cached and raw images give identical
evaluation output and training crops, the default cache keeps the resolution of the recipe's
crops (a smaller one warns), and a build removes only the builds of killed processes."""

from __future__ import annotations

import logging
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import NIH_SAMPLE, REPO_ROOT, _require
from datasets import Dataset, DatasetDict, Image, Value
from helpers import recipe_training_args
from PIL import Image as PILImage
from torchvision.transforms.v2 import functional as TF

from hf_cxr_mae import CXRMAEConfig
from hf_cxr_mae.data.cache import build_cache
from hf_cxr_mae.data.images import read_xray
from hf_cxr_mae.data.transforms import BICUBIC, create_transform, example_image, to_uint8_tensor
from hf_cxr_mae.training.arguments import (
    DataArguments,
    FinetuneArguments,
    ModelArguments,
    parse_recipe_args,
)
from hf_cxr_mae.training.data_setup import cache_splits


def test_cache_and_raw_give_identical_eval_output(twelve_nih_test_images, tmp_path):
    config = CXRMAEConfig.from_preset("vit-small-patch16-dec512d2b")
    cached = build_cache(twelve_nih_test_images, size=320, cache_dir=tmp_path)
    assert cached.column_names[-3:] == ["pixels", "height", "width"]
    assert min(cached[0]["height"], cached[0]["width"]) == 320
    assert cached["labels"] == twelve_nih_test_images["labels"] and cached["image_id"] == twelve_nih_test_images["image_id"]
    from_raw = create_transform(config, "eval", pre_resize=320)
    from_cache = create_transform(config, "eval")
    for i in range(len(twelve_nih_test_images)):
        a = from_raw(twelve_nih_test_images[i]["image"])
        b = from_cache(example_image(cached[i : i + 1], 0))
        assert a.shape == (1, 224, 224)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # Reused, not rebuilt: a second call returns the same files.
    again = build_cache(twelve_nih_test_images, size=320, cache_dir=tmp_path)
    assert again.cache_files[0]["filename"] == cached.cache_files[0]["filename"]
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def _draws(transform, get, n: int) -> torch.Tensor:
    """``n`` augmented crops of the 12 images in turn, every random source seeded with 0."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    return torch.stack([transform(get(i % 12)) for i in range(n)])


@pytest.mark.parametrize("mode", ["pretrain", "train"])
def test_cache_and_raw_give_identical_training_crops(twelve_nih_test_images, tmp_path, mode):
    # Raw files shrunk as the cache shrinks them draw exactly the crops the cache gives: any
    # cache-side change (intensities, orientation, framing, aspect) shows as a mismatch here.
    config = CXRMAEConfig.from_preset("vit-test-patch8-dec32d1b")
    cached = build_cache(twelve_nih_test_images, size=320, cache_dir=tmp_path)
    from_raw = _draws(
        create_transform(config, mode, pre_resize=320), lambda i: twelve_nih_test_images[i]["image"], 24
    )
    from_cache = _draws(
        create_transform(config, mode), lambda i: example_image(cached[i : i + 1], 0), 24
    )
    torch.testing.assert_close(from_raw, from_cache, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["pretrain", "train"])
def test_cache_and_raw_share_the_augmentation_distribution(twelve_nih_test_images, tmp_path, mode):
    # Training on full-resolution files (no pre_resize) or on the 320 px cache: same distribution.
    config = CXRMAEConfig.from_preset("vit-test-patch8-dec32d1b")
    cached = build_cache(twelve_nih_test_images, size=320, cache_dir=tmp_path)
    transform = create_transform(config, mode)
    stats = {}
    for name, get in [
        ("raw", lambda i: twelve_nih_test_images[i]["image"]),
        ("cache", lambda i: example_image(cached[i : i + 1], 0)),
    ]:
        outs = _draws(transform, get, 192)
        sharpness = (outs[..., 1:] - outs[..., :-1]).abs().mean().item()
        stats[name] = (outs.mean().item(), outs.std().item(), sharpness)
    gap = [abs(a - b) for a, b in zip(stats["raw"], stats["cache"], strict=True)]
    # What each gap measures (pretrain / train), the correct cache over seeds 0-4 against caches
    # broken on purpose in hf_cxr_mae/data/cache.py (this seed) or by measurement (seeds 0-4):
    # mean: correct <= 0.032 / 0.019; +10 grey levels 0.17 / 0.09, +5 levels 0.11 / 0.04.
    assert gap[0] < 0.05, gap
    # std (was 0.05): correct <= 0.008 / 0.013; contrast x0.9 0.089 / 0.060 (cache.py),
    # cache cropped to its centre 80% >= 0.056 / 0.019.
    assert gap[1] < 0.03, gap
    # Sharpness, mean |neighbour difference| (replaces quantiles of crop brightness at atol 0.15:
    # the correct cache reaches 0.17 there on other seeds, so they caught nothing subtler than
    # +10 grey levels): correct <= 0.002 / 0.004; cache stored at 64 px 0.0069 / 0.0128
    # (cache.py; passed every old check), contrast x0.9 0.015 / 0.013 (cache.py), crop scale
    # 0.08 <-> 0.5 >= 0.018 / 0.012, centre 80% >= 0.020 / 0.015. An upside-down or mirrored
    # cache keeps these statistics: the exact test above catches it.
    assert gap[2] < 0.006, gap


def test_cache_build_removes_builds_left_by_killed_processes_only(tmp_path):
    import socket
    import subprocess
    import sys

    import numpy as np
    from datasets import Dataset, Features, Image, Value

    from hf_cxr_mae.data.cache import build_cache

    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid is free
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        root = tmp_path / "cache"
        killed = root / f".building-{host}-{dead.pid}-abc123"
        running = root / f".building-{host}-{alive.pid}-def456"
        elsewhere = root / f".building-other-node-{dead.pid}-ghi789"  # another host: unknowable
        for folder in (killed, running, elsewhere):
            (folder / "final").mkdir(parents=True)
            (folder / "map.arrow").write_bytes(b"half written")
        images = [np.full((40, 48), i * 20, np.uint8) for i in range(3)]
        data = Dataset.from_dict(
            {"image": images, "image_id": ["a", "b", "c"]},
            features=Features({"image": Image(), "image_id": Value("string")}),
        )
        cached = build_cache(data, size=32, cache_dir=root)
        assert len(cached) == 3
        assert not killed.exists()
        assert running.is_dir() and elsewhere.is_dir()
        assert {p.name for p in root.glob(".building-*")} == {running.name, elsewhere.name}
    finally:
        alive.kill()
        alive.wait()


CONFIGS = REPO_ROOT / "recipes" / "configs"


FINE_TUNING_SCALES = (0.08, 0.15, 0.3, 0.5, 0.75, 1.0)


ASPECTS = (3 / 4, 1.0, 4 / 3)  # RandomResizedCrop's ratio range, both ends and the middle


@pytest.fixture(scope="module")
def full_res_subset():
    folder = _require(NIH_SAMPLE / "full-res")
    files = sorted(folder.glob("*.png"))[::8]  # 8 of the 64 full-resolution files
    assert len(files) == 8
    return files


def _default_finetune_cache(files, tmp_path):
    """The cache the fine-tuning recipe builds by default for these files, and its settings."""
    _, data_args, training_args = parse_recipe_args(
        (ModelArguments, DataArguments, FinetuneArguments),
        [
            str(CONFIGS / "finetune_nih14_vit_small.yaml"),
            "--output_dir",
            str(tmp_path / "out"),
            "--cache_dir",
            str(tmp_path / "cache"),
            "--use_cpu",
            "true",
            "--bf16",
            "false",
            "--report_to",
            "none",
        ],
    )
    settings = SimpleNamespace(image_size=224, crop_pct=224 / 256)
    ds = Dataset.from_dict({"image": [str(f) for f in files]}).cast_column("image", Image())
    ds = ds.add_column("source", ["nih14"] * len(files), feature=Value("string"))
    crop_min = data_args.crop_min_scale or 0.08
    cached = cache_splits(DatasetDict(train=ds), data_args, training_args, settings, crop_min)
    return cached["train"], crop_min


def test_default_cache_crops_match_full_resolution_crops_of_the_same_box(full_res_subset, tmp_path):
    cached, crop_min = _default_finetune_cache(full_res_subset, tmp_path)
    assert crop_min == 0.08
    rng = np.random.default_rng(0)
    worst: dict[float, float] = {}
    detail: dict[float, list[float]] = {}
    for i, path in enumerate(full_res_subset):
        row = cached[i]
        small = to_uint8_tensor(example_image({k: [v] for k, v in row.items()}, 0))
        full = read_xray(path)
        h_c, w_c = small.shape[-2:]
        ratio = full.size[0] / w_c
        for scale in FINE_TUNING_SCALES:
            for aspect in ASPECTS:
                # A box RandomResizedCrop could draw on the cached image at this scale.
                area = scale * h_c * w_c
                w = min(w_c, round(math.sqrt(area * aspect)))
                h = min(h_c, round(math.sqrt(area / aspect)))
                top, left = int(rng.integers(0, h_c - h + 1)), int(rng.integers(0, w_c - w + 1))
                ours = TF.resized_crop(
                    small, top, left, h, w, [224, 224], interpolation=BICUBIC, antialias=True
                )[0].numpy()
                # The same box on the full-resolution file, through PIL (the official path).
                box = (left * ratio, top * ratio, (left + w) * ratio, (top + h) * ratio)
                reference = np.asarray(
                    full.resize((224, 224), PILImage.Resampling.BICUBIC, box=box)
                )
                diff = float(np.abs(ours.astype(float) - reference).mean())
                worst[scale] = max(worst.get(scale, 0.0), diff)
                detail.setdefault(scale, []).append(_retained_detail(ours, reference))
    assert all(d <= 2.0 for d in worst.values()), worst
    # Grey levels alone hide blur on smooth radiographs: most of the reference's fine detail
    # must be there too (a 320 px cache keeps about 0.2 of it at scale 0.08).
    mean_detail = {scale: float(np.mean(v)) for scale, v in detail.items()}
    assert all(d >= 0.8 for d in mean_detail.values()), mean_detail


def _high_pass(image: np.ndarray) -> np.ndarray:
    """The image minus its 3x3 box blur (edge-padded): its finest detail."""
    a = image.astype(float)
    padded = np.pad(a, 1, mode="edge")
    h, w = a.shape
    blur = sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0
    return a - blur


def _retained_detail(ours: np.ndarray, reference: np.ndarray) -> float:
    """The share of the reference's fine detail that ``ours`` reproduces (1: all of it)."""
    mine, theirs = _high_pass(ours), _high_pass(reference)
    return float((mine * theirs).sum() / (theirs * theirs).sum())


def test_cache_size_follows_the_crops_and_a_smaller_one_warns(full_res_subset, tmp_path, caplog):
    from hf_cxr_mae.data.cache import cache_size_for, estimate_cache_bytes

    assert cache_size_for(224, 0.08, 256) == math.ceil(224 / math.sqrt(0.08)) == 792
    assert cache_size_for(224, 0.5, 256) == 317
    assert cache_size_for(224, 1.0, 256) == 256  # the eval resize needs 256
    ds = Dataset.from_dict({"image": [str(f) for f in full_res_subset]}).cast_column(
        "image", Image()
    )
    # Headers only: 1024 x 1024 files shrink to 792 x 792 (capped at the original for 2000).
    assert estimate_cache_bytes(ds, 792) == len(full_res_subset) * 792 * 792
    assert estimate_cache_bytes(ds, 2000) == len(full_res_subset) * 1024 * 1024
    settings = SimpleNamespace(image_size=224, crop_pct=224 / 256)
    training_args = recipe_training_args(FinetuneArguments, tmp_path)
    splits = DatasetDict(train=ds.select(range(2)), validation=ds.select(range(2, 4)))
    data_args = DataArguments(cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="hf_cxr_mae"):
        cached = cache_splits(splits, data_args, training_args, settings, 0.08)
    # The disk cost is printed before building: 2 images of 792^2 and 2 of 256^2 bytes.
    assert f"about {2 * 792 * 792 / 1e6:.1f} MB on disk" in caplog.text
    assert f"about {2 * 256 * 256 / 1e3:.1f} kB on disk" in caplog.text
    assert "below" not in caplog.text
    assert {cached["train"][0]["height"], cached["validation"][0]["height"]} == {792, 256}
    assert cached["train"][0]["height"] == 792
    # Evaluation through the cache is the evaluation of the file itself, pixel for pixel.
    config = CXRMAEConfig.from_preset("vit-small-patch16-dec512d2b")
    evaluate = create_transform(config, "eval")
    for i in range(2):
        row = {k: [v] for k, v in cached["validation"][i].items()}
        from_cache = evaluate(example_image(row, 0))
        from_file = evaluate(read_xray(full_res_subset[2 + i]))
        assert torch.equal(from_cache, from_file)
    caplog.clear()
    small = DataArguments(cache_size=320, cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="hf_cxr_mae"):
        cached = cache_splits(
            DatasetDict(train=ds.select(range(2))), small, training_args, settings, 0.08
        )
    assert cached["train"][0]["height"] == 320
    assert "below the 792 px" in caplog.text


def test_cache_of_an_empty_split_writes_no_folder(twelve_nih_test_images, tmp_path):
    """An empty split (an empty test_list.txt) failed inside ``datasets.load_from_disk`` with an
    IndexError and left a cache folder without data. It is returned as it is, nothing written."""
    root = tmp_path / "cache"
    empty = twelve_nih_test_images.select([])
    cached = build_cache(empty, size=32, cache_dir=root)
    assert len(cached) == 0
    assert not root.exists() or list(root.iterdir()) == []


def test_an_incomplete_cache_folder_is_rebuilt_not_loaded(twelve_nih_test_images, tmp_path, caplog):
    """A cache folder whose data files are missing (what older versions left for an empty split)
    made every later reuse fail inside ``datasets.load_from_disk``: it is rebuilt, with a
    warning naming it."""
    import json

    root = tmp_path / "cache"
    four = twelve_nih_test_images.select(range(4))
    first = build_cache(four, size=32, cache_dir=root)
    pixels = first["pixels"]
    (folder,) = list(root.iterdir())
    # The folder an empty split's save left: dataset_info.json and a state listing no data file.
    for arrow in folder.glob("*.arrow"):
        arrow.unlink()
    state = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps({**state, "_data_files": []}))
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        again = build_cache(four, size=32, cache_dir=root)
    assert again["pixels"] == pixels
    # Warnings only: tmp_path's own name holds "incomplete", so filtering by words would not do.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"Pixel cache {folder} is incomplete (data files missing): rebuilt."
    ]
    assert [p.name for p in root.iterdir()] == [folder.name]
