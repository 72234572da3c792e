"""A built-in DEMO dataset: synthetic chest-radiograph-like images with visible findings.

Not X-rays. It exists so that the recipes run end to end with no data at all, and so that a
fine-tuned model has something real to learn: each finding changes the picture in a way a small
ViT can see (an enlarged heart, fluid at a lung base, a round nodule, a collapsed lung edge).
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from .building import labels_feature

DEMO_LABELS = ["Cardiomegaly", "Effusion", "Nodule", "Pneumothorax"]
_PREVALENCE = 0.3


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float
) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def render_chest(
    findings: dict[str, bool], rng: np.random.Generator, size: int = 128
) -> PILImage.Image:
    """One synthetic frontal chest image (mode L) showing the given findings."""
    s = size / 128.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx, k = rng.normal(0, 3) * s, rng.normal(0, 3) * s, rng.uniform(0.92, 1.08)
    yy, xx = (yy - dy - size / 2) / k + size / 2, (xx - dx - size / 2) / k + size / 2
    img = np.full((size, size), 0.05, np.float32)
    img[_ellipse(yy, xx, 70 * s, 64 * s, 62 * s, 58 * s)] = 0.5  # soft tissue
    lungs = [(60 * s, 40 * s), (60 * s, 88 * s)]
    lung_masks = [_ellipse(yy, xx, cy, cx, 38 * s, 19 * s) for cy, cx in lungs]
    for mask in lung_masks:
        img[mask] = 0.2
    ribs = (np.sin((yy + 0.15 * (xx - 64 * s) ** 2 / (8 * s)) / (4.5 * s)) > 0.6) & (
        lung_masks[0] | lung_masks[1]
    )
    img[ribs] += 0.12
    img[(np.abs(xx - 64 * s) < 8 * s) & (yy > 18 * s) & (yy < 96 * s)] = 0.7  # mediastinum
    heart_rx = (27 if findings["Cardiomegaly"] else 17) * s
    img[_ellipse(yy, xx, 84 * s, 70 * s, 15 * s, heart_rx)] = 0.75
    if findings["Effusion"]:
        side = rng.integers(2)
        cy, cx = lungs[side]
        level = cy + rng.uniform(10, 22) * s
        # The fluid line climbs towards the lung edge (a meniscus).
        meniscus = yy > level - 0.03 * np.abs(xx - cx) ** 1.5 / np.sqrt(s)
        img[lung_masks[side] & meniscus] = 0.62
    if findings["Nodule"]:
        side = rng.integers(2)
        cy, cx = lungs[side]
        ny, nx = cy + rng.uniform(-22, 10) * s, cx + rng.uniform(-8, 8) * s
        img[_ellipse(yy, xx, ny, nx, 7 * s, 7 * s)] = 0.85
    if findings["Pneumothorax"]:
        side = rng.integers(2)
        cy, cx = lungs[side]
        edge = (xx - cx) * (1 if side else -1) > rng.uniform(-2, 4) * s  # lateral half of the lung
        apex = yy < cy + rng.uniform(10, 25) * s
        region = lung_masks[side] & edge & apex
        img[region] = 0.03  # air without lung markings
    img = img ** rng.uniform(0.85, 1.15) + rng.normal(0, 0.03, img.shape).astype(np.float32)
    return PILImage.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def make_demo_dataset(
    num_train: int = 480,
    num_validation: int = 96,
    num_test: int = 96,
    size: int = 128,
    seed: int = 0,
) -> DatasetDict:
    """DEMO DATA (synthetic, not X-rays): train / validation / test with ``DEMO_LABELS``, and
    made-up ``sex``, ``age`` and ``view`` (PA / AP) so that subgroup reports run end to end."""
    rng = np.random.default_rng(seed)
    # Its own stream: the images are the same as before the metadata existed.
    meta_rng = np.random.default_rng([seed, 1])
    features = Features(
        {
            "image": Image(),
            "image_id": Value("string"),
            "patient_id": Value("string"),
            "view": Value("string"),
            "sex": Value("string"),
            "age": Value("float32"),
            "labels": labels_feature(DEMO_LABELS),
        }
    )
    splits, start = {}, 0
    for name, count in (("train", num_train), ("validation", num_validation), ("test", num_test)):
        rows = {k: [] for k in features}
        for i in range(start, start + count):
            findings = {n: bool(rng.random() < _PREVALENCE) for n in DEMO_LABELS}
            rows["image"].append(render_chest(findings, rng, size))
            rows["image_id"].append(f"demo/{i:05d}.png")
            rows["patient_id"].append(f"demo-{i:05d}")
            rows["view"].append("AP" if meta_rng.random() < 0.3 else "PA")
            rows["sex"].append("F" if meta_rng.random() < 0.5 else "M")
            rows["age"].append(float(meta_rng.integers(18, 95)))
            rows["labels"].append({n: float(v) for n, v in findings.items()})
        splits[name] = Dataset.from_dict(rows, features=features)
        start += count
    return DatasetDict(splits)
