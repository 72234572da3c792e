"""Fidelity to the paper's official protocol, pinned numerically and recomputed here from the
official code's rules: steps per epoch of a ``drop_last`` loader and MAE's LR at every step,
evaluation never dropping images, the paper's hyperparameters as each paper config resolves
them, and the paper configs using the paper's split."""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY
from datasets import Dataset
from helpers import recipe_training_args
from torch.utils.data import DataLoader, DistributedSampler

from hf_cxr_mae.configuration import CXRClassifierConfig, CXRMAEConfig
from hf_cxr_mae.data.chexpert import load_chexpert
from hf_cxr_mae.modeling import CXRMAEForPreTraining, CXRViTForImageClassification
from hf_cxr_mae.training.arguments import (
    DataArguments,
    FinetuneArguments,
    ModelArguments,
    PretrainArguments,
    parse_recipe_args,
)
from hf_cxr_mae.training.trainer import CXRTrainer

REPO = REPO_ROOT


PAPER_CONFIGS = {
    "pretrain_vit_small.yaml": "pretrain",
    "pretrain_vit_base.yaml": "pretrain",
    "finetune_nih14_vit_small.yaml": "finetune",
    "finetune_nih14_densenet121.yaml": "finetune",
}


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_configs_use_the_paper_protocol(name, tmp_path):
    from hf_cxr_mae.training import (
        DataArguments,
        FinetuneArguments,
        ModelArguments,
        PretrainArguments,
    )
    from hf_cxr_mae.training.arguments import parse_recipe_args

    path = REPO / "recipes" / "configs" / name
    kind = PAPER_CONFIGS[name]
    training = PretrainArguments if kind == "pretrain" else FinetuneArguments
    _, data_args, training_args = parse_recipe_args(
        (ModelArguments, DataArguments, training), [str(path), "--output_dir", str(tmp_path)]
    )
    assert data_args.protocol == "paper"
    assert data_args.split_files is None
    # Under the paper's split the validation set is its file: no fraction to carve.
    assert data_args.validation_size is None
    if kind == "pretrain":  # CheXpert pre-trains on frontal views only: the loader's default
        assert "chexpert" in data_args.dataset
        assert data_args.frontal_only in (None, True)
        assert inspect.signature(load_chexpert).parameters["frontal_only"].default is True
    else:  # the best epoch is chosen on validation (never on test)
        assert training_args.load_best_model_at_end and training_args.eval_strategy == "epoch"


CONFIGS = REPO_ROOT / "recipes" / "configs"


# The paper's NIH fine-tuning run: train_official.txt, 8 GPUs x 128, 75 epochs, 5 warmup.
NIH_TRAIN_IMAGES = 75_312


PAPER_GPUS, PAPER_PER_GPU = 8, 128


EPOCHS, WARMUP_EPOCHS, BLR, MIN_LR = 75, 5, 2.5e-4, 1e-5


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
    args = recipe_training_args(
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
        assert recipe_training_args(cls, tmp_path).dataloader_drop_last
    for name in ("pretrain_vit_small.yaml", "finetune_nih14_vit_small.yaml"):
        assert resolve(name, tmp_path)[2].dataloader_drop_last, name


def test_evaluation_never_drops_images_and_a_too_small_training_set_is_refused(tmp_path):
    args = recipe_training_args(
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
