"""The fast bf16 attention kernel (``hf_cxr_mae.attention``) computes the same thing as SDPA and
the fp32 reference: the kernel, the pre-training loss and a few training steps (not timed: see
benchmarks/)."""

import pytest
import torch
from conftest import TINY

from hf_cxr_mae import CXRMAEConfig, CXRMAEForPreTraining
from hf_cxr_mae.attention import cxr_attention_forward, use_fast_attention


def test_attention_kernel_matches_sdpa():
    q, k, v = (torch.randn(2, 4, 50, 16) for _ in range(3))
    module = torch.nn.Module().eval()
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    out, _ = cxr_attention_forward(module, q.bfloat16(), k.bfloat16(), v.bfloat16(), None)
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=3e-2)
    mask = torch.zeros(2, 1, 50, 50)
    mask[..., 40:] = float("-inf")
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(
        1, 2
    )
    out, _ = cxr_attention_forward(
        module, q.bfloat16(), k.bfloat16(), v.bfloat16(), mask.bfloat16()
    )
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("preset", [TINY, "vit-small-patch16-dec512d2b"])
def test_fast_pretraining_loss_matches_fp32_reference(preset):
    config = CXRMAEConfig.from_preset(preset)
    reference = CXRMAEForPreTraining(config).eval()
    fast = use_fast_attention(CXRMAEForPreTraining(config).eval())
    fast.load_state_dict(reference.state_dict())
    size = config.image_size
    x = torch.randn(4, 3, size, size)
    noise = torch.rand(4, (size // config.patch_size) ** 2)
    with torch.no_grad():
        ref = reference(x, noise=noise)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fast(x, noise=noise)
    assert torch.equal(out.mask, ref.mask)
    # bf16 autocast: the loss agrees to 1% (relative); fp32 with the same kernel choice is exact.
    torch.testing.assert_close(out.loss.float(), ref.loss, rtol=1e-2, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(fast(x, noise=noise).loss, ref.loss, rtol=1e-5, atol=1e-6)


def test_fast_training_step_tracks_the_reference():
    config = CXRMAEConfig.from_preset(TINY)
    models = [CXRMAEForPreTraining(config), use_fast_attention(CXRMAEForPreTraining(config))]
    models[1].load_state_dict(models[0].state_dict())
    optims = [
        torch.optim.AdamW(models[0].parameters(), lr=1e-3),
        torch.optim.AdamW(models[1].parameters(), lr=1e-3, fused=True),
    ]
    x, noise = torch.randn(8, 3, 64, 64), torch.rand(8, 64)
    losses = [[], []]
    for _ in range(5):
        for i, (model, opt) in enumerate(zip(models, optims, strict=True)):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=i == 1):
                loss = model(x, noise=noise).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses[i].append(loss.item())
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=2e-2, atol=0)
