"""Fidelity to the paper's official protocol (issue 13, items 2 and 4-7), pinned numerically.

Every expectation is recomputed here from the official code's rules, not read from ours:
per-step LR of MAE's ``lr_sched`` over a ``drop_last`` loader, timm 0.3.2's ``add_weight_decay``
groups, per-source ``Normalize`` of an RGB-converted grey image, RandAugment's resampling, and
crops of the same box from the full-resolution files (PIL with a float box).
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import NIH_SAMPLE, TINY, _require
from datasets import Dataset, DatasetDict, Image, Value
from PIL import Image as PILImage
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.transforms.v2 import functional as TF

from hf_cxr_mae.configuration import CXRClassifierConfig, CXRMAEConfig
from hf_cxr_mae.data.images import read_xray
from hf_cxr_mae.data.recipe_data import cache_splits, source_transforms
from hf_cxr_mae.data.transforms import (
    BICUBIC,
    AugmentationSeeds,
    CXRCollator,
    batch_transform,
    create_transform,
    example_image,
    to_uint8_tensor,
)
from hf_cxr_mae.modeling import CXRMAEForPreTraining, CXRViTForImageClassification
from hf_cxr_mae.training.arguments import (
    DataArguments,
    FinetuneArguments,
    ModelArguments,
    PretrainArguments,
    parse_recipe_args,
)
from hf_cxr_mae.training.trainer import CXRTrainer

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"

# The paper's NIH fine-tuning run: train_official.txt, 8 GPUs x 128, 75 epochs, 5 warmup.
NIH_TRAIN_IMAGES = 75_312
PAPER_GPUS, PAPER_PER_GPU = 8, 128
EPOCHS, WARMUP_EPOCHS, BLR, MIN_LR = 75, 5, 2.5e-4, 1e-5


def _args(cls, tmp_path, **kw):
    base = {"output_dir": str(tmp_path), "report_to": "none", "use_cpu": True, "bf16": False}
    if cls is FinetuneArguments:  # no eval dataset in these tests
        base |= {"eval_strategy": "no", "load_best_model_at_end": False}
    return cls(**(base | kw))


def _ints(n: int) -> Dataset:
    return Dataset.from_dict({"x": list(range(n))})


RECIPE_CLASSES = {"pretrain": PretrainArguments, "finetune": FinetuneArguments}


def resolve(name: str, tmp_path, *flags: str) -> tuple:
    """A config's arguments as its recipe resolves them (``parse_recipe_args``: HfArgumentParser
    over the file, the dataclass defaults for every key it leaves out)."""
    training = RECIPE_CLASSES[name.split("_")[0]]
    return parse_recipe_args(
        (ModelArguments, DataArguments, training),
        [str(CONFIGS / name), "--output_dir", str(tmp_path), *flags],
    )


# --- item 4: drop_last, steps per epoch, the LR at every step --------------------------------


def official_steps_per_epoch(n: int) -> int:
    """``len(data_loader)`` of the official script on rank 0: DistributedSampler over 8 GPUs,
    batch 128 per GPU, ``drop_last=True``."""
    sampler = DistributedSampler(range(n), num_replicas=PAPER_GPUS, rank=0, shuffle=False)
    return len(DataLoader(range(n), batch_size=PAPER_PER_GPU, sampler=sampler, drop_last=True))


def official_lr(step: int, steps_per_epoch: int, lr: float) -> float:
    """MAE's ``lr_sched.adjust_learning_rate``, called before each step with the fractional
    epoch ``data_iter_step / len(data_loader) + epoch``."""
    epoch = step / steps_per_epoch
    if epoch < WARMUP_EPOCHS:
        return lr * epoch / WARMUP_EPOCHS
    progress = (epoch - WARMUP_EPOCHS) / (EPOCHS - WARMUP_EPOCHS)
    return MIN_LR + (lr - MIN_LR) * 0.5 * (1.0 + math.cos(math.pi * progress))


def test_paper_nih_run_has_floor_steps_per_epoch_and_the_official_lr_at_every_step(tmp_path):
    official = official_steps_per_epoch(NIH_TRAIN_IMAGES)
    assert official == NIH_TRAIN_IMAGES // (PAPER_GPUS * PAPER_PER_GPU) == 73
    # One process with the paper's global batch: the same optimizer steps as 8 x 128.
    args = _args(
        FinetuneArguments,
        tmp_path,
        per_device_train_batch_size=PAPER_GPUS * PAPER_PER_GPU,
        dataloader_num_workers=0,
    )
    assert args.dataloader_drop_last, "the fine-tuning recipe must drop the last partial batch"
    model = CXRViTForImageClassification(CXRClassifierConfig.from_preset(TINY, num_labels=14))
    trainer = CXRTrainer(model=model, args=args, train_dataset=_ints(NIH_TRAIN_IMAGES))
    assert trainer.steps_per_epoch() == official
    steps_per_epoch = len(trainer.get_train_dataloader())  # what the Trainer will run
    assert steps_per_epoch == official
    total = EPOCHS * steps_per_epoch
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(total, trainer.optimizer)
    lr = BLR * PAPER_GPUS * PAPER_PER_GPU / 256
    assert args.learning_rate == pytest.approx(lr)
    ours = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scheduler.step() without optimizer.step()
        for _ in range(total):
            ours.append([g["lr"] / g["lr_scale"] for g in trainer.optimizer.param_groups])
            scheduler.step()
    ours = np.array(ours)
    expected = np.array([official_lr(s, official, lr) for s in range(total)])
    for column in ours.T:  # every layer-decay group follows the same schedule
        np.testing.assert_allclose(column, expected, rtol=1e-9, atol=1e-15)
    # Spot checks at the end of warmup and in the last epoch (where one extra step per epoch
    # shifted the cosine by 24%).
    assert ours[5 * 73, 0] == pytest.approx(lr)
    assert ours[-1, 0] == pytest.approx(official_lr(total - 1, 73, lr), rel=1e-9)


def test_drop_last_is_the_recipe_default_and_what_the_paper_configs_resolve_to(tmp_path):
    for cls in (PretrainArguments, FinetuneArguments):
        assert _args(cls, tmp_path).dataloader_drop_last
    for name in ("pretrain_vit_small.yaml", "finetune_nih14_vit_small.yaml"):
        assert resolve(name, tmp_path)[2].dataloader_drop_last, name


def test_evaluation_never_drops_images_and_a_too_small_training_set_is_refused(tmp_path):
    args = _args(
        FinetuneArguments, tmp_path, per_device_train_batch_size=4, per_device_eval_batch_size=4
    )
    model = CXRMAEForPreTraining(CXRMAEConfig.from_preset(TINY))
    trainer = CXRTrainer(
        model=model,
        args=args,
        train_dataset=_ints(10),
        eval_dataset=_ints(10),
        data_collator=lambda rows: {"n": torch.tensor(len(rows))},
    )
    assert sum(int(b["n"]) for b in trainer.get_train_dataloader()) == 8  # 10 // 4 batches of 4
    assert sum(int(b["n"]) for b in trainer.get_eval_dataloader()) == 10
    assert sum(int(b["n"]) for b in trainer.get_test_dataloader(_ints(10))) == 10
    small = CXRTrainer(model=model, args=args, train_dataset=_ints(3))
    with pytest.raises(ValueError, match="3 images, fewer than one global batch of 4"):
        small.get_train_dataloader()


# --- item 6: pre-training weight decay groups --------------------------------------------------


def test_pretraining_decays_every_matrix_and_the_cls_and_mask_tokens(tmp_path):
    model = CXRMAEForPreTraining(CXRMAEConfig.from_preset(TINY))
    trainer = CXRTrainer(model=model, args=_args(PretrainArguments, tmp_path))
    optimizer = trainer.create_optimizer()
    got = {
        name: group["weight_decay"]
        for group in optimizer.param_groups
        for name in group["param_names"]
    }
    # timm 0.3.2 add_weight_decay (official pre-training): frozen parameters are skipped; 1-D
    # parameters and biases get 0, everything else the weight decay.
    expected = {
        name: 0.0 if param.ndim <= 1 or name.endswith(".bias") else 0.05
        for name, param in model.named_parameters()
        if param.requires_grad
    }
    assert got == expected
    assert got["vit.embeddings.cls_token"] == got["decoder.mask_token"] == 0.05
    assert "vit.embeddings.position_embeddings" not in got  # fixed sin-cos, frozen


def test_pretraining_token_decay_is_an_option_and_finetuning_keeps_its_exemptions(tmp_path):
    model = CXRMAEForPreTraining(CXRMAEConfig.from_preset(TINY))
    args = _args(PretrainArguments, tmp_path, token_weight_decay=False)
    groups = CXRTrainer(model=model, args=args).create_optimizer().param_groups
    decay = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert decay["vit.embeddings.cls_token"] == 0.0  # exempt, as in fine-tuning
    assert decay["decoder.mask_token"] == 0.05
    classifier = CXRViTForImageClassification(CXRClassifierConfig.from_preset(TINY, num_labels=3))
    groups = (
        CXRTrainer(model=classifier, args=_args(FinetuneArguments, tmp_path))
        .create_optimizer()
        .param_groups
    )
    decay = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    cls_names = [n for n in decay if n.endswith("cls_token")]
    assert cls_names and all(decay[n] == 0.0 for n in cls_names)


# --- item 5: RandAugment resampling ------------------------------------------------------------


def _randaug_ops(transform) -> list:
    """The timm RandAugment ops inside a ``create_transform(..., "train")`` closure."""
    cells = [c.cell_contents for c in transform.__closure__ or ()]
    augment = next(c for c in cells if type(c).__name__ == "RandAugment")
    return augment.ops


def test_randaugment_resamples_bicubic_by_default():
    config = CXRMAEConfig.from_preset(TINY)
    ops = _randaug_ops(create_transform(config, "train"))
    geometric = [op for op in ops if op.name in ("Rotate", "ShearX", "ShearY")]
    assert geometric, [op.name for op in ops]
    for op in ops:
        assert op.kwargs["resample"] == PILImage.Resampling.BICUBIC, op.name
    random_ops = _randaug_ops(create_transform(config, "train", randaug_interpolation="random"))
    assert isinstance(random_ops[0].kwargs["resample"], (tuple, list))  # timm's own draw
    data = DataArguments()
    assert data.randaug_interpolation == "bicubic"


def test_randaugment_rotation_output_matches_pil_bicubic():
    """A rotation through our RandAugment op equals PIL's bicubic rotation of the same image."""
    config = CXRMAEConfig.from_preset(TINY)
    rotate = next(
        op for op in _randaug_ops(create_transform(config, "train")) if op.name == "Rotate"
    )
    rng = np.random.default_rng(0)
    image = PILImage.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8))
    rotate.prob, rotate.magnitude_std = 1.0, 0
    random.seed(1)
    out = np.asarray(rotate(image))
    random.seed(1)  # same sign draw
    sign = -1 if random.random() > 0.5 else 1
    angle = sign * rotate.magnitude / 10 * 30
    fill = rotate.kwargs["fillcolor"]
    reference = np.asarray(
        image.rotate(angle, resample=PILImage.Resampling.BICUBIC, fillcolor=fill)
    )
    np.testing.assert_array_equal(out, reference)


