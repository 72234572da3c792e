"""A one-minute tour: pre-train a tiny MAE for a few steps, turn it into a classifier, and
reload both natively (``AutoModel``, ``pipeline``).

    python examples/quickstart.py [--output_dir out/quickstart] [--steps 30] [--images FOLDER]

Without ``--images`` it trains on smooth random images (DEMO DATA, not X-rays). The recipes in
``recipes/`` are the real training runs; this loop only shows the pieces fit together.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModel, pipeline
from transformers.utils import logging

from hf_cxr_mae.configuration import CXRMAEConfig, preset_names
from hf_cxr_mae.data.images import read_xray
from hf_cxr_mae.modeling import CXRMAEForPreTraining, CXRViTForImageClassification
from hf_cxr_mae.processing import build_image_processor


def quickstart(output_dir: Path, preset: str, steps: int, images: Path | None) -> None:
    """Pre-train a small MAE for a few steps, turn it into a classifier, reload both natively."""
    config = CXRMAEConfig.from_preset(preset)
    size = config.image_size
    processor = build_image_processor(config)
    if images is not None:
        files = sorted(
            p for p in images.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"}
        )[:16]
        if not files:
            raise SystemExit(f"No PNG or JPEG images found under {images}.")
        batch = processor([read_xray(f) for f in files], return_tensors="pt")["pixel_values"]
        print(f"Using {len(files)} images from {images}.")
    else:
        print("DEMO DATA: no --images given, using smooth random images (not X-rays).")
        noise = torch.nn.functional.interpolate(
            torch.randn(16, 1, 8, 8), size=(size, size), mode="bicubic"
        )
        batch = noise.expand(-1, 3, -1, -1).contiguous()
    model = CXRMAEForPreTraining(config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 1 or step % 10 == 0 or step == steps:
            print(f"step {step:3d}  masked-patch MSE {loss.item():.4f}")
    print(f"{steps} steps in {time.perf_counter() - start:.1f}s")
    mae_dir, clf_dir = output_dir / "mae", output_dir / "classifier"
    model.save_pretrained(mae_dir)
    processor.save_pretrained(mae_dir)
    logging.set_verbosity_error()  # AutoModel lists the decoder keys it (rightly) leaves out
    encoder = AutoModel.from_pretrained(mae_dir)
    print(f"saved {mae_dir}: AutoModel loads it as {type(encoder).__name__}")
    labels = ["Atelectasis", "Cardiomegaly", "Effusion"]
    classifier = CXRViTForImageClassification.from_checkpoint(model, id2label=labels)
    classifier.save_pretrained(clf_dir)
    build_image_processor(classifier.config).save_pretrained(clf_dir)
    classify = pipeline("image-classification", model=str(clf_dir), top_k=len(labels))
    example = Image.fromarray((batch[0, 0].clamp(-2, 2) * 60 + 128).byte().numpy())
    print(f"saved {clf_dir}: pipeline scores (untrained head) {classify(example)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", type=Path, default=Path("out/quickstart"))
    parser.add_argument("--preset", default="vit-test-patch8-dec32d1b", choices=preset_names())
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--images", type=Path, default=None, help="folder of PNG/JPEG X-rays (optional)"
    )
    args = parser.parse_args(argv)
    quickstart(args.output_dir, args.preset, args.steps, args.images)


if __name__ == "__main__":
    main()
