"""MAE pre-training on one GPU: images/s, model FLOP utilisation and data waiting (printed tables).

    bash benchmarks/gpu.sh                          # one GPU, under 8 minutes (see gpu.sh)
    bash benchmarks/gpu.sh --device cpu --dry_run   # anywhere: tiny shapes, a few steps

Model rows (synthetic input, batch 256, 224 px, the paper's 90% masking, AdamW; ViT-S dec512d2b
and ViT-B dec512d8b): ours (``CXRMAEForPreTraining``, bf16 autocast, SDPA, fused AdamW) eager and
under ``torch.compile``, and the official-style model (stock ``transformers.ViTMAEForPreTraining``
with the same shapes, fp16 autocast with a ``GradScaler`` and plain AdamW, as the official MAE
code trains) for the ratio. Model FLOPs per image are counted once on the eager step (forward +
backward) with ``torch.utils.flop_counter.FlopCounterMode``; MFU = FLOPs/image x images/s / peak,
the peak being ``--peak_tflops`` or the bf16 dense tensor-core peak of the GPU found by name.

Data rows: the compiled (or, with ``--no_compile``, eager) bf16 row of each model then trains
from a ``DataLoader`` reading our pixel cache (``hf_cxr_mae.data.cache``, built from the NIH
sample in ``../shared/data`` or from synthetic images when it is absent) with the recipe's
pre-training transform, ``CXRCollator`` and pinned memory, with N workers: images/s, and the
fraction of the loop's time spent waiting for the next batch (blocked in ``next``) and copying it
to the GPU. The loop never synchronises per step, as the Trainer does not, so a GPU-bound loop
waits ~0% and a data-bound one shows its shortfall.

Every row runs in a fresh process (its own peak memory, no allocator or compile cache left from
the one before). Warm-up steps (and compilation) are excluded from timing; CUDA is synchronised
around each timed span. A time budget (``--budget_s``) skips rows that no longer fit and kills a
row that overruns, keeping what it reported so far; rows run most important first (ViT-B).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from train_step import PRESETS, build
from worker import report_result, run_in_subprocess

# bf16 dense tensor-core peaks (TFLOP/s) by a substring of the CUDA device name; first match wins.
PEAK_BF16_TFLOPS = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM: "NVIDIA H100 80GB HBM3"
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)
# The dry run: the same rows and code paths on shapes that take seconds on a CPU (where fp16
# matmuls are emulated and slow).
DRY_OVERRIDES = {
    "image_size": 64,
    "hidden_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "decoder_hidden_size": 32,
    "decoder_num_hidden_layers": 1,
    "decoder_num_attention_heads": 2,
    "decoder_intermediate_size": 64,
}
# Seconds a row needs at least (not started with less left) and may take at most, on a GPU.
ROW_MIN_S = {False: 30.0, True: 120.0}
ROW_CAP_S = {False: 120.0, True: 300.0}
MODEL_NAMES = {"vit-s": "ViT-S/16 dec512d2b", "vit-b": "ViT-B/16 dec512d8b"}
IMPL_NAMES = {
    "official": "official-style: stock transformers ViTMAEForPreTraining, GradScaler, AdamW",
    "ours": "hf-cxr-mae CXRMAEForPreTraining, fused AdamW",
}


def peak_tflops(device_name: str) -> float | None:
    """The bf16 dense peak of a GPU named ``device_name`` (None when not in the table)."""
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in device_name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_maker(model: torch.nn.Module, spec: dict, device: torch.device):
    """``make_step(forward)``: one optimisation step on a batch through ``forward`` (the model or
    its compiled version, sharing one optimizer), returning the detached loss (no host sync)."""
    params = [p for p in model.parameters() if p.requires_grad]
    hyper = {"lr": 1.5e-4, "betas": (0.9, 0.95), "weight_decay": 0.05}
    optimizer = (
        torch.optim.AdamW(params, fused=True, **hyper)  # as CXRTrainer builds it
        if spec["impl"] == "ours"
        else torch.optim.AdamW(params, **hyper)  # as the official code builds it
    )
    fp16 = spec["precision"] == "fp16"
    dtype = torch.float16 if fp16 else torch.bfloat16
    # fp16 needs loss scaling (the official NativeScaler); a disabled scaler is a no-op.
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)

    def make_step(forward):
        def step(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype):
                loss = forward(pixel_values=x).loss
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            return loss.detach()

        return step

    return make_step


def _loader_phase(step, config, spec: dict, device: torch.device, workers: int) -> dict:
    """Train from the pixel cache through a DataLoader with ``workers`` processes."""
    from datasets import load_from_disk
    from torch.utils.data import DataLoader, RandomSampler

    from hf_cxr_mae.data.transforms import (
        AugmentationSeeds,
        CXRCollator,
        batch_transform,
        create_transform,
        undecoded_images,
        with_row_ids,
    )

    batch = spec["batch"]
    # As run_pretrain builds its training split: seeded pre-training crops over the cached rows.
    train = with_row_ids(undecoded_images(load_from_disk(spec["cache"]))).with_transform(
        batch_transform(
            create_transform(config, "pretrain", crop_scale=(0.5, 1.0)), seeds=AugmentationSeeds(0)
        )
    )
    prefetch = 2
    # The batches the workers make before the first step is consumed are not timed.
    warm = spec["loader_warmup"] if spec["loader_warmup"] is not None else prefetch * workers + 5
    steps = spec["loader_steps"]
    loader = DataLoader(
        train,
        batch_size=batch,
        # With replacement: any number of steps from a small cache, no epoch boundaries.
        sampler=RandomSampler(train, replacement=True, num_samples=(warm + steps) * batch),
        collate_fn=CXRCollator(int(config.num_channels)),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        prefetch_factor=prefetch if workers else None,
    )
    batches = iter(loader)
    waiting = copying = 0.0
    start = time.perf_counter()
    for i in range(warm + steps):
        if i == warm:
            _sync(device)
            start, waiting, copying = time.perf_counter(), 0.0, 0.0
        t0 = time.perf_counter()
        pixels = next(batches)["pixel_values"]
        t1 = time.perf_counter()
        # Contiguous as the synthetic input was (a compiled graph would recompile otherwise).
        x = pixels.to(device, non_blocking=True).contiguous()
        copying += time.perf_counter() - t1
        waiting += t1 - t0
        loss = step(x)
    _sync(device)
    seconds = time.perf_counter() - start
    del batches, loader  # shuts the workers down before the next phase forks new ones
    return {
        "workers": workers,
        "images_per_s": batch * steps / seconds,
        "wait_fraction": (waiting + copying) / seconds,
        "next_s": waiting,
        "copy_s": copying,
        "seconds": seconds,
        "steps": steps,
        "loss": float(loss),
    }


def worker(spec: dict) -> None:
    """One row: synthetic-input timing, then the data-loader phases; reports after each."""
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    impl = "baseline" if spec["impl"] == "official" else "ours"  # train_step's names
    model = build("pretrain", spec["model"], impl, **spec["overrides"])
    config = model.config
    model = model.to(device).train()
    make_step = _step_maker(model, spec, device)
    step = make_step(model)
    x = torch.randn(spec["batch"], 3, config.image_size, config.image_size, device=device)
    from torch.utils.flop_counter import FlopCounterMode

    # Counted on the eager step (a compiled graph hides its ops from the counter); also warms up.
    with FlopCounterMode(display=False) as counter:
        step(x)
    flops = counter.get_total_flops()
    compile_s = 0.0
    if spec["compile"]:
        step = make_step(torch.compile(model, backend=spec["compile_backend"]))
        _sync(device)
        t0 = time.perf_counter()
        step(x)  # compiles forward and backward
        _sync(device)
        compile_s = time.perf_counter() - t0
    if device.type == "cuda":  # the peak of training, optimizer state included (allocated now)
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(spec["warmup"]):
        step(x)
    _sync(device)
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        loss = step(x)
    _sync(device)
    seconds = time.perf_counter() - start
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    result: dict[str, Any] = {
        "images_per_s": spec["batch"] * spec["steps"] / seconds,
        "gflop_per_image": flops / spec["batch"] / 1e9,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else float("nan"),
        "loss": float(loss),
        "compile_s": compile_s,
        "attention": getattr(config, "_attn_implementation", None),
        "device_name": name,
        "loader": [],
    }
    if spec["compile"]:
        from torch._dynamo.utils import counters

        result["graph_breaks"] = sum(counters["graph_break"].values())
    report_result(result)
    del x
    for workers in spec["loader_workers"]:
        try:
            result["loader"].append(_loader_phase(step, config, spec, device, workers))
        except Exception as err:  # e.g. no `datasets`, a small /dev/shm: say so, keep the row
            result["loader"].append({"workers": workers, "error": f"{type(err).__name__}: {err}"})
        report_result(result)


def prepare_cache(args: argparse.Namespace, config, cache_dir: Path) -> tuple[str | None, str]:
    """Build the pixel cache the data rows read: (its folder or None, what it holds or why not).
    A failure here (no ``datasets`` on the machine, say) costs the data rows, not the model rows."""
    try:
        return _build_cache(args, config, cache_dir)
    except Exception as err:
        traceback.print_exc()
        return None, f"nothing: no data rows, {type(err).__name__}: {err} (see gpu.sh on wheels)"


def _build_cache(args: argparse.Namespace, config, cache_dir: Path) -> tuple[str, str]:
    from datasets import Dataset
    from datasets import Image as HFImage

    from hf_cxr_mae.data.cache import build_cache, cache_size_for
    from hf_cxr_mae.data.demo import make_demo_dataset
    from hf_cxr_mae.processing import eval_resize_size

    files = [] if args.dry_run else sorted(Path(args.data_dir).glob("*.png"))
    if files:
        images = Dataset.from_dict({"image": [str(f) for f in files]}).cast_column(
            "image", HFImage()
        )
        source = f"{len(files)} NIH ChestX-ray14 PNGs from {args.data_dir}"
    else:
        count, size = (8, 96) if args.dry_run else (500, 512)
        images = make_demo_dataset(count, 0, 0, size=size)["train"].select_columns(["image"])
        why = "dry run" if args.dry_run else f"{args.data_dir} has no PNGs"
        source = f"{count} synthetic {size}x{size} images ({why})"
    # The size run_pretrain caches its training split at: what the smallest 0.5 crop needs.
    size = cache_size_for(config.image_size, 0.5, eval_resize_size(config))
    start = time.perf_counter()
    num_proc = min(8, os.cpu_count() or 1) if len(images) >= 64 else None
    cached = build_cache(images, size=size, cache_dir=cache_dir, num_proc=num_proc)
    folder = str(Path(cached.cache_files[0]["filename"]).parent)
    took = time.perf_counter() - start
    return folder, f"{source}, cached at shortest side {size} px in {took:.0f} s"


def plan_rows(args: argparse.Namespace) -> list[dict]:
    """The rows in the order they run: most important first, so a short budget cuts the rest."""
    models = sorted(args.models.split(","), key=lambda m: m != "vit-b")
    compile_ = not args.no_compile
    rows = []
    for model in models:
        rows.append({"model": model, "impl": "official", "precision": "fp16", "compile": False})
        rows.append({"model": model, "impl": "ours", "precision": "bf16", "compile": False})
        if compile_:
            rows.append({"model": model, "impl": "ours", "precision": "bf16", "compile": True})
        rows[-1]["feeds_loader"] = True  # the fastest of ours trains from the data loader
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default_data = (
        Path(__file__).resolve().parents[2] / "shared" / "data" / "nih-cxr14-sample" / "images"
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--dry_run", action="store_true", help="tiny shapes, a few steps")
    parser.add_argument("--models", default="vit-s,vit-b")
    parser.add_argument("--batch", type=int, default=None, help="default 256 (dry run 4)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 30)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5)")
    parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--compile_backend", default=None, help="default inductor (dry: eager)")
    parser.add_argument(
        "--loader_workers",
        default=None,
        help="comma-separated DataLoader worker counts (default: half and all but two cores)",
    )
    parser.add_argument("--loader_steps", type=int, default=None, help="timed (default 60)")
    parser.add_argument("--loader_warmup", type=int, default=None, help="default 2 x workers + 5")
    parser.add_argument("--data_dir", type=Path, default=default_data)
    parser.add_argument("--cache_dir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument(
        "--peak_tflops", type=float, default=None, help="bf16 dense peak (default: by GPU name)"
    )
    parser.add_argument("--budget_s", type=float, default=450.0, help="total time budget")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dry = args.dry_run
    cores = os.cpu_count() or 1
    defaults = {
        "batch": 4 if dry else 256,
        "steps": 2 if dry else 30,
        "warmup": 1 if dry else 5,
        "compile_backend": "eager" if dry else "inductor",
        "loader_workers": "1"
        if dry
        else ",".join(str(n) for n in sorted({max(1, cores // 2), max(1, cores - 2)})),
        "loader_steps": 2 if dry else 60,
        "loader_warmup": 1 if dry else None,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def print_tables(args, rows: list[dict], peak: float | None, device_name: str, data: str) -> None:
    """The model table, the data table and the goals, as Markdown."""
    version = f"torch {torch.__version__}" + (
        f", CUDA {torch.version.cuda}" if args.device == "cuda" else ""
    )
    peak_words = f"peak {peak:g} TFLOP/s bf16 dense" if peak else "peak unknown: pass --peak_tflops"
    shape = (
        "DRY RUN (tiny shapes): the numbers mean nothing" if args.dry_run else "224 px, mask 0.90"
    )
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    print(
        f"\nMAE pre-training step, {device_name} ({peak_words}), batch {args.batch}, {shape}; "
        f"{version}; {today}; {args.steps} timed steps after {args.warmup} warm-up\n"
    )
    print(
        "| model | implementation | precision | torch.compile | images/s | vs official fp16 "
        "| MFU | GFLOP/image | peak GiB |"
    )
    print("|---|---|---|---|--:|--:|--:|--:|--:|")
    base = {r["model"]: r["result"] for r in rows if r["impl"] == "official" and r["result"]}
    for row in rows:
        r = row["result"]
        attention = (r or {}).get("attention") or "sdpa" if row["impl"] == "official" else "SDPA"
        head = (
            f"| {row['model']} | {IMPL_NAMES[row['impl']]} ({attention}) | "
            f"{row['precision']} autocast | {'yes' if row['compile'] else 'no'} |"
        )
        if r is None:
            print(f"{head} {row.get('why', 'failed')} | | | | |")
            continue
        official = base.get(row["model"])
        ratio = r["images_per_s"] / official["images_per_s"] if official else None
        mfu = r["images_per_s"] * r["gflop_per_image"] / (peak * 1e3) if peak else None
        notes = []
        if row["compile"]:
            notes.append(f"compile {r['compile_s']:.0f} s, {r.get('graph_breaks', 0)} graph breaks")
        if r.get("timed_out"):
            notes.append("cut by the time budget")
        note = f" ({'; '.join(notes)})" if notes else ""
        print(
            f"{head} {_fmt(r['images_per_s'], '.1f')}{note} | {_fmt(ratio, '.2f')}x | "
            f"{_fmt(mfu, '.1%')} | {_fmt(r['gflop_per_image'], '.3g')} | "
            f"{_fmt(r['peak_gib'], '.1f')} |"
        )
    print(f"\nData loader: the pixel cache of {data}; pre-training transform, CXRCollator, ")
    print("pinned memory, fed to the row above marked as feeding it; waiting = blocked in next()")
    print("plus the host-to-GPU copy, as a share of the loop's time\n")
    print(
        "| model | step fed | loader workers | step alone images/s | fed images/s "
        "| waiting for data | of which copy |"
    )
    print("|---|---|--:|--:|--:|--:|--:|")
    for row in rows:
        r = row["result"]
        if not row.get("feeds_loader") or r is None:
            continue
        fed = f"bf16{' + compile' if row['compile'] else ''}"
        for phase in r.get("loader", []):
            head = f"| {row['model']} | {fed} | {phase['workers']} | {r['images_per_s']:.1f} |"
            if "error" in phase:
                print(f"{head} failed: {phase['error'][:150]} | | |")
                continue
            print(
                f"{head} {phase['images_per_s']:.1f} | {phase['wait_fraction']:.1%} | "
                f"{phase['copy_s'] / phase['seconds']:.1%} |"
            )
    print_goals(rows, peak)


def print_goals(rows: list[dict], peak: float | None) -> None:
    """The issue's GPU goals: met, not met, or not measured."""

    def best(model: str, impl: str) -> dict | None:
        found = [r["result"] for r in rows if r["model"] == model and r["impl"] == impl]
        found = [r for r in found if r]
        return max(found, key=lambda r: r["images_per_s"]) if found else None

    ours, official = best("vit-b", "ours"), best("vit-b", "official")
    lines = []
    if ours and peak:
        mfu = ours["images_per_s"] * ours["gflop_per_image"] / (peak * 1e3)
        lines.append(("ViT-B bf16 MFU >= 40%", f"{mfu:.1%}", mfu >= 0.40))
    else:
        lines.append(("ViT-B bf16 MFU >= 40%", "not measured", None))
    if ours and official:
        ratio = ours["images_per_s"] / official["images_per_s"]
        lines.append(("ViT-B bf16 >= 1.5x official-style fp16", f"{ratio:.2f}x", ratio >= 1.5))
    else:
        lines.append(("ViT-B bf16 >= 1.5x official-style fp16", "not measured", None))
    for row in rows:
        phases = [p for p in (row["result"] or {}).get("loader", []) if "error" not in p]
        if row.get("feeds_loader") and phases:
            most = max(phases, key=lambda p: p["workers"])
            lines.append(
                (
                    f"{row['model']} data waiting < 10% of step time ({most['workers']} workers)",
                    f"{most['wait_fraction']:.1%}",
                    most["wait_fraction"] < 0.10,
                )
            )
    print("\nGoals:")
    for goal, value, met in lines:
        verdict = "not measured" if met is None else ("met" if met else "NOT met")
        print(f"- {goal}: {value} ({verdict})")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args._worker:
        worker(json.loads(args._worker))
        return
    deadline = time.monotonic() + args.budget_s
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU (use --device cpu --dry_run).")
    overrides = DRY_OVERRIDES if args.dry_run else {}
    from hf_cxr_mae import CXRMAEConfig

    config = CXRMAEConfig.from_preset(PRESETS["vit-s"][0], **overrides)
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="cxr-gpu-cache-"))
    try:
        cache, data = prepare_cache(args, config, cache_dir)
        print(f"data: {data}", file=sys.stderr)
        rows = plan_rows(args)
        for row in rows:
            left = deadline - time.monotonic()
            need = 0.0 if args.dry_run else ROW_MIN_S[row["compile"]]
            row["result"] = None
            if left < need:
                row["why"] = f"skipped: {left:.0f} s of the time budget left"
                print(f"{row['why']}: {row}", file=sys.stderr)
                continue
            spec = {
                **{k: row[k] for k in ("model", "impl", "precision", "compile")},
                "device": args.device,
                "batch": args.batch,
                "steps": args.steps,
                "warmup": args.warmup,
                "overrides": overrides,
                "compile_backend": args.compile_backend,
                "cache": cache,
                "loader_workers": [int(n) for n in args.loader_workers.split(",")]
                if row.get("feeds_loader") and cache
                else [],
                "loader_steps": args.loader_steps,
                "loader_warmup": args.loader_warmup,
            }
            timeout = None if args.dry_run else min(left, ROW_CAP_S[row["compile"]])
            started = time.monotonic()
            row["result"] = run_in_subprocess(__file__, spec, timeout=timeout)
            if row["result"] is None:
                row["why"] = "failed (see stderr)"
            print(
                f"done in {time.monotonic() - started:.0f} s: {row['model']} {row['impl']} "
                f"{row['precision']} compile={row['compile']}: "
                f"{(row['result'] or {}).get('images_per_s', float('nan')):.1f} img/s",
                file=sys.stderr,
            )
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    names = [r["result"]["device_name"] for r in rows if r["result"]]
    device_name = names[0] if names else args.device
    peak = args.peak_tflops or (peak_tflops(device_name) if args.device == "cuda" else None)
    print_tables(args, rows, peak, device_name, data)


if __name__ == "__main__":
    main()