# --- item 2: per-source pre-training normalisation ---------------------------------------------

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NIH = ((0.5056,) * 3, (0.252,) * 3)


def _rows(sources: list[str], size: int = 48) -> dict[str, list]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size + 8), dtype=np.uint8) for _ in sources]
    return {
        "pixels": [im.tobytes() for im in images],
        "height": [size] * len(sources),
        "width": [size + 8] * len(sources),
        "source": sources,
        "row_id": list(range(len(sources))),
    }


def test_pretraining_normalises_each_source_as_the_official_code(tmp_path):
    config = CXRMAEConfig.from_preset(TINY)
    data = DataArguments()
    assert data.pretrain_normalization == "per_source"
    crop = (0.5, 1.0)
    rows = _rows(["nih14", "chexpert", "mimic_cxr", "csv"])
    seeds = AugmentationSeeds(3)
    apply = batch_transform(
        create_transform(config, "pretrain", crop_scale=crop),
        seeds=seeds,
        source_transforms=source_transforms(config, data, "pretrain", crop_scale=crop),
    )
    out = apply(rows)["pixel_values"]
    # The same seeded crop as raw grey levels: normalise with mean 0, std 1/255.
    identity = create_transform(config, "pretrain", crop_scale=crop, mean=(0.0,), std=(1 / 255,))
    model_stats = (tuple(config.image_mean), tuple(config.image_std))  # other sources
    expected = [NIH, IMAGENET, IMAGENET, model_stats]
    for i, (source, (mean, std)) in enumerate(zip(rows["source"], expected, strict=True)):
        grey = seeds(i, identity, example_image(rows, i))  # (1, H, W) float grey levels
        assert torch.allclose(grey, grey.round(), atol=1e-3)
        # Official: PIL .convert("RGB") (three equal channels), ToTensor, Normalize(mean, std).
        rgb = grey.round().expand(3, -1, -1) / 255.0
        reference = (rgb - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        got = out[i]
        if got.shape[0] == 1:  # equal channels stay one channel until the batch edge
            assert len(set(mean)) == 1, source
            got = got.expand(3, -1, -1)
        assert got.shape == reference.shape, source
        torch.testing.assert_close(got, reference, atol=1e-5, rtol=0)
    assert out[1].shape[0] == 3  # ImageNet's statistics differ per channel


def test_model_normalisation_option_uses_one_mean_and_std_for_every_source():
    config = CXRMAEConfig.from_preset(TINY)
    data = DataArguments(pretrain_normalization="model")
    apply = batch_transform(
        create_transform(config, "eval"), source_transforms=source_transforms(config, data, "eval")
    )
    out = apply(_rows(["nih14", "chexpert"]))["pixel_values"]
    assert [t.shape[0] for t in out] == [1, 1]
    with pytest.raises(ValueError, match="pretrain_normalization"):
        DataArguments(pretrain_normalization="imagenet")


def test_collator_takes_one_and_three_channel_rows_in_one_batch():
    config = CXRMAEConfig.from_preset(TINY)
    data = DataArguments()
    apply = batch_transform(
        create_transform(config, "eval"), source_transforms=source_transforms(config, data, "eval")
    )
    rows = apply(_rows(["nih14", "chexpert", "nih14"]))["pixel_values"]
    batch = CXRCollator(3)([{"pixel_values": r} for r in rows])["pixel_values"]
    assert batch.shape == (3, 3, config.image_size, config.image_size)
    for i in (0, 2):
        for c in range(3):
            torch.testing.assert_close(batch[i, c], rows[i][0])
    torch.testing.assert_close(batch[1], rows[1])
    with pytest.raises(ValueError, match="2 channels"):
        CXRCollator(3)([{"pixel_values": rows[0]}, {"pixel_values": torch.zeros(2, 32, 32)}])


# --- item 7: the pixel cache keeps the recipe's resolution -------------------------------------

FINE_TUNING_SCALES = (0.08, 0.15, 0.3, 0.5, 0.75, 1.0)
ASPECTS = (3 / 4, 1.0, 4 / 3)  # RandomResizedCrop's ratio range, both ends and the middle


@pytest.fixture(scope="module")
def full_res_subset():
    folder = _require(NIH_SAMPLE / "full-res")
    files = sorted(folder.glob("*.png"))[::8]  # 8 of the 64 full-resolution files
    assert len(files) == 8
    return files


def _default_finetune_cache(files, tmp_path):
    """The cache the fine-tuning recipe builds by default for these files, and its settings."""
    _, data_args, training_args = parse_recipe_args(
        (ModelArguments, DataArguments, FinetuneArguments),
        [
            str(CONFIGS / "finetune_nih14_vit_small.yaml"),
            "--output_dir",
            str(tmp_path / "out"),
            "--cache_dir",
            str(tmp_path / "cache"),
            "--use_cpu",
            "true",
            "--bf16",
            "false",
            "--report_to",
            "none",
        ],
    )
    settings = SimpleNamespace(image_size=224, crop_pct=224 / 256)
    ds = Dataset.from_dict({"image": [str(f) for f in files]}).cast_column("image", Image())
    ds = ds.add_column("source", ["nih14"] * len(files), feature=Value("string"))
    crop_min = data_args.crop_min_scale or 0.08
    cached = cache_splits(DatasetDict(train=ds), data_args, training_args, settings, crop_min)
    return cached["train"], crop_min


def test_default_cache_crops_match_full_resolution_crops_of_the_same_box(full_res_subset, tmp_path):
    cached, crop_min = _default_finetune_cache(full_res_subset, tmp_path)
    assert crop_min == 0.08
    rng = np.random.default_rng(0)
    worst: dict[float, float] = {}
    detail: dict[float, list[float]] = {}
    for i, path in enumerate(full_res_subset):
        row = cached[i]
        small = to_uint8_tensor(example_image({k: [v] for k, v in row.items()}, 0))
        full = read_xray(path)
        h_c, w_c = small.shape[-2:]
        ratio = full.size[0] / w_c
        for scale in FINE_TUNING_SCALES:
            for aspect in ASPECTS:
                # A box RandomResizedCrop could draw on the cached image at this scale.
                area = scale * h_c * w_c
                w = min(w_c, round(math.sqrt(area * aspect)))
                h = min(h_c, round(math.sqrt(area / aspect)))
                top, left = int(rng.integers(0, h_c - h + 1)), int(rng.integers(0, w_c - w + 1))
                ours = TF.resized_crop(
                    small, top, left, h, w, [224, 224], interpolation=BICUBIC, antialias=True
                )[0].numpy()
                # The same box on the full-resolution file, through PIL (the official path).
                box = (left * ratio, top * ratio, (left + w) * ratio, (top + h) * ratio)
                reference = np.asarray(
                    full.resize((224, 224), PILImage.Resampling.BICUBIC, box=box)
                )
                diff = float(np.abs(ours.astype(float) - reference).mean())
                worst[scale] = max(worst.get(scale, 0.0), diff)
                detail.setdefault(scale, []).append(_retained_detail(ours, reference))
    assert all(d <= 2.0 for d in worst.values()), worst
    # Grey levels alone hide blur on smooth radiographs: most of the reference's fine detail
    # must be there too (a 320 px cache keeps about 0.2 of it at scale 0.08).
    mean_detail = {scale: float(np.mean(v)) for scale, v in detail.items()}
    assert all(d >= 0.8 for d in mean_detail.values()), mean_detail


def _high_pass(image: np.ndarray) -> np.ndarray:
    """The image minus its 3x3 box blur (edge-padded): its finest detail."""
    a = image.astype(float)
    padded = np.pad(a, 1, mode="edge")
    h, w = a.shape
    blur = sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0
    return a - blur


def _retained_detail(ours: np.ndarray, reference: np.ndarray) -> float:
    """The share of the reference's fine detail that ``ours`` reproduces (1: all of it)."""
    mine, theirs = _high_pass(ours), _high_pass(reference)
    return float((mine * theirs).sum() / (theirs * theirs).sum())


def test_cache_size_follows_the_crops_and_a_smaller_one_warns(full_res_subset, tmp_path, caplog):
    from hf_cxr_mae.data.cache import cache_size_for, estimate_cache_bytes

    assert cache_size_for(224, 0.08, 256) == math.ceil(224 / math.sqrt(0.08)) == 792
    assert cache_size_for(224, 0.5, 256) == 317
    assert cache_size_for(224, 1.0, 256) == 256  # the eval resize needs 256
    ds = Dataset.from_dict({"image": [str(f) for f in full_res_subset]}).cast_column(
        "image", Image()
    )
    # Headers only: 1024 x 1024 files shrink to 792 x 792 (capped at the original for 2000).
    assert estimate_cache_bytes(ds, 792) == len(full_res_subset) * 792 * 792
    assert estimate_cache_bytes(ds, 2000) == len(full_res_subset) * 1024 * 1024
    settings = SimpleNamespace(image_size=224, crop_pct=224 / 256)
    training_args = _args(FinetuneArguments, tmp_path)
    splits = DatasetDict(train=ds.select(range(2)), validation=ds.select(range(2, 4)))
    data_args = DataArguments(cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="hf_cxr_mae"):
        cached = cache_splits(splits, data_args, training_args, settings, 0.08)
    # The disk cost is printed before building: 2 images of 792^2 and 2 of 256^2 bytes.
    assert f"about {2 * 792 * 792 / 1e6:.1f} MB on disk" in caplog.text
    assert f"about {2 * 256 * 256 / 1e3:.1f} kB on disk" in caplog.text
    assert "below" not in caplog.text
    assert {cached["train"][0]["height"], cached["validation"][0]["height"]} == {792, 256}
    assert cached["train"][0]["height"] == 792
    # Evaluation through the cache is the evaluation of the file itself, pixel for pixel.
    config = CXRMAEConfig.from_preset("vit-small-patch16-dec512d2b")
    evaluate = create_transform(config, "eval")
    for i in range(2):
        row = {k: [v] for k, v in cached["validation"][i].items()}
        from_cache = evaluate(example_image(row, 0))
        from_file = evaluate(read_xray(full_res_subset[2 + i]))
        assert torch.equal(from_cache, from_file)
    caplog.clear()
    small = DataArguments(cache_size=320, cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="hf_cxr_mae"):
        cached = cache_splits(
            DatasetDict(train=ds.select(range(2))), small, training_args, settings, 0.08
        )
    assert cached["train"][0]["height"] == 320
    assert "below the 792 px" in caplog.text


# --- the pieces together: a pre-training run over NIH and CheXpert ----------------------------


def test_pretraining_on_nih_and_chexpert_collates_one_and_three_channel_rows(
    nih_dir, shared_data, tmp_path, monkeypatch
):
    import csv

    from recipe_utils import recipe

    labels = shared_data / "chexpert-labels-sample" / "train.csv"
    root = tmp_path / "chexpert"
    rows = list(csv.DictReader(labels.open(newline="")))[:40]
    rng = np.random.default_rng(0)
    for r in rows:  # CheXpert's real label rows, images made here
        path = root / r["Path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(rng.integers(0, 255, (64, 56), dtype=np.uint8)).save(path)
    (root / "CheXpert-v1.0-small" / "train.csv").write_text(
        "".join(labels.read_text().splitlines(keepends=True)[:41])
    )
    channels: list[set[int]] = []
    collate = CXRCollator.__call__

    def spy(self, examples):
        channels.append({e["pixel_values"].shape[0] for e in examples})
        return collate(self, examples)

    monkeypatch.setattr(CXRCollator, "__call__", spy)
    metrics = recipe("pretrain").main(
        ["--dataset", "chexpert", "nih14", "--data_dir", str(root), str(nih_dir),
         "--image_dir", "images", "--frontal_only", "true", "--preset", TINY,
         "--per_device_train_batch_size", "16", "--max_steps", "3", "--max_eval_samples", "8",
         "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"),
         "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
         "--dataloader_num_workers", "0"]
    )  # fmt: skip
    assert {1, 3} in channels  # NIH rows stay one channel, CheXpert rows have ImageNet's three
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["eval_loss"])


