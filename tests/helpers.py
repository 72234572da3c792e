"""Shared test helpers: reference maths written independently of the library."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from recipe_utils import recipe


def mae_sincos_table(grid: int, dim: int) -> np.ndarray:
    """The MAE paper code's 2-D sin-cos table, recomputed from its formula (cls row of zeros first).

    Per patch at row r, column c (row-major order): the first half of the vector encodes c, the
    second half r; each half is [sin(p * w_k), cos(p * w_k)] with w_k = 10000 ** (-k / (dim / 4)).
    """
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows = []
    for r in range(grid):
        for c in range(grid):
            rows.append(
                np.concatenate(
                    [np.sin(c * freqs), np.cos(c * freqs), np.sin(r * freqs), np.cos(r * freqs)]
                )
            )
    return np.concatenate([np.zeros((1, dim)), np.stack(rows)], axis=0)


def patchify_by_hand(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, patch*patch*C), pixels of each patch in (row, col, channel) order."""
    b, _, h, w = x.shape
    patches = []
    for i in range(h // patch):
        for j in range(w // patch):
            block = x[:, :, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch]
            patches.append(block.permute(0, 2, 3, 1).reshape(b, -1))
    return torch.stack(patches, dim=1)


def load_nih_batch(nih_dir: Path, n: int, size: int) -> torch.Tensor:
    """n real NIH images resized to size x size, normalised with CXR mean/std, 3 channels."""
    files = sorted((nih_dir / "images").glob("*.png"))[:n]
    arrays = []
    for f in files:
        with Image.open(f) as im:
            gray = im.convert("L").resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(gray, dtype=np.float32) / 255.0)
    x = torch.from_numpy(np.stack(arrays))[:, None]
    x = (x - 0.5056) / 0.252
    return x.expand(-1, 3, -1, -1).contiguous()


def tiny_classifier(labels: list[str], head_std: float = 0.5, **config_attributes):
    """A tiny ViT classifier whose head spreads the logits (a fresh head leaves them all near 0);
    ``config_attributes`` are set on its config (e.g. stored operating points)."""
    from hf_cxr_mae import CXRClassifierConfig, CXRViTForImageClassification

    torch.manual_seed(0)
    config = CXRClassifierConfig.from_preset(
        "vit-test-patch8-dec32d1b", id2label=dict(enumerate(labels))
    )
    model = CXRViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, head_std, generator=torch.Generator().manual_seed(1))
    for key, value in config_attributes.items():
        setattr(model.config, key, value)
    return model


def save_classifier(model, folder: Path) -> Path:
    """The model and its image processor, as a fine-tuning run leaves them."""
    from hf_cxr_mae.processing import build_image_processor

    model.save_pretrained(folder)
    build_image_processor(model.config).save_pretrained(folder)
    return folder


def textured_grey(rng: np.random.Generator, period: float = 9.0) -> np.ndarray:
    """A 90 x 120 uint8 picture with smooth structure and noise: resizing and quantisation
    change it measurably (a flat or pure-noise image would hide preprocessing mistakes)."""
    y, x = np.mgrid[0:90, 0:120]
    smooth = 100 + 60 * np.sin(x / period) * np.cos(y / 13.0)
    return (smooth + rng.normal(0, 20, smooth.shape)).clip(0, 255).astype(np.uint8)


TWO_FINDINGS = ["Atelectasis", "Effusion"]


THREE_FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion"]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def saved_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def write_images(root: Path, names: list[str], mode: str = "L") -> None:
    rng = np.random.default_rng(1)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).convert(mode).save(path)


def write_labels_csv(folder, body: str, name: str = "labels.csv"):
    (folder / name).write_text("path,A,B\n" + body)
    return name


def load_labels_csv(folder, name="labels.csv", **kw):
    from hf_cxr_mae.data import load_cxr_dataset

    return load_cxr_dataset("csv", folder, csv_file=name, validation_size=1, **kw)


def recipe_training_args(cls, tmp_path, **kw):
    from hf_cxr_mae.training.arguments import FinetuneArguments

    base = {"output_dir": str(tmp_path), "report_to": "none", "use_cpu": True, "bf16": False}
    if cls is FinetuneArguments:  # no eval dataset in these tests
        base |= {"eval_strategy": "no", "load_best_model_at_end": False}
    return cls(**(base | kw))


def parse_lines(text: str) -> list[tuple[str, list[float]]]:
    """(name, labels) per line, read here without the package's reader."""
    out = []
    for line in text.splitlines():
        if line.strip():
            name, *labels = line.split()
            out.append((name, [float(v) for v in labels]))
    return out


def names_and_labels(ds) -> dict[str, list[float]]:
    from hf_cxr_mae.data import NIH14_LABELS

    rows = ds.remove_columns("image")
    return {Path(r["image_id"]).name: [r["labels"][n] for n in NIH14_LABELS] for r in rows}


NORM = partial(torch.nn.LayerNorm, eps=1e-6)


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.2)
    return module.eval()


