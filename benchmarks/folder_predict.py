"""Folder prediction end to end vs model only (a printed table).

    python benchmarks/folder_predict.py                        # ViT-S, 64 NIH PNGs x 4, batch 32
    python benchmarks/folder_predict.py --model vit-b --repeat 2 --workers 2

The folder is the 64 full-size (1024x1024) NIH PNGs of ``../shared/data`` repeated through
symlinks. Per backend (PyTorch bf16 fast path, ONNX Runtime int8 dynamic and int8 static), in one
process, side by side: model-only images/s (pre-decoded batches) and end-to-end images/s of
``hf_cxr_mae.serving.predict.predict_to_file`` (decode in worker processes, model, CSV per batch). Random
weights (speed only). On a shared CPU the numbers are noisy: each is the best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

DATA = Path(
    os.environ.get("CXR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
PRESETS = {"vit-s": "vit-small-patch16", "vit-b": "vit-base-patch16"}


def folder_of_copies(source: Path, repeat: int, root: Path) -> list[Path]:
    files = sorted(source.glob("*.png"))
    if not files:
        raise SystemExit(f"No PNGs in {source}; set CXR_SHARED_DATA to the shared data folder.")
    folder = root / "images"
    folder.mkdir()
    for r in range(repeat):
        for f in files:
            (folder / f"{r}_{f.name}").symlink_to(f)
    return sorted(folder.iterdir())


def model_only(run, pixels: torch.Tensor, batch: int, rounds: int) -> float:
    run(pixels[:batch])  # warm-up
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(pixels), batch):
            run(pixels[i : i + batch])
        best = max(best, len(pixels) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(PRESETS), default="vit-s")
    parser.add_argument("--repeat", type=int, default=4, help="copies of the 64 PNGs")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="default: CPUs, at most 4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backends", default="torch-bf16,onnx-int8-dynamic,onnx-int8-static")
    args = parser.parse_args()

    from hf_cxr_mae import CXRClassifierConfig, CXRViTForImageClassification, build_image_processor
    from hf_cxr_mae.data.images import read_xray
    from hf_cxr_mae.data.transforms import create_transform
    from hf_cxr_mae.processing import data_settings
    from hf_cxr_mae.serving.export import export_onnx
    from hf_cxr_mae.serving.inference import fast_classifier
    from hf_cxr_mae.serving.onnx_runtime import OnnxClassifier
    from hf_cxr_mae.serving.predict import predict_to_file

    torch.manual_seed(0)
    config = CXRClassifierConfig.from_preset(PRESETS[args.model], num_labels=14)
    model = CXRViTForImageClassification(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = folder_of_copies(DATA / "nih-cxr14-sample" / "full-res", args.repeat, root)
        transform = create_transform(data_settings(model), "eval")
        start = time.perf_counter()
        decoded = torch.stack([transform(read_xray(p)) for p in paths[:64]])
        decode_rate = 64 / (time.perf_counter() - start)
        pixels = decoded.expand(-1, 3, -1, -1).repeat(args.repeat, 1, 1, 1)
        model.save_pretrained(root / "torch")
        build_image_processor(model.config).save_pretrained(root / "torch")
        rows = []
        for backend in args.backends.split(","):
            if backend == "torch-bf16":
                predictor, run = model, fast_classifier(model)
            else:
                mode = backend.rsplit("-", 1)[-1]
                calibration = pixels[:64].numpy() if mode == "static" else None
                export_onnx(root / "torch", root / backend, int8=mode, calibration=calibration)
                predictor = run = OnnxClassifier(root / backend, variant=mode)
            alone = model_only(run, pixels, args.batch, args.rounds)
            end_to_end = 0.0
            for r in range(args.rounds):
                start = time.perf_counter()
                predict_to_file(
                    predictor,
                    paths,
                    root / f"{backend}_{r}.csv",
                    batch_size=args.batch,
                    num_workers=args.workers,
                    resume=False,
                    progress=False,
                )
                end_to_end = max(end_to_end, len(paths) / (time.perf_counter() - start))
            rows.append((backend, alone, end_to_end))
            print(f"done: {backend}: {alone:.1f} / {end_to_end:.1f} img/s", file=sys.stderr)
    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    print(
        f"\nFolder prediction, {args.model}, {len(paths)} NIH PNGs 1024x1024 (64 x {args.repeat}), "
        f"batch {args.batch}, {workers} decode workers; {platform.machine()} with "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}. Decoding + transform alone, one "
        f"process: {decode_rate:.1f} img/s.\n"
    )
    print("| backend | model only img/s | end to end img/s | end to end / model only |")
    print("|---|--:|--:|--:|")
    for backend, alone, end_to_end in rows:
        print(f"| {backend} | {alone:.1f} | {end_to_end:.1f} | {end_to_end / alone:.0%} |")


if __name__ == "__main__":
    main()