# --- the paper's hyperparameters, as each paper config resolves them ---------------------------

# lambert-x/medical_mae PRETRAIN.md (the two ViT commands) and main_pretrain_multi_datasets_xray.py
# (its defaults: min_lr 0, AdamW betas (0.9, 0.95), no clipping, seed 0, drop_last loader, per-source
# Normalize, timm's add_weight_decay that decays the 3-D cls / mask tokens). Paper (arXiv
# 2210.12843): mask 90%, RandomResizedCrop 0.5-1.0, 800 epochs on 8 GPUs x 256.
PAPER_PRETRAIN = {
    "mask_ratio": 0.9, "norm_pix_loss": False, "num_train_epochs": 800, "warmup_epochs": 40,
    "blr": 1.5e-4, "min_lr": 0.0, "weight_decay": 0.05, "adam_beta1": 0.9, "adam_beta2": 0.95,
    "per_device_train_batch_size": 256, "gradient_accumulation_steps": 1, "max_grad_norm": 0.0,
    "dataloader_drop_last": True, "token_weight_decay": True, "pretrain_normalization": "per_source",
    "crop_min_scale": None,  # None: the pre-training recipe's 0.5 (checked below, through the run)
    "seed": 0, "protocol": "paper",
}  # fmt: skip
# FINETUNE.md (the ViT-S command) and main_finetune_chestxray.py (its defaults: AdamW betas
# (0.9, 0.999), no clipping, global pooling, no label smoothing without mixup, seed 0, drop_last).
PAPER_FINETUNE = {
    "num_train_epochs": 75, "warmup_epochs": 5, "blr": 2.5e-4, "min_lr": 1e-5, "layer_decay": 0.55,
    "weight_decay": 0.05, "adam_beta1": 0.9, "adam_beta2": 0.999, "per_device_train_batch_size": 128,
    "gradient_accumulation_steps": 1, "max_grad_norm": 0.0, "label_smoothing_factor": 0.0,
    "drop_path_rate": 0.2, "pooling": "mean", "auto_augment": "rand-m6-mstd0.5-inc1",
    "randaug_interpolation": "bicubic", "mixup": 0.0, "cutmix": 0.0, "reprob": 0.0,
    "crop_min_scale": None,  # None: timm's RandomResizedCrop scale (0.08, 1.0), as the official
    "dataloader_drop_last": True, "load_best_model_at_end": True, "metric_for_best_model": "mauc",
    "seed": 0,
}  # fmt: skip
# main_linprobe_chestxray.py's defaults (the paper reports no linear probe; its repository has one).
OFFICIAL_LINPROBE = {
    "per_device_train_batch_size": 512, "num_train_epochs": 90, "warmup_epochs": 10, "blr": 0.1,
    "min_lr": 0.0, "weight_decay": 0.0, "dataloader_drop_last": True,
}  # fmt: skip
PAPER_RUNS = {
    "pretrain_vit_small.yaml": PAPER_PRETRAIN
    | {"preset": "vit-small-patch16-dec512d2b", "dataset": ["nih14", "chexpert"]},
    "pretrain_vit_base.yaml": PAPER_PRETRAIN
    | {"preset": "vit-base-patch16-dec512d8b", "dataset": ["nih14", "chexpert", "mimic_cxr"]},
    "finetune_nih14_vit_small.yaml": PAPER_FINETUNE | {"dataset": ["nih14"], "protocol": "paper"},
    "finetune_chexpert_vit_small.yaml": PAPER_FINETUNE | {"dataset": ["chexpert"]},
    "finetune_covidx_vit_small.yaml": PAPER_FINETUNE
    | {"dataset": ["covidx"], "metric_for_best_model": "accuracy"},
    # FINETUNE.md's DenseNet-121 command: --drop_path 0 and no --layer_decay (its optimizer builds
    # plain weight-decay groups for a CNN: no layer-wise decay).
    "finetune_nih14_densenet121.yaml": PAPER_FINETUNE
    | {"architecture": "densenet121", "drop_path_rate": 0.0, "layer_decay": 1.0}
    | {"dataset": ["nih14"], "protocol": "paper"},
}
# What the loaders get where a config leaves an option out: their own defaults, the paper's.
PAPER_SOURCE_OPTIONS = {
    "chexpert": {"findings": "competition", "uncertainty": "paper", "frontal_only": True},
    "mimic_cxr": {"views": ("PA", "AP"), "labeler": "chexpert"},
}


