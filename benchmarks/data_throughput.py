"""Data-pipeline throughput, images/s on one core (a printed table, not a test).

    python benchmarks/data_throughput.py [--data_dir ../shared/data/nih-cxr14-sample/full-res]

Rows: the reference-style pipeline (PIL -> RGB, torchvision RandomResizedCrop + ToTensor +
Normalize on full-size PNGs), ours from raw files, ours from the pixel cache, and the cache
build itself. Everything runs in this process with one thread.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from datasets import Image as HFImage
from PIL import Image
from torchvision import transforms as T

from hf_cxr_mae import CXRMAEConfig
from hf_cxr_mae.data.cache import build_cache, cache_size_for
from hf_cxr_mae.data.images import read_xray
from hf_cxr_mae.data.transforms import create_transform, example_image
from hf_cxr_mae.processing import eval_resize_size


def rate(fn, items, repeats: int) -> float:
    fn(items[0])  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        for item in items:
            fn(item)
    return repeats * len(items) / (time.perf_counter() - start)


def main() -> None:
    default = (
        Path(__file__).resolve().parents[2] / "shared" / "data" / "nih-cxr14-sample" / "full-res"
    )
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_dir", type=Path, default=default)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = sorted(args.data_dir.glob("*.png"))
    if not files:
        raise SystemExit(f"No PNGs in {args.data_dir}")
    config = CXRMAEConfig.from_preset("vit-small-patch16-dec512d2b")

    reference = T.Compose(
        [
            T.RandomResizedCrop(224, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([0.5056] * 3, [0.252] * 3),
        ]
    )

    def reference_step(path):
        with Image.open(path) as im:
            return reference(im.convert("RGB"))

    ours = create_transform(config, "pretrain")
    rows = [
        (
            "reference: PIL RGB + RandomResizedCrop + ToTensor + Normalize (raw PNG)",
            rate(reference_step, files, args.repeats),
        )
    ]
    rows.append(
        (
            "ours, pretrain transform from raw PNG (one channel)",
            rate(lambda p: ours(read_xray(p)), files, args.repeats),
        )
    )

    dataset = Dataset.from_dict({"image": [str(f) for f in files]}).cast_column("image", HFImage())
    # The sizes the recipes cache at: what the smallest crop of each mode needs, the eval resize.
    eval_size = eval_resize_size(config)
    sizes = {
        "pretrain": cache_size_for(224, 0.5, eval_size),
        "eval": eval_size,
        "train": cache_size_for(224, 0.08, eval_size),
    }
    with tempfile.TemporaryDirectory() as tmp:
        items, build_rates = {}, {}
        for mode, size in sizes.items():
            start = time.perf_counter()
            cached = build_cache(dataset, size=size, cache_dir=tmp, num_proc=None)
            build_rates[size] = len(files) / (time.perf_counter() - start)
            table = cached.with_format(None)[:]  # rows as Python objects, as a worker sees them
            items[mode] = [{k: [v[i]] for k, v in table.items()} for i in range(len(files))]
        for mode, label, repeats in (
            ("pretrain", "pretrain transform", 4),
            ("eval", "eval transform", 4),
            ("train", "fine-tune transform (RandAugment)", 2),
        ):
            transform = create_transform(config, mode)
            rows.append(
                (
                    f"ours, {label} from the pixel cache ({sizes[mode]} px)",
                    rate(
                        lambda b, t=transform: t(example_image(b, 0)),
                        items[mode],
                        args.repeats * repeats,
                    ),
                )
            )
    for size, build_rate in build_rates.items():
        rows.append(
            (f"cache build at {size} px (decode + shrink + write), one process", build_rate)
        )

    base = rows[0][1]
    print(
        f"\n{len(files)} full-size PNGs from {args.data_dir}, 1 thread, {platform.processor() or platform.machine()}, torch {torch.__version__}\n"
    )
    print(f"| {'pipeline':<76} | images/s/core | vs reference |")
    print(f"|{'-' * 78}|--------------:|-------------:|")
    for name, value in rows:
        print(f"| {name:<76} | {value:13.1f} | {value / base:11.1f}x |")


if __name__ == "__main__":
    main()
