"""A ViT-S/16 classifier fine-tuned for a few minutes on the NIH sample, for accuracy checks.

    python benchmarks/finetuned_vit_s.py [--data_dir ../shared/data/nih-cxr14-sample]

Trained by the fine-tuning recipe (``recipes/finetune.py``, run as a user runs it) from scratch
(``--preset vit-small-patch16``, 224 px) on the train part of the 500-image NIH ChestX-ray14
sample (``train_val_list.txt`` less the patient-disjoint validation split the loader carves),
``FINETUNE_FLAGS`` below: about 3-4 minutes on 2 quiet CPU cores (3 s a step). The folder
(default ``out/bench/finetuned-vit-s-STEPS``) is reused by later runs when it holds a model
trained with the same flags (``bench_flags.json``).

Measured limitation: a ViT started from random weights gives nearly the same logits to every
image (std across images about 1e-3), and a few minutes on 360 images do not change that (20
steps at 5e-5 and 60 at 3e-4 alike). Its accuracy comparison then measures rounding of tied
ranks, not accuracy; ``inference.py`` prints this spread and says so. A meaningful figure needs
a classifier fine-tuned from pre-trained weights (``inference.py --accuracy_model FOLDER``).

``with_fitted_head`` refits the head by logistic regression on the model's own pooled features:
its logits then vary (std 1.4 across images, mAUC 0.567 on the 100 held-out images), but only by
amplifying feature differences smaller than int8 rounding, so the int8 exports of it disagree
with fp32 (max probability difference 0.27-0.34 with per-tensor or per-channel weights) and
``export`` refuses them, as it should. The accuracy cost of int8 on a trained encoder, whose
features differ between X-rays far more, needs one (``--accuracy_model``).

``held_out_images`` gives the ``test_list.txt`` part (100 images), preprocessed as ``predict``
does, with their labels: what ``benchmarks/inference.py`` scores the ONNX variants on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "nih-cxr14-sample"
OUT_ROOT = ROOT / "out" / "bench"  # ignored by git; one folder per step count
DEFAULT_STEPS = 40  # batch 32: about 3.5 epochs of the 360 training images
FINETUNE_FLAGS = [
    "--preset", "vit-small-patch16",
    "--per_device_train_batch_size", "32",
    "--per_device_eval_batch_size", "50",
    # Low: at 3e-4 the 60-step run collapsed to one output for every image (logit spread 5e-4
    # across the held-out set), which no accuracy comparison can use.
    "--learning_rate", "5e-5",
    "--warmup_epochs", "1",
    "--layer_decay", "1.0",  # from scratch: no pre-trained layers to protect
    "--drop_path_rate", "0.0",
    "--auto_augment", "",
    "--pixel_cache", "false",
    "--eval_strategy", "no",
    "--save_strategy", "no",
    "--load_best_model_at_end", "false",
    "--dataloader_num_workers", "0",
    "--logging_steps", "10",
    "--report_to", "none",
    "--seed", "0",
]  # fmt: skip


def finetuned_vit_s(
    data_dir: Path = DEFAULT_DATA, out: Path | None = None, steps: int = DEFAULT_STEPS
) -> Path:
    """The fine-tuned model's folder (default ``out/bench/finetuned-vit-s-STEPS``): reused when
    it holds a model trained with these flags, else trained now."""
    data_dir = Path(data_dir)
    out = Path(out) if out is not None else OUT_ROOT / f"finetuned-vit-s-{steps}"
    if not (data_dir / "Data_Entry_2017.csv").is_file():
        raise FileNotFoundError(
            f"No NIH sample at {data_dir} (Data_Entry_2017.csv missing): pass --data_dir."
        )
    flags = [
        "--dataset", "nih14", "--data_dir", str(data_dir.resolve()), "--image_dir", "images",
        "--max_steps", str(steps), *FINETUNE_FLAGS,
    ]  # fmt: skip
    record = out / "bench_flags.json"
    if (
        (out / "model.safetensors").is_file()
        and record.is_file()
        and json.loads(record.read_text()) == flags
    ):
        return out
    print(f"Fine-tuning ViT-S on {data_dir} into {out} (a few minutes)...", file=sys.stderr)
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # Its log (steps, loss, images/s) goes to our stderr: the progress of a run of minutes.
    done = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "finetune.py"), "--output_dir", str(out), *flags],
        cwd=ROOT,
        env=env,
        stdout=sys.stderr,
    )
    if done.returncode != 0 or not (out / "model.safetensors").is_file():
        raise RuntimeError(f"Fine-tuning failed (exit {done.returncode}); its log is above.")
    record.write_text(json.dumps(flags))
    print(f"Fine-tuned in {time.perf_counter() - start:.0f} s.", file=sys.stderr)
    return out


def with_fitted_head(model_dir: Path, data_dir: Path = DEFAULT_DATA) -> Path:
    """``model_dir`` with its head refitted by logistic regression (scikit-learn, per finding, on
    standardised pooled features of the sample's train part, the scaling folded back into the
    Linear): a model whose probabilities depend on the image, so that an export's accuracy cost
    is measured on real spread, not on rank ties. Saved beside it (``...-head``), reused."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from hf_cxr_mae.predict import load_classifier

    out = Path(f"{model_dir}-head")
    if (out / "model.safetensors").is_file():
        return out
    model = load_classifier(str(model_dir))
    pixels, targets, names = held_out_images(model, data_dir, split="train")
    with torch.no_grad():
        features = (
            torch.cat(
                [
                    model.beit(pixel_values=torch.from_numpy(pixels[i : i + 32])).pooler_output
                    for i in range(0, len(pixels), 32)
                ]
            )
            .numpy()
            .astype(np.float64)
        )
    mean, std = features.mean(0), features.std(0) + 1e-6
    scaled = (features - mean) / std
    weight = np.zeros((len(names), features.shape[1]))
    bias = np.zeros(len(names))
    for j in range(len(names)):
        y = targets[:, j]
        keep = y != -1
        if len(np.unique(y[keep])) < 2:
            continue  # one class in training: the head stays at zero for it
        fit = LogisticRegression(C=0.1, max_iter=5000).fit(scaled[keep], y[keep])
        weight[j] = fit.coef_[0] / std
        bias[j] = fit.intercept_[0] - (fit.coef_[0] * mean / std).sum()
    order = [model.config.label2id[n] for n in names]
    with torch.no_grad():
        model.classifier.weight[order] = torch.as_tensor(weight, dtype=torch.float32)
        model.classifier.bias[order] = torch.as_tensor(bias, dtype=torch.float32)
    model.save_pretrained(out)
    for name in ("preprocessor_config.json",):
        if (Path(model_dir) / name).is_file():
            (out / name).write_bytes((Path(model_dir) / name).read_bytes())
    return out