def _resolved_value(name: str, arg_objects: tuple):
    holders = [a for a in arg_objects if hasattr(a, name)]
    assert holders, f"no argument {name!r}"
    value = getattr(holders[0], name)
    return getattr(value, "value", value)  # enums


@pytest.mark.parametrize("name", sorted(PAPER_RUNS))
def test_paper_configs_resolve_to_the_paper_hyperparameters(name, tmp_path):
    import inspect

    from hf_cxr_mae.data.loading import SOURCES

    arg_objects = resolve(name, tmp_path)
    model, data, train = arg_objects
    resolved = {key: _resolved_value(key, arg_objects) for key in PAPER_RUNS[name]}
    assert resolved == PAPER_RUNS[name]
    # The absolute LR follows the effective batch (one process here; 8 GPUs in the paper).
    assert train.learning_rate == pytest.approx(train.blr * train.per_device_train_batch_size / 256)
    if name.startswith("pretrain"):  # 224 px, 16 px patches: the preset's
        config = CXRMAEConfig.from_preset(model.preset)
        assert (model.image_size, config.image_size, config.patch_size) == (None, 224, 16)
    for source in data.dataset:
        loader = inspect.signature(SOURCES[source]).parameters
        given = data.source_options()
        for option, paper in PAPER_SOURCE_OPTIONS.get(source, {}).items():
            used = given.get(option, loader[option].default)
            assert (tuple(used) if isinstance(used, list) else used) == paper, (source, option)


