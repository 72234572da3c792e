"""Classifier inference speed and the accuracy cost of each fast path (printed tables).

    python benchmarks/inference.py                 # CPU, batch 32, ViT-S and ViT-B, every row
    python benchmarks/inference.py --impls timm,onnx-fp32,onnx-int8-dynamic,onnx-int8-static
    python benchmarks/inference.py --device cuda --batch 256 --impls timm,ours-fp32,ours-fast

Speed rows per model, side by side in one run, random weights, synthetic input: timm
``VisionTransformer`` (global pool) fp32 eager, the baseline a user would pick; our classifier
as saved (a native ``BeitForImageClassification``) in fp32; ours through
``hf_cxr_mae.serving.inference.fast_classifier`` (bf16 weights, inference mode, optionally compiled),
which is what ``hf-cxr-mae predict`` uses; and ours exported with ``hf_cxr_mae.serving.export`` and run by
ONNX Runtime (``OnnxClassifier``) in fp32, with dynamic int8 quantisation and with static int8
(QDQ) calibrated on NIH training images. Each row runs in a fresh process, so its peak memory
(RSS; CUDA allocator peak on a GPU) is its own; the exports are made beforehand, outside them.

Accuracy rows (``--accuracy``, on by default when the NIH sample is in ``../shared/data``): a
ViT-S made on this CPU (``finetuned_vit_s.py``: MAE pre-training on the sample's non-test images,
then fine-tuning; about 25 minutes on one core the first time, cached in ``out/bench/``) with its
head refitted by logistic regression (``with_fitted_head``), exported in each ONNX variant and
scored on the held-out ``test_list.txt`` images against the fp32 PyTorch model: the largest
probability difference and the mean-AUROC difference (``--accuracy_model FOLDER`` scores another
fine-tuned NIH classifier instead, e.g. the paper's weights through ``hf-cxr-mae convert``). Then
the goals: >= 3x timm fp32 images/s, mAUC within 0.005, probabilities within 0.02, peak memory no
worse than timm fp32.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from worker import peak_rss_mib, report_result, run_in_subprocess

SIZES = {"vit-s": ("vit-small-patch16", 384, 12, 6), "vit-b": ("vit-base-patch16", 768, 12, 12)}
# impl -> (row label, compile, int8 mode of the ONNX export or None)
IMPLS = {
    "timm": ("timm ViT global-pool, fp32", False, None),
    "ours-fp32": ("hf-cxr-mae as saved (BEiT), fp32", False, None),
    "ours-fast": ("hf-cxr-mae fast_classifier, bf16", False, None),
    "ours-fast-compile": ("hf-cxr-mae fast_classifier, bf16 + compile", True, None),
    "onnx-fp32": ("ONNX Runtime, fp32", False, None),
    "onnx-int8-dynamic": ("ONNX Runtime, int8 dynamic", False, "dynamic"),
    "onnx-int8-static": ("ONNX Runtime, int8 static (QDQ)", False, "static"),
}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nih-cxr14-sample"
# The goals for CPU deployment.
SPEED_GOAL, MAUC_GOAL, PROB_GOAL = 3.0, 0.005, 0.02


def random_classifier(model: str):
    """Our classifier with random weights (seed 0), as the speed rows time it."""
    import torch

    from hf_cxr_mae import CXRClassifierConfig, CXRViTForImageClassification

    torch.manual_seed(0)
    config = CXRClassifierConfig.from_preset(SIZES[model][0], num_labels=14)
    return CXRViTForImageClassification(config).eval()


def worker(spec: dict) -> dict:
    """One row, in its own process: images/s and peak memory. The ONNX rows never import torch
    (numpy input, same seed and shape), so their peak RSS is what an ONNX Runtime server holds."""
    if spec["impl"].startswith("onnx"):
        from hf_cxr_mae.serving.onnx_runtime import OnnxClassifier

        x = np.random.default_rng(0).standard_normal((spec["batch"], 3, 224, 224), np.float32)
        variant = IMPLS[spec["impl"]][2] or "fp32"
        run, sync = partial(OnnxClassifier(spec["onnx_dir"], variant=variant), x), None
    else:
        run, sync = torch_run(spec)
    for _ in range(spec["warmup"]):
        run()
    if sync:
        sync()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        run()
    if sync:
        sync()
    seconds = time.perf_counter() - start
    if spec["device"] == "cuda" and not spec["impl"].startswith("onnx"):
        import torch

        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_rss_mib()
    return {"images_per_s": spec["batch"] * spec["steps"] / seconds, "peak_mib": peak}


def torch_run(spec: dict) -> tuple:
    """(run, synchronise) of a PyTorch row: timm or ours, on the spec's device."""
    import torch

    torch.manual_seed(0)
    device = spec["device"]
    _, width, depth, heads = SIZES[spec["model"]]
    x = torch.randn(spec["batch"], 3, 224, 224, device=device)
    impl = spec["impl"]
    if impl == "timm":
        from timm.models.vision_transformer import VisionTransformer

        model = VisionTransformer(
            embed_dim=width, depth=depth, num_heads=heads, qkv_bias=True, global_pool="avg",
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_classes=14,
        ).to(device).eval()  # fmt: skip

        def run():
            with torch.no_grad():
                return model(x)
    else:
        from hf_cxr_mae.serving.inference import fast_classifier

        model = random_classifier(spec["model"]).to(device)
        if impl == "ours-fp32":

            def run():
                with torch.no_grad():
                    return model(x).logits
        else:
            run = partial(fast_classifier(model, compile=IMPLS[impl][1]), x)
    return run, (torch.cuda.synchronize if device == "cuda" else None)


