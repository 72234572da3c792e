"""Predictions on image files, Grad-CAM heatmaps and MAE reconstructions (the CLI's workhorses)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data.image_paths import IMAGE_SUFFIXES
from .data.images import read_xray
from .data.transforms import create_transform

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    path: str
    probabilities: dict[str, float]
    heatmaps: list[str] = field(default_factory=list)


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their PNG / JPEG / DICOM files (sorted, recursive;
    DICOM also without suffix), OS and tool junk (``.DS_Store``, AppleDouble ``._*``,
    ``.ipynb_checkpoints/``, ``__MACOSX/``, ``Thumbs.db``) ignored, other files named in a warning."""
    from .data.imagefolder import visible_images
    from .data.images import has_dicom_magic

    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images, _, files = visible_images(item)
            is_dicom = {p: has_dicom_magic(item / p) for p in files}  # IM0001 from PACS
            dicoms = [p for p in files if is_dicom[p]]
            others = [p for p in files if not is_dicom[p]]
            out += sorted(item / p for p in images + dicoms)
            if others:
                logger.warning(
                    "Left out %d files in %s that are not %s: %s%s",
                    len(others), item, "/".join(IMAGE_SUFFIXES),
                    ", ".join(map(str, others[:10])),
                    f" and {len(others) - 10} more" if len(others) > 10 else "",
                )  # fmt: skip
        else:
            out.append(item)
    return out


def load_classifier(model_name_or_path: str):
    """A classifier checkpoint (folder or Hub id); a clear error for an encoder without a head."""
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.from_pretrained(model_name_or_path)
    if not any(a.endswith("ForImageClassification") for a in config.architectures or []):
        raise ValueError(
            f"{model_name_or_path} is a {config.model_type!r} checkpoint without a classification head "
            f"({config.architectures}). Fine-tune it first (recipes/finetune.py) or pick a classifier."
        )
    return AutoModelForImageClassification.from_pretrained(model_name_or_path).eval()


def _settings(model):
    from .processing import data_settings

    return data_settings(model)


def _probabilities(logits: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    return logits.softmax(-1) if problem_type == "single_label_classification" else logits.sigmoid()


def predict_files(
    model, paths: Sequence[Path], batch_size: int = 16, fast: bool = True
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Probabilities per finding for each readable file; unreadable ones are listed, not fatal."""
    from .inference import fast_classifier

    settings = _settings(model)
    transform = create_transform(settings, "eval")
    run = fast_classifier(model) if fast else None
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    results, failures = [], []
    for start in range(0, len(paths), batch_size):
        batch, kept = [], []
        for path in paths[start : start + batch_size]:
            try:
                batch.append(transform(read_xray(path)))
                kept.append(path)
            except Exception as err:  # a bad file must not stop the others
                failures.append((str(path), str(err)))
                logger.error("Cannot read %s: %s", path, err)
        if not batch:
            continue
        pixels = torch.stack(batch).expand(-1, settings.num_channels, -1, -1)
        with torch.no_grad():
            logits = run(pixels) if run else model(pixel_values=pixels).logits
        probs = _probabilities(logits.float(), model.config.problem_type)
        for path, row in zip(kept, probs.tolist(), strict=True):
            results.append(Prediction(str(path), dict(zip(names, row, strict=True))))
    return results, failures


def grad_cam(model, pixel_values: torch.Tensor, index: int) -> np.ndarray:
    """Grad-CAM on the output tokens of the last transformer block: a (grid, grid) map in [0, 1]."""
    if getattr(model.config, "model_type", None) != "beit":
        raise ValueError(
            "Heatmaps are implemented for ViT classifiers (BEiT checkpoints from hf-cxr-mae)."
        )
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = model(pixel_values=pixel_values, output_hidden_states=True)
        tokens = out.hidden_states[-1]
        tokens.retain_grad()
        out.logits[0, index].backward()
    patches, grads = tokens[0, 1:].detach(), tokens.grad[0, 1:]
    cam = torch.relu((patches * grads.mean(0)).sum(-1))
    grid = math.isqrt(cam.numel())
    cam = cam.reshape(grid, grid)
    return (cam / cam.max()).numpy() if cam.max() > 0 else cam.numpy()


def heatmap_overlay(
    image: Image.Image, cam: np.ndarray, settings, max_side: int = 1024
) -> Image.Image:
    """The X-ray (its own aspect ratio) with the map drawn over the centre crop the model saw."""
    import matplotlib

    width, height = image.size
    shrink = min(1.0, max_side / max(width, height))
    shown = image.convert("L").resize(
        (max(1, round(width * shrink)), max(1, round(height * shrink))), Image.BICUBIC
    )
    w, h = shown.size
    # The eval transform: shortest side -> image_size / crop_pct, then a centre crop of image_size.
    crop = min(w, h) * settings.crop_pct
    left, top = (w - crop) / 2, (h - crop) / 2
    heat = np.zeros((h, w), dtype=np.float32)
    box = (round(left), round(top), round(left + crop), round(top + crop))
    patch = Image.fromarray((cam * 255).astype(np.uint8)).resize(
        (box[2] - box[0], box[3] - box[1]), Image.BICUBIC
    )
    heat[box[1] : box[3], box[0] : box[2]] = np.asarray(patch, dtype=np.float32) / 255
    colored = matplotlib.colormaps["inferno"](heat)[..., :3]
    base = np.asarray(shown, dtype=np.float32)[..., None] / 255
    alpha = 0.55 * heat[..., None]
    mixed = (1 - alpha) * base + alpha * colored
    return Image.fromarray((mixed * 255).round().astype(np.uint8))


def write_heatmaps(model, prediction: Prediction, out_dir: Path, top: int = 3) -> list[str]:
    """One PNG per top finding: ``<stem>_<finding>.png``."""
    settings = _settings(model)
    image = read_xray(prediction.path)
    pixels = create_transform(settings, "eval")(image)[None].expand(
        -1, settings.num_channels, -1, -1
    )
    names = list(prediction.probabilities)
    best = sorted(names, key=prediction.probabilities.get, reverse=True)[:top]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in best:
        cam = grad_cam(model, pixels, names.index(name))
        path = out_dir / f"{Path(prediction.path).stem}_{name.replace(' ', '_')}.png"
        heatmap_overlay(image, cam, settings).save(path)
        written.append(str(path))
    return written


def reconstruct_figure(
    model_name_or_path: str, paths: Sequence[Path], mask_ratio: float, seed: int = 0
) -> Image.Image:
    """original | masked | reconstruction | visible + recon., a row per image."""
    from transformers import AutoConfig

    from .configuration import check_setting
    from .modeling import CXRMAEForPreTraining
    from .visualization import reconstruction_grid

    config = AutoConfig.from_pretrained(model_name_or_path)
    if config.model_type != "vit_mae" or "ViTMAEForPreTraining" not in (config.architectures or []):
        raise ValueError(
            f"{model_name_or_path} is not a full MAE (encoder + decoder) checkpoint; reconstruct needs one."
        )
    check_setting("mask_ratio", mask_ratio, flag="--mask-ratio")
    model = CXRMAEForPreTraining.from_pretrained(model_name_or_path, mask_ratio=mask_ratio).eval()
    transform = create_transform(model.config, "eval")
    pixels = torch.stack([transform(read_xray(p)) for p in paths]).expand(
        -1, model.config.num_channels, -1, -1
    )
    return reconstruction_grid(
        model, pixels, seed=seed, scale=max(1, round(256 / model.config.image_size))
    )