def test_pretraining_crops_at_the_papers_scale_when_the_config_names_none(tmp_path, monkeypatch):
    """The paper configs leave crop_min_scale out: the pre-training run itself must crop at
    (0.5, 1.0) (fine-tuning keeps timm's 0.08)."""
    from hf_cxr_mae.training import pretrain

    class Stop(Exception):
        pass

    seen = {}

    def capture(splits, data_args, training_args, settings, crop_min):
        seen["crop_min"] = crop_min
        raise Stop  # the crop is known; no need to read data or train

    monkeypatch.setattr(pretrain, "load_pretraining_images", lambda *a: (None, None))
    monkeypatch.setattr(pretrain, "cache_splits", capture)
    model, data, train = resolve(
        "pretrain_vit_small.yaml", tmp_path, "--preset", TINY, "--report_to", "none"
    )
    assert data.crop_min_scale is None
    with pytest.raises(Stop):
        pretrain.run_pretrain(model, data, train)
    assert seen["crop_min"] == 0.5


def test_linear_probe_defaults_are_the_official_scripts():
    from hf_cxr_mae.training.arguments import LinprobeArguments

    args = LinprobeArguments(output_dir="unused")
    got = {name: getattr(args, name) for name in OFFICIAL_LINPROBE}
    assert got == OFFICIAL_LINPROBE
