"""Classifier inference speed: ours vs timm's ViT in fp32 (a printed table).

    python benchmarks/inference.py                 # CPU, batch 32, ViT-S and ViT-B
    python benchmarks/inference.py --device cuda --batch 256

Rows per model: timm ``VisionTransformer`` (global pool) fp32 eager, the baseline a user would
pick; our classifier as saved (a native ``BeitForImageClassification``) in fp32; and ours through
``hf_cxr_mae.inference.fast_classifier`` (bf16 weights, inference mode, optionally compiled),
which is what ``hf-cxr-mae predict`` uses. Each configuration runs in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from functools import partial

import torch
from worker import report_result, run_in_subprocess

SIZES = {"vit-s": ("vit-small-patch16", 384, 12, 6), "vit-b": ("vit-base-patch16", 768, 12, 12)}


def worker(spec: dict) -> dict:
    torch.manual_seed(0)
    device = spec["device"]
    preset, width, depth, heads = SIZES[spec["model"]]
    x = torch.randn(spec["batch"], 3, 224, 224, device=device)
    if spec["impl"] == "timm":
        from timm.models.vision_transformer import VisionTransformer

        model = VisionTransformer(
            embed_dim=width, depth=depth, num_heads=heads, qkv_bias=True, global_pool="avg",
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_classes=14,
        ).to(device).eval()  # fmt: skip

        def run():
            with torch.no_grad():
                return model(x)
    else:
        from hf_cxr_mae import CXRClassifierConfig, CXRViTForImageClassification
        from hf_cxr_mae.inference import fast_classifier

        model = (
            CXRViTForImageClassification(CXRClassifierConfig.from_preset(preset, num_labels=14))
            .to(device)
            .eval()
        )
        if spec["impl"] == "ours-fp32":

            def run():
                with torch.no_grad():
                    return model(x).logits
        else:
            run = partial(fast_classifier(model, compile=spec["compile"]), x)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(spec["warmup"]):
        run()
    sync()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        run()
    sync()
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {"images_per_s": spec["batch"] * spec["steps"] / seconds, "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--models", default="vit-s,vit-b")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        report_result(worker(json.loads(args._worker)))
        return
    variants = [
        ("timm", False, "timm ViT global-pool, fp32"),
        ("ours-fp32", False, "hf-cxr-mae as saved (BEiT), fp32"),
        ("ours-fast", False, "hf-cxr-mae fast_classifier, bf16"),
        ("ours-fast", True, "hf-cxr-mae fast_classifier, bf16 + compile"),
    ]
    rows = []
    for model in args.models.split(","):
        base = None
        for impl, compiled, label in variants:
            spec = {
                "model": model,
                "impl": impl,
                "compile": compiled,
                "device": args.device,
                "batch": args.batch,
                "steps": args.steps,
                "warmup": args.warmup,
            }
            result = run_in_subprocess(__file__, spec)
            if result is None:
                continue
            base = base or result
            rows.append(
                (
                    model,
                    label,
                    result,
                    result["images_per_s"] / base["images_per_s"],
                    result["peak_mib"] / base["peak_mib"],
                )
            )
            print(f"done: {model} {label}: {result['images_per_s']:.1f} img/s", file=sys.stderr)
    print(
        f"\nClassifier inference, batch {args.batch}, 224 px, 14 labels; {args.device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}\n"
    )
    print("| model | implementation | images/s | vs timm fp32 | peak MiB | vs timm fp32 |")
    print("|---|---|--:|--:|--:|--:|")
    for model, label, r, speed, mem in rows:
        print(
            f"| {model} | {label} | {r['images_per_s']:.1f} | {speed:.2f}x | {r['peak_mib']:.0f} | {mem:.2f}x |"
        )


if __name__ == "__main__":
    main()
