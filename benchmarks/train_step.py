"""Training-step speed: ours vs the stock baseline a user would otherwise pick (a printed table).

    python benchmarks/train_step.py                      # CPU, batch 32, ViT-S and ViT-B
    python benchmarks/train_step.py --device cuda --batch 256 --peak_tflops 989

Rows: MAE pre-training (ViT-S dec512d2b, ViT-B dec512d8b) against stock
``transformers.ViTMAEForPreTraining`` in fp32, and classifier training (ViT-S, ViT-B) against
timm's ``VisionTransformer`` (global pool) in fp32; same shapes, same batch, AdamW. Each
configuration runs in a fresh process, so peak memory (RSS on CPU, allocator peak on CUDA) is its
own. Synthetic inputs: this measures the model step, not the data pipeline
(see data_throughput.py). FLOPs are counted with torch's FlopCounterMode.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from functools import partial

import torch
from worker import peak_rss_mib, report_result, run_in_subprocess

from hf_cxr_mae.attention import use_fast_attention

PRESETS = {
    "vit-s": ("vit-small-patch16-dec512d2b", 384, 12, 6),
    "vit-b": ("vit-base-patch16-dec512d8b", 768, 12, 12),
}


def build(task: str, model: str, impl: str, **overrides):
    """The model of one row; ``overrides`` (pre-training only) change config fields of ours and,
    through it, of the stock baseline (the GPU script's dry run shrinks the shapes with them)."""
    preset, width, depth, heads = PRESETS[model]
    if task == "pretrain":
        from hf_cxr_mae import CXRMAEConfig, CXRMAEForPreTraining

        config = CXRMAEConfig.from_preset(preset, **overrides)
        if impl == "baseline":
            from transformers import ViTMAEConfig, ViTMAEForPreTraining

            stock = ViTMAEConfig(
                **{k: v for k, v in config.to_dict().items() if k in ViTMAEConfig().to_dict()}
            )
            return ViTMAEForPreTraining(stock)
        return use_fast_attention(CXRMAEForPreTraining(config))
    if impl == "baseline":
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(
            embed_dim=width, depth=depth, num_heads=heads, qkv_bias=True, global_pool="avg",
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_classes=14, drop_path_rate=0.2,
        )  # fmt: skip
    from hf_cxr_mae import CXRClassifierConfig, CXRViTForImageClassification

    return use_fast_attention(
        CXRViTForImageClassification(
            CXRClassifierConfig.from_preset(preset.split("-dec")[0], num_labels=14)
        )
    )


def step_fn(task: str, impl: str, model, optimizer, device: str, bf16: bool):
    labels = torch.randint(0, 2, (1, 14), device=device).float()

    def step(x):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            if task == "pretrain":
                loss = model(x).loss
            elif impl == "baseline":
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    model(x), labels.expand(x.shape[0], -1)
                )
            else:
                loss = model(x, labels=labels.expand(x.shape[0], -1)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def worker(spec: dict) -> dict:
    torch.manual_seed(0)
    device = spec["device"]
    model = build(spec["task"], spec["model"], spec["impl"]).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    # Baseline: AdamW as a user gets it by default; ours: fused AdamW, as CXRTrainer builds it.
    optimizer = (
        torch.optim.AdamW(params, lr=1e-4)
        if spec["impl"] == "baseline"
        else torch.optim.AdamW(params, lr=1e-4, fused=True)
    )
    step = step_fn(spec["task"], spec["impl"], model, optimizer, device, spec["bf16"])
    if spec["compile"]:
        model.forward = torch.compile(model.forward)
    x = torch.randn(spec["batch"], 3, 224, 224, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(spec["warmup"]):
        step(x)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(x)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        loss = step(x)
    sync()
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else peak_rss_mib()  # not ru_maxrss: it starts at the parent's size
    )
    return {
        "images_per_s": spec["batch"] * spec["steps"] / seconds,
        "peak_mib": peak,
        "gflop_per_image": counter.get_total_flops() / spec["batch"] / 1e9,
        "loss": float(loss),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--models", default="vit-s,vit-b")
    parser.add_argument("--tasks", default="pretrain,classifier")
    parser.add_argument("--compile", action="store_true", help="also time ours under torch.compile")
    parser.add_argument(
        "--peak_tflops", type=float, default=None, help="accelerator bf16 peak, for MFU"
    )
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        report_result(worker(json.loads(args._worker)))
        return
    variants = [("baseline", False, False, "fp32"), ("ours", True, False, "bf16 autocast")]
    if args.compile:
        variants.append(("ours", True, True, "bf16 + compile"))
    rows = []
    for task in args.tasks.split(","):
        for model in args.models.split(","):
            base = None
            for impl, bf16, compiled, label in variants:
                spec = {"task": task, "model": model, "impl": impl, "bf16": bf16, "compile": compiled, "device": args.device,
                        "batch": args.batch, "steps": args.steps, "warmup": args.warmup}  # fmt: skip
                result = run_in_subprocess(__file__, spec)
                if result is None:
                    continue
                base = base or result
                name = (
                    ("stock transformers ViTMAE" if task == "pretrain" else "timm ViT global-pool")
                    if impl == "baseline"
                    else "hf-cxr-mae"
                )
                rows.append(
                    (
                        task,
                        model,
                        f"{name}, {label}",
                        result,
                        result["images_per_s"] / base["images_per_s"],
                        result["peak_mib"] / base["peak_mib"],
                    )
                )
                print(
                    f"done: {task} {model} {name} {label}: {result['images_per_s']:.1f} img/s",
                    file=sys.stderr,
                )
    print(
        f"\nTraining step, batch {args.batch}, 224 px, AdamW; {args.device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}\n"
    )
    mfu = args.peak_tflops is not None
    print(
        "| task | model | implementation | images/s | vs baseline | peak MiB | vs baseline | GFLOP/image |"
        + (" MFU |" if mfu else "")
    )
    print("|---|---|---|--:|--:|--:|--:|--:|" + ("--:|" if mfu else ""))
    for task, model, name, r, speed, mem in rows:
        line = f"| {task} | {model} | {name} | {r['images_per_s']:.1f} | {speed:.2f}x | {r['peak_mib']:.0f} | {mem:.2f}x | {r['gflop_per_image']:.2f} |"
        if mfu:
            line += f" {r['images_per_s'] * r['gflop_per_image'] / (args.peak_tflops * 1e3):.1%} |"
        print(line)


if __name__ == "__main__":
    main()
