"""The MAE pre-training model (``hf_cxr_mae.modeling``): the sin-cos table and the official
initialisation, the loss against a hand computation, a natively loadable checkpoint, training
steps on real images and clear errors for bad input."""

import math

import numpy as np
import pytest
import torch
from conftest import TINY
from helpers import load_nih_batch, mae_sincos_table, patchify_by_hand
from transformers import AutoModel, AutoModelForPreTraining, ViTMAEForPreTraining, ViTMAEModel

from hf_cxr_mae import CXRMAEConfig, CXRMAEForPreTraining, sincos_pos_embed
from hf_cxr_mae.configuration import preset_names


def test_sincos_table_matches_mae_formula():
    for grid, dim in [(14, 384), (14, 512), (8, 64), (3, 8)]:
        ours = sincos_pos_embed(grid, dim)[0].numpy()
        np.testing.assert_allclose(ours, mae_sincos_table(grid, dim), atol=1e-6)


@pytest.mark.parametrize("name", preset_names())
def test_fresh_model_has_official_init(name):
    config = CXRMAEConfig.from_preset(name)
    model = CXRMAEForPreTraining(config)
    grid = config.image_size // config.patch_size
    enc_pos = model.vit.embeddings.position_embeddings
    dec_pos = model.decoder.decoder_pos_embed
    for pos, dim in [(enc_pos, config.hidden_size), (dec_pos, config.decoder_hidden_size)]:
        assert not pos.requires_grad
        np.testing.assert_allclose(pos[0].detach().numpy(), mae_sincos_table(grid, dim), atol=1e-6)
    for token in (model.vit.embeddings.cls_token, model.decoder.mask_token):
        assert token.abs().sum() > 0
        assert abs(token.std().item() - 0.02) < 0.01
    # Every Linear: xavier-uniform (bounded by, and with the std of, U(-a, a)), zero bias.
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for lin in linears[:: max(1, len(linears) // 12)]:
        fan_out, fan_in = lin.weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert lin.weight.abs().max() <= bound + 1e-7
        assert abs(lin.weight.std().item() - bound / math.sqrt(3)) < 0.1 * bound / math.sqrt(3)
        assert torch.all(lin.bias == 0)
    proj = model.vit.embeddings.patch_embeddings.projection.weight
    bound = math.sqrt(6 / (proj[0].numel() + proj.shape[0]))
    assert proj.abs().max() <= bound + 1e-7 and proj.std() > 0.5 * bound / math.sqrt(3)
    for norm in [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]:
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
        assert norm.eps == 1e-6


def test_from_config_has_sincos_too():
    config = CXRMAEConfig.from_preset(TINY)
    model = CXRMAEForPreTraining._from_config(config)
    grid = config.image_size // config.patch_size
    # The exact table, not just a non-zero one (a random or transposed table is non-zero too).
    for pos, dim in [
        (model.vit.embeddings.position_embeddings, config.hidden_size),
        (model.decoder.decoder_pos_embed, config.decoder_hidden_size),
    ]:
        np.testing.assert_allclose(pos[0].detach().numpy(), mae_sincos_table(grid, dim), atol=1e-6)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_equals_hand_computation(norm_pix):
    config = CXRMAEConfig.from_preset(TINY, norm_pix_loss=norm_pix)
    model = CXRMAEForPreTraining(config).eval()
    x = torch.randn(3, 3, 64, 64)
    noise = torch.rand(3, 64)
    out = model(x, noise=noise)
    # Mask by hand: the (1 - ratio) patches with the lowest noise are kept.
    keep = int(64 * (1 - config.mask_ratio))
    mask = torch.ones(3, 64)
    for b in range(3):
        mask[b, noise[b].argsort()[:keep]] = 0
    assert torch.equal(out.mask, mask)
    target = patchify_by_hand(x, 8)
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (
            target.var(-1, keepdim=True) + 1e-6
        ).sqrt()
    per_patch = ((out.logits - target) ** 2).mean(-1)
    expected = per_patch[mask.bool()].mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)


def test_saved_checkpoint_loads_natively(tmp_path):
    model = CXRMAEForPreTraining(CXRMAEConfig.from_preset(TINY)).eval()
    model.save_pretrained(tmp_path)
    x, noise = torch.randn(2, 3, 64, 64), torch.rand(2, 64)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is ViTMAEModel
    torch.testing.assert_close(
        encoder(x, noise=noise).last_hidden_state, model.vit(x, noise=noise).last_hidden_state
    )
    full = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(full) is ViTMAEForPreTraining
    torch.testing.assert_close(full(x, noise=noise).loss, model(x, noise=noise).loss)
    assert full.config.architectures == ["ViTMAEForPreTraining"]
    # Our own class reloads it too, with the frozen sin-cos table intact.
    again = CXRMAEForPreTraining.from_pretrained(tmp_path)
    assert torch.equal(
        again.vit.embeddings.position_embeddings, model.vit.embeddings.position_embeddings
    )


def test_training_steps_lower_masked_loss_on_real_images(nih_dir):
    x = load_nih_batch(nih_dir, 8, 64)
    model = CXRMAEForPreTraining(CXRMAEConfig.from_preset(TINY))
    noise = torch.rand(8, 64)
    with torch.no_grad():
        before = model(x, noise=noise).loss.item()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    for _ in range(40):
        loss = model(x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = model(x, noise=noise).loss.item()
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize(
    "shape, words",
    [
        ((2, 1, 64, 64), r"\(batch, 3, 64, 64\)"),
        ((2, 3, 60, 60), "multiple of the patch size 8"),
        ((2, 3, 72, 72), "Expected 64x64"),
    ],
)
def test_bad_input_is_a_clear_error(shape, words):
    model = CXRMAEForPreTraining(CXRMAEConfig.from_preset(TINY))
    with pytest.raises(ValueError, match=words):
        model(torch.randn(*shape))