def held_out_images(
    model, data_dir: Path = DEFAULT_DATA, split: str = "test", limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(pixel_values (n, C, H, W) float32, targets (n, k), finding names)`` of a split of the NIH
    sample, preprocessed for the classifier ``model`` with its eval transform as ``predict`` does
    (names: the model's labels in order when they are the dataset's, else the dataset's)."""
    import torch

    from hf_cxr_mae.data import label_names, load_cxr_dataset
    from hf_cxr_mae.data.transforms import create_transform, example_image, undecoded_images
    from hf_cxr_mae.processing import data_settings

    settings = data_settings(model)
    transform = create_transform(settings, "eval")
    rows = undecoded_images(load_cxr_dataset("nih14", data_dir, image_dir="images")[split])
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if not set(names) <= set(label_names(rows)):  # a model with other labels (random weights)
        names = label_names(rows)
    table = rows[:]  # columns as lists, the form example_image reads
    pixels = torch.stack([transform(example_image(table, i)) for i in range(len(rows))])
    pixels = pixels.expand(-1, settings.num_channels, -1, -1).contiguous()
    targets = np.array([[labels[n] for n in names] for labels in table["labels"]], dtype=np.float64)
    return pixels.numpy(), targets, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None, help="default out/bench/...")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    args = parser.parse_args()
    folder = finetuned_vit_s(args.data_dir, args.out, args.steps)
    metrics = folder / "metrics.json"
    mauc = json.loads(metrics.read_text()).get("mauc") if metrics.is_file() else None
    print(f"{folder} (test mAUC {mauc})")


if __name__ == "__main__":
    main()
