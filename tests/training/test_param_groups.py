"""What the optimizers get (``hf_cxr_mae.training.optim`` and the Trainer): layer-wise LR decay
groups covering each trainable parameter once, and timm's weight-decay groups (pre-training
decays every matrix and the cls / mask tokens; fine-tuning keeps its exemptions)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY
from helpers import recipe_training_args

from hf_cxr_mae import (
    CXRClassifierConfig,
    CXRMAEConfig,
    CXRMAEForPreTraining,
    CXRViTForImageClassification,
)
from hf_cxr_mae.training.arguments import FinetuneArguments, PretrainArguments
from hf_cxr_mae.training.optim import layer_decay_param_groups
from hf_cxr_mae.training.trainer import CXRTrainer


def expected_layer(name: str, depth: int) -> int:
    if name.startswith(("beit.embeddings.", "vit.embeddings.")):
        return 0
    for i in range(depth):
        if name.startswith((f"beit.layers.{i}.", f"vit.layers.{i}.")):
            return i + 1
    return depth + 1


@pytest.mark.parametrize("kind", ["classifier", "mae"])
def test_groups_cover_each_trainable_param_once_with_the_right_scale(kind):
    if kind == "classifier":
        model = CXRViTForImageClassification(CXRClassifierConfig.from_preset(TINY, num_labels=3))
    else:
        model = CXRMAEForPreTraining(CXRMAEConfig.from_preset(TINY))
    groups = layer_decay_param_groups(model, weight_decay=0.05, layer_decay=0.5, lr=1e-3)
    seen = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable) and len(seen) == len(set(seen))
    depth = model.config.num_hidden_layers
    by_name = {n: g for g in groups for n in g["param_names"]}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert name not in by_name  # frozen sin-cos tables stay out
            continue
        group = by_name[name]
        layer = expected_layer(name, depth)
        assert group["lr_scale"] == pytest.approx(0.5 ** (depth + 1 - layer)), name
        assert group["lr"] == pytest.approx(1e-3 * 0.5 ** (depth + 1 - layer)), name
        no_decay = param.ndim == 1 or name.endswith(("position_embeddings", "cls_token"))
        assert group["weight_decay"] == (0.0 if no_decay else 0.05), name


def test_groups_drive_a_real_optimizer():
    model = CXRViTForImageClassification(CXRClassifierConfig.from_preset(TINY, num_labels=3))
    groups = layer_decay_param_groups(model, weight_decay=0.05, layer_decay=0.55, lr=1e-3)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    patch_group = next(
        g for g in optimizer.param_groups if "beit.embeddings.cls_token" in g["param_names"]
    )
    head_group = next(g for g in optimizer.param_groups if "classifier.weight" in g["param_names"])
    assert patch_group["lr"] == pytest.approx(1e-3 * 0.55**3)
    assert head_group["lr"] == pytest.approx(1e-3)
    model(torch.randn(2, 3, 64, 64), labels=torch.ones(2, 3)).loss.backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer.step()
    # AdamW's first step, bias-corrected, is p * (1 - lr * wd) - lr * g / (|g| + eps): check each
    # parameter moved by its own layer's lr and decay (a group ignored by the optimizer, a wrong
    # scale or decay, or a parameter left out of the groups shows here).
    depth = model.config.num_hidden_layers
    for name, param in model.named_parameters():
        lr = 1e-3 * 0.55 ** (depth + 1 - expected_layer(name, depth))
        wd = 0.0 if param.ndim == 1 or name.endswith(("position_embeddings", "cls_token")) else 0.05
        if not param.requires_grad:
            assert torch.equal(param, before[name]), name
            continue
        g = param.grad.double()
        expected = before[name].double() * (1 - lr * wd) - lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(param.double(), expected, atol=1e-6, rtol=0, msg=name)
    assert not torch.equal(model.classifier.weight, before["classifier.weight"])


def test_pretraining_decays_every_matrix_and_the_cls_and_mask_tokens(tmp_path):
    model = CXRMAEForPreTraining(CXRMAEConfig.from_preset(TINY))
    trainer = CXRTrainer(model=model, args=recipe_training_args(PretrainArguments, tmp_path))
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
    args = recipe_training_args(PretrainArguments, tmp_path, token_weight_decay=False)
    groups = CXRTrainer(model=model, args=args).create_optimizer().param_groups
    decay = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert decay["vit.embeddings.cls_token"] == 0.0  # exempt, as in fine-tuning
    assert decay["decoder.mask_token"] == 0.05
    classifier = CXRViTForImageClassification(CXRClassifierConfig.from_preset(TINY, num_labels=3))
    groups = (
        CXRTrainer(model=classifier, args=recipe_training_args(FinetuneArguments, tmp_path))
        .create_optimizer()
        .param_groups
    )
    decay = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    cls_names = [n for n in decay if n.endswith("cls_token")]
    assert cls_names and all(decay[n] == 0.0 for n in cls_names)