def export_variants(
    model_or_path, folder: Path, modes: list[str | None], calibration: np.ndarray | None
) -> dict[str | None, str]:
    """Export ``model_or_path`` into one folder with ``hf_cxr_mae.serving.export.export_onnx`` in each
    int8 ``mode`` asked for (``None``: fp32, which every export writes too): ``{mode: "ok" or
    "refused: ..." / "failed: ..."}``. Static graphs are calibrated on ``calibration`` (its last
    quarter held out for export_onnx's check); the others are checked on that quarter too."""
    from hf_cxr_mae.serving.export import export_onnx

    held = None if calibration is None else calibration[-max(4, len(calibration) // 4) :]
    status: dict[str | None, str] = {}
    for mode in [m for m in modes if m] or [None]:
        start = time.perf_counter()
        try:
            export_onnx(
                model_or_path,
                folder,
                int8=mode,
                calibration=calibration if mode == "static" else None,
                check_images=None if mode == "static" else held,
                image_source="NIH training X-rays" if held is not None else "synthetic images",
                progress=lambda line: print(line, file=sys.stderr),
            )
            status[mode] = status[None] = "ok"  # the fp32 graph is written beside any int8 one
            took = time.perf_counter() - start
            print(f"exported {mode or 'fp32'} to {folder} in {took:.0f} s", file=sys.stderr)
        except ValueError as err:  # export_onnx refuses a graph beyond its tolerance
            status[mode] = f"refused: {err}"
        except Exception as err:
            status[mode] = f"failed: {type(err).__name__}: {err}"
        if status[mode] != "ok":
            print(f"export {mode or 'fp32'}: {status[mode]}", file=sys.stderr)
    if None in modes and None not in status:  # every int8 export refused: fp32 on its own
        return {**status, **export_variants(model_or_path, folder, [None], calibration)}
    return status


def calibration_images(data_dir: Path, count: int, model) -> np.ndarray | None:
    """``count`` NIH training images preprocessed for ``model`` (None without the sample)."""
    if count <= 0 or not (data_dir / "Data_Entry_2017.csv").is_file():
        return None
    from finetuned_vit_s import held_out_images

    return held_out_images(model, data_dir, split="train", limit=count)[0]


def speed_rows(args, tmp: Path) -> list[tuple]:
    rows = []
    impls = args.impls.split(",")
    if unknown := sorted(set(impls) - set(IMPLS)):
        raise SystemExit(f"Unknown --impls {unknown}; valid: {list(IMPLS)}.")
    for model in args.models.split(","):
        onnx = [i for i in impls if i.startswith("onnx")]
        exported = {}
        if onnx:
            classifier = random_classifier(model)
            calibration = calibration_images(args.data_dir, args.calibration, classifier)
            if calibration is None and "onnx-int8-static" in onnx:
                from hf_cxr_mae.serving.export import synthetic_check_images

                calibration = synthetic_check_images(classifier.config, max(args.calibration, 8))
            modes = [IMPLS[i][2] for i in onnx]
            exported = export_variants(classifier, tmp / model, modes, calibration)
            del classifier
        base = None
        for impl in impls:
            label, _, mode = IMPLS[impl]
            spec = {"model": model, "impl": impl, "device": args.device, "batch": args.batch,
                    "steps": args.steps, "warmup": args.warmup}  # fmt: skip
            if impl.startswith("onnx"):
                if exported[mode] != "ok":
                    rows.append((model, label, {"error": exported[mode]}, None, None))
                    continue
                spec["onnx_dir"] = str(tmp / model)
            result = run_in_subprocess(__file__, spec)
            if result is None:
                rows.append((model, label, {"error": "failed (see stderr)"}, None, None))
                continue
            if impl == "timm":
                base = result
            rows.append(
                (
                    model,
                    label,
                    result,
                    result["images_per_s"] / base["images_per_s"] if base else None,
                    result["peak_mib"] / base["peak_mib"] if base else None,
                )
            )
            print(f"done: {model} {label}: {result['images_per_s']:.1f} img/s", file=sys.stderr)
    return rows


def accuracy_rows(args, tmp: Path) -> tuple[list[dict], str]:
    """Each ONNX variant of the fine-tuned ViT-S against it in fp32 PyTorch, on held-out images."""
    import torch
    from finetuned_vit_s import held_out_images, mae_finetuned_vit_s, with_fitted_head

    from hf_cxr_mae.metrics.classification import multilabel_metrics, sigmoid
    from hf_cxr_mae.serving.onnx_runtime import OnnxClassifier
    from hf_cxr_mae.serving.predict import load_classifier

    # The CPU-made fine-tune alone answers nearly the same for every image; its head refitted on
    # its own features (logistic regression) gives the comparison real spread to measure.
    model_dir = args.accuracy_model or with_fitted_head(
        mae_finetuned_vit_s(args.data_dir, steps=args.finetune_steps), args.data_dir
    )
    model = load_classifier(str(model_dir))
    pixels, targets, names = held_out_images(model, args.data_dir, split="test")
    calibration = held_out_images(model, args.data_dir, split="train", limit=args.calibration)[0]

    def logits_of(fn) -> np.ndarray:
        chunks = [
            fn(torch.from_numpy(pixels[i : i + args.batch])).float().numpy()
            for i in range(0, len(pixels), args.batch)
        ]
        return np.concatenate(chunks).astype(np.float64)

    with torch.no_grad():
        reference = logits_of(lambda x: model(pixel_values=x).logits)
    ref_probs, ref_mauc = sigmoid(reference), multilabel_metrics(reference, targets, names)["mauc"]
    rows = [{"variant": "PyTorch fp32 (reference)", "mauc": ref_mauc, "prob": 0.0, "dauc": 0.0}]
    modes = [IMPLS[i][2] for i in IMPLS if i.startswith("onnx")]
    folder = tmp / "finetuned-vit-s"
    exported = export_variants(model_dir, folder, modes, calibration)
    for mode in modes:
        variant = f"ONNX Runtime, {'int8 ' + mode if mode else 'fp32'}"
        if exported[mode] != "ok":
            rows.append({"variant": variant, "error": exported[mode]})
            continue
        logits = logits_of(OnnxClassifier(folder, variant=mode or "fp32"))
        mauc = multilabel_metrics(logits, targets, names)["mauc"]
        rows.append(
            {
                "variant": variant,
                "mauc": mauc,
                "prob": float(np.abs(sigmoid(logits) - ref_probs).max()),
                "dauc": mauc - ref_mauc,
            }
        )
    defined = sum(0 < targets[:, j].sum() < len(targets) for j in range(len(names)))
    # How much the model's logits vary between images: near 0, it gives every image the same
    # answer, and the mAUC differences below are rank ties broken by rounding, not accuracy.
    spread = float(np.median(reference.std(axis=0)))
    about = (
        f"{len(pixels)} held-out images (test_list.txt) of {args.data_dir}, {defined} of "
        f"{len(names)} findings with both classes; {len(calibration)} training images for the "
        f"int8 exports (static: 3/4 calibrate, 1/4 check); model {model_dir}, whose logits vary "
        f"between images by {spread:.3g} (median over findings of the std)"
        + (": a degenerate model, the mAUC differences are noise" if spread < 0.05 else "")
    )
    return rows, about


def print_speed(args, rows: list[tuple]) -> None:
    import torch

    print(
        f"\nClassifier inference, batch {args.batch}, 224 px, 14 labels; {args.device} "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
        f"torch {torch.__version__}{_ort_version()}\n"
    )
    print("| model | implementation | images/s | vs timm fp32 | peak MiB | vs timm fp32 |")
    print("|---|---|--:|--:|--:|--:|")
    for model, label, r, speed, mem in rows:
        if "error" in r:
            print(f"| {model} | {label} | {r['error'][:200]} | | | |")
            continue
        print(
            f"| {model} | {label} | {r['images_per_s']:.1f} | {_x(speed)} | "
            f"{r['peak_mib']:.0f} | {_x(mem)} |"
        )


def print_accuracy(rows: list[dict], about: str) -> None:
    print(f"\nAccuracy cost: {about}\n")
    print("| variant | mAUC | mAUC difference | max probability difference |")
    print("|---|--:|--:|--:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | {r['error'][:200]} | | |")
            continue
        print(f"| {r['variant']} | {r['mauc']:.4f} | {r['dauc']:+.4f} | {r['prob']:.4f} |")


def print_goals(speed: list[tuple], accuracy: list[dict] | None) -> None:
    print("\nGoals (CPU deployment):")
    for model, label, r, ratio, mem in speed:
        if not label.startswith("ONNX") or "error" in r or ratio is None:
            continue
        print(
            f"- {model} {label}: {ratio:.2f}x timm fp32 images/s "
            f"({_met(ratio >= SPEED_GOAL)} >= {SPEED_GOAL:g}x); peak memory {mem:.2f}x timm fp32 "
            f"({_met(mem <= 1.0)} <= 1x)"
        )
    for r in accuracy or []:
        if "error" in r or r["variant"].startswith("PyTorch"):
            continue
        print(
            f"- {r['variant']} on held-out X-rays: mAUC {r['dauc']:+.4f} "
            f"({_met(abs(r['dauc']) <= MAUC_GOAL)} within {MAUC_GOAL}), probabilities "
            f"{r['prob']:.4f} ({_met(r['prob'] <= PROB_GOAL)} within {PROB_GOAL})"
        )


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _ort_version() -> str:
    try:
        import onnxruntime

        return f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--models", default="vit-s,vit-b")
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"rows, of {list(IMPLS)}")
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA, help="the NIH sample")
    parser.add_argument(
        "--calibration", type=int, default=128, help="NIH training images for static int8"
    )
    parser.add_argument(
        "--accuracy",
        choices=["auto", "yes", "no"],
        default="auto",
        help="the accuracy rows (auto: when the NIH sample is there)",
    )
    parser.add_argument(
        "--finetune_steps",
        type=int,
        default=60,
        help="fine-tuning steps of the accuracy rows' ViT-S",
    )
    parser.add_argument(
        "--accuracy_model",
        type=Path,
        default=None,
        help="a fine-tuned NIH classifier folder to score instead of the CPU-made ViT-S",
    )
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        report_result(worker(json.loads(args._worker)))
        return
    has_data = (args.data_dir / "Data_Entry_2017.csv").is_file()
    if args.accuracy == "yes" and not has_data:
        raise SystemExit(f"--accuracy yes needs the NIH sample; none at {args.data_dir}.")
    with tempfile.TemporaryDirectory(prefix="cxr-onnx-") as tmp:
        speed = speed_rows(args, Path(tmp))
        accuracy, about = (
            accuracy_rows(args, Path(tmp))
            if args.accuracy == "yes" or (args.accuracy == "auto" and has_data)
            else (None, "")
        )
    print_speed(args, speed)
    if accuracy is not None:
        print_accuracy(accuracy, about)
    print_goals(speed, accuracy)


if __name__ == "__main__":
    main()