def timm_classifier(global_pool: str = "avg"):
    """A small random timm ViT (14 classes) for parity checks against our classifier."""
    from timm.models.vision_transformer import VisionTransformer

    return randomize(
        VisionTransformer(
            img_size=64,
            patch_size=8,
            embed_dim=128,
            depth=2,
            num_heads=2,
            mlp_ratio=2.0,
            qkv_bias=True,
            global_pool=global_pool,
            norm_layer=NORM,
            num_classes=14,
        )
    )


ABC_LABELS = ["A", "B", "C"]


def assert_not_blank(path):
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
        assert image.width > 200 and image.height > 100, image.size
    assert pixels.std() > 5, f"{path} looks blank"


def random_png(path: Path, seed: int, size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


_rng = np.random.default_rng(1234)


def write_unique_images(root: Path, names: list[str], mode: str = "L") -> None:
    """Tiny random images (all different bytes) at ``root / name``."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = _rng.integers(0, 255, (12, 12), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(path)


def csv_folder(tmp_path: Path, body: str, images: list[str], name: str = "labels.csv") -> Path:
    write_unique_images(tmp_path, images)
    (tmp_path / name).write_text(body)
    return tmp_path


def all_ids(dd) -> list[str]:
    return sorted(i for split in dd.values() for i in split["image_id"])


def nih_folder(tmp_path: Path, rows: list[tuple[str, str, str]], train: list[str], test: list[str]):
    """A synthetic NIH release: ``rows`` are (Image Index, Finding Labels, Patient ID)."""
    write_unique_images(tmp_path / "images", sorted({r[0] for r in rows}))
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID,View Position"]
    lines += [f"{name},{findings},0,{pid},PA" for name, findings, pid in rows]
    (tmp_path / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "train_val_list.txt").write_text("".join(f"{n}\n" for n in train))
    (tmp_path / "test_list.txt").write_text("".join(f"{n}\n" for n in test))
    return tmp_path


def chexpert_folder(tmp_path: Path, train: list[str], valid: list[str]) -> Path:
    from hf_cxr_mae.data.labels import CHEXPERT5_LABELS

    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT5_LABELS)
    for name, body in (("train.csv", train), ("valid.csv", valid)):
        (tmp_path / name).write_text(header + "\n" + "\n".join(body) + "\n")
        write_unique_images(tmp_path, [line.split(",")[0] for line in body])
    return tmp_path


PAPER_AUGMENT = "rand-m6-mstd0.5-inc1"  # the default: RandAugment on


def tiny_config(tmp_path: Path, out: Path, **overrides) -> Path:
    """A tiny fine-tune from scratch on 32 DEMO images (4 steps per epoch), written as a JSON config
    so the DEMO recipe's defaults (which switch RandAugment off) are not applied."""
    from conftest import TINY

    settings = {
        "preset": TINY,
        "output_dir": str(out),
        "demo_size": 32,
        "max_eval_samples": 8,
        "pixel_cache": False,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "auto_augment": PAPER_AUGMENT,
        "drop_path_rate": 0.2,
        "max_steps": 6,
        "save_strategy": "steps",
        "save_steps": 3,
        "eval_strategy": "no",
        "load_best_model_at_end": False,
        "logging_steps": 1,
        "dataloader_num_workers": 0,
        "report_to": "none",
        "seed": 5,
        "blr": 0.064,  # 2e-3 at batch 8: large enough that any difference in the draws shows
        "warmup_steps": 1,
        "layer_decay": 1.0,
    }
    settings.update(overrides)
    config = tmp_path / f"{out.name}.json"
    config.write_text(json.dumps(settings))
    return config


def tiny_run(tmp_path: Path, out: Path, **overrides) -> dict:
    return recipe("finetune").main([str(tiny_config(tmp_path, out, **overrides))])


def assert_same_weights(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert left.keys() == right.keys()
    for key in left:
        torch.testing.assert_close(left[key], right[key], atol=1e-6, rtol=0, msg=key)


def run_recipe_from_flags(name: str, tmp_path: Path, argv: list[str]) -> dict:
    """A recipe from flags only: a config file of our own, so the DEMO config (which starts
    fine-tuning from out/demo-pretrain) is not applied."""
    config = tmp_path / "flags-only.json"
    config.write_text(json.dumps({"auto_augment": ""}))
    return recipe(name).main([str(config), *argv])


# Five rows in the NIH release's label-file format: (Image Index, Finding Labels, Patient ID).
NIH_ROWS = [
    ("00000001_000.png", "Effusion", "1"),
    ("00000002_000.png", "No Finding", "2"),
    ("00000003_000.png", "Mass|Nodule", "3"),
    ("00000004_000.png", "No Finding", "4"),
    ("00000005_000.png", "Hernia", "5"),
]


def mann_whitney(y: np.ndarray, s: np.ndarray) -> float:
    """AUROC from its definition: P(positive scores above negative), ties 1/2; -1 targets ignored;
    NaN without both classes."""
    keep = y != -1
    pos, neg = s[keep][y[keep] == 1], s[keep][y[keep] == 0]
    if not (len(pos) and len(neg)):
        return np.nan
    return float(np.mean((pos[:, None] > neg) + 0.5 * (pos[:, None] == neg)))
