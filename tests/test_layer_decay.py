import pytest
import torch

from hf_cxr_mae import (
    CXRClassifierConfig,
    CXRMAEConfig,
    CXRMAEForPreTraining,
    CXRViTForImageClassification,
)
from hf_cxr_mae.training.optim import layer_decay_param_groups

TINY = "vit-test-patch8-dec32d1b"


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
