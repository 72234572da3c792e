"""Converting official MAE / timm checkpoints (``hf_cxr_mae.convert``): round trips of classifiers
and MAE models, source files recognised by content whatever their suffix, arbitrary pickles and
files claiming more than they hold refused before allocating, unknown keys, label counts and
shapes named in a sentence."""

import argparse
import collections
import pickle
import zipfile
from functools import partial

import pytest
import torch
from helpers import NORM, randomize, timm_classifier
from safetensors.torch import save_file
from timm.models.vision_transformer import Block, VisionTransformer
from transformers import AutoModel, AutoModelForImageClassification

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.convert import convert_checkpoint
from hf_cxr_mae.data import NIH14_LABELS
from hf_cxr_mae.modeling import CXRMAEForPreTraining


class ReferenceMAE(torch.nn.Module):
    """MAE written here from the paper's description, with the official code's parameter names."""

    def __init__(
        self, size=64, patch=8, dim=128, depth=2, heads=2, dec_dim=64, dec_depth=1, dec_heads=16
    ):
        super().__init__()
        self.patch, self.num = patch, (size // patch) ** 2
        self.patch_embed = torch.nn.Module()
        self.patch_embed.proj = torch.nn.Conv2d(3, dim, patch, patch)
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, self.num + 1, dim), requires_grad=False)
        self.blocks = torch.nn.ModuleList(
            [Block(dim, heads, 2.0, qkv_bias=True, norm_layer=NORM) for _ in range(depth)]
        )
        self.norm = NORM(dim)
        self.decoder_embed = torch.nn.Linear(dim, dec_dim)
        self.mask_token = torch.nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.decoder_pos_embed = torch.nn.Parameter(
            torch.zeros(1, self.num + 1, dec_dim), requires_grad=False
        )
        self.decoder_blocks = torch.nn.ModuleList(
            [
                Block(dec_dim, dec_heads, 2.0, qkv_bias=True, norm_layer=NORM)
                for _ in range(dec_depth)
            ]
        )
        self.decoder_norm = NORM(dec_dim)
        self.decoder_pred = torch.nn.Linear(dec_dim, patch * patch * 3)

    def forward(self, images, noise, ratio):
        b = images.shape[0]
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        keep = int(self.num * (1 - ratio))
        shuffle = noise.argsort(dim=1)
        restore = shuffle.argsort(dim=1)
        x = torch.gather(x, 1, shuffle[:, :keep, None].expand(-1, -1, x.shape[-1]))
        mask = torch.ones(b, self.num)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, restore)
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_embed(self.norm(x))
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(b, self.num - keep, -1)], dim=1)
        tokens = torch.gather(tokens, 1, restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        p = self.patch
        target = (
            images.unfold(2, p, p)
            .unfold(3, p, p)
            .permute(0, 2, 3, 4, 5, 1)
            .reshape(b, self.num, -1)
        )
        loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
        return loss, pred, mask


def official_dict(model: torch.nn.Module) -> dict:
    """The official training dictionary: weights under 'model', plus an argparse Namespace."""
    return {
        "model": model.state_dict(),
        "epoch": 799,
        "args": argparse.Namespace(model="mae_vit", blr=1.5e-4),
        "optimizer": {"state": {}},
    }


@pytest.mark.parametrize("pool", ["avg", "token"])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_classifier_conversion_round_trip(tmp_path, pool, fmt):
    reference = timm_classifier(pool)
    source = tmp_path / f"vit-s_nih14.{fmt}"
    if fmt == "pth":
        torch.save(official_dict(reference), source)
    else:
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, source)
    out = tmp_path / "converted"
    cli(["convert", str(source), str(out), "--labels", "nih14"])
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert [model.config.id2label[i] for i in range(14)] == NIH14_LABELS
    assert model.config.use_mean_pooling == (pool == "avg")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x), atol=1e-4, rtol=0)
    card = (out / "README.md").read_text()
    assert source.name in card and "not measured by us" in card.lower()


def test_mae_conversion_round_trip(tmp_path):
    reference = randomize(ReferenceMAE())
    torch.save(official_dict(reference), tmp_path / "mae.pth")
    out = tmp_path / "mae"
    convert_checkpoint(tmp_path / "mae.pth", out)
    ours = CXRMAEForPreTraining.from_pretrained(out).eval()
    assert ours.config.decoder_num_attention_heads == 16 and ours.config.num_attention_heads == 2
    x, noise = torch.randn(2, 3, 64, 64), torch.rand(2, 64)
    with torch.no_grad():
        loss, pred, mask = reference(x, noise, ours.config.mask_ratio)
        out_ours = ours(x, noise=noise)
    torch.testing.assert_close(out_ours.mask, mask)
    torch.testing.assert_close(out_ours.logits, pred, atol=1e-4, rtol=0)
    torch.testing.assert_close(out_ours.loss, loss, atol=1e-4, rtol=0)
    assert type(AutoModel.from_pretrained(out)).__name__ == "ViTMAEModel"


class Payload:
    """Any class beyond tensors: unpickling it could run code."""


def test_arbitrary_pickle_is_refused(tmp_path):
    source = tmp_path / "evil.pth"
    torch.save({"model": timm_classifier().state_dict(), "extra": Payload()}, source)
    with pytest.raises(ValueError, match=r"needs arbitrary unpickling.*refused"):
        convert_checkpoint(source, tmp_path / "out", labels="nih14")
    assert not (tmp_path / "out").exists()


def test_unknown_key_and_label_count_are_reported(tmp_path):
    state = timm_classifier().state_dict()
    save_file({**state, "blocks.0.attn.extra.weight": torch.zeros(1)}, tmp_path / "odd.safetensors")
    with pytest.raises(KeyError, match=r"blocks\.0\.attn\.extra\.weight"):
        convert_checkpoint(tmp_path / "odd.safetensors", tmp_path / "o1", labels="nih14")
    save_file(state, tmp_path / "ok.safetensors")
    with pytest.raises(ValueError, match="14 outputs but 5 labels"):
        convert_checkpoint(tmp_path / "ok.safetensors", tmp_path / "o2", labels="chexpert5")


def small_timm_classifier() -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=1, mlp_ratio=2.0,
        qkv_bias=True, global_pool="avg", norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_classes=3,
    )  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def test_text_file_is_called_text_not_a_pickle_risk(tmp_path):
    source = tmp_path / "vit-s_CXR_0.3M_mae.pth"
    source.write_text("<Error><Code>AccessDenied</Code></Error>\nplease log in\n")
    with pytest.raises(ValueError) as info:
        convert_checkpoint(source, tmp_path / "out")
    message = str(info.value)
    assert "not a PyTorch or safetensors checkpoint: looks like text" in message, message
    assert str(source) in message and "unpickling" not in message
    with pytest.raises(SystemExit, match="looks like text"):  # the CLI: a sentence, no traceback
        cli(["convert", str(source), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["weights.SAFETENSORS", "weights.pth", "weights"])
def test_safetensors_is_recognised_by_content_whatever_the_suffix(tmp_path, name):
    reference = small_timm_classifier()
    source = tmp_path / name
    save_file(state_of(reference), source)
    convert_checkpoint(source, tmp_path / "out", labels="A,B,C")
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x), atol=1e-4, rtol=0)


def test_zip_checkpoint_is_recognised_by_content(tmp_path):
    reference = small_timm_classifier()
    source = tmp_path / "weights.safetensors"  # a torch.save zip wearing the wrong suffix
    torch.save({"model": reference.state_dict()}, source)
    convert_checkpoint(source, tmp_path / "out", labels="A,B,C")
    assert (tmp_path / "out" / "model.safetensors").is_file()


class _Storage:
    """Stands in for a torch storage while writing a hand-made checkpoint pickle."""

    def __init__(self, numel: int) -> None:
        self.numel = numel


class _Tensor:
    def __init__(self, numel: int) -> None:
        self.storage = _Storage(numel)

    def __reduce__(self):
        size = self.storage.numel
        args = (self.storage, 0, (size,), (1,), False, collections.OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):  # what torch.save writes for a float32 storage
            return ("storage", torch.FloatStorage, "0", "cpu", obj.numel)
        return None


def hostile_pth(path, numel: int) -> None:
    """A real torch.save archive whose pickle claims ``numel`` float32 values for a tiny storage."""
    torch.save({"pos_embed": torch.zeros(4)}, path)
    with zipfile.ZipFile(path) as real:
        entries = [(info, real.read(info)) for info in real.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                buffer = __import__("io").BytesIO()
                _Pickler(buffer, protocol=2).dump({"pos_embed": _Tensor(numel)})
                data = buffer.getvalue()
            out.writestr(info.filename, data)


def hostile_legacy_pth(path, numel: int) -> None:
    """The pre-zip torch.save format (storages allocated as the pickle is read), same claim."""
    torch.save({"pos_embed": torch.zeros(4)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    honest = b"K\x04N"  # BININT1 4, NONE: the storage's element count in its persistent id
    assert data.count(honest) == 1
    path.write_bytes(data.replace(honest, b"\x8a\x05" + numel.to_bytes(5, "little") + b"N"))


MAKERS = {"zip": hostile_pth, "legacy": hostile_legacy_pth}


@pytest.mark.parametrize("layout", sorted(MAKERS))
def test_hand_made_checkpoints_load_when_honest(tmp_path, layout):
    """The fixtures are faithful torch files: with an honest count torch loads them."""
    MAKERS[layout](tmp_path / "honest.pth", 4)
    assert torch.load(tmp_path / "honest.pth", weights_only=True)["pos_embed"].shape == (4,)


@pytest.mark.parametrize("layout", sorted(MAKERS))
def test_pth_claiming_terabytes_is_refused_before_allocating(tmp_path, layout):
    source = tmp_path / "small.pth"
    MAKERS[layout](source, 300_000_000_000)  # 1.2 TB of float32
    assert source.stat().st_size < 10_000
    with pytest.raises(ValueError) as info:
        convert_checkpoint(source, tmp_path / "out")
    message = str(info.value)
    assert "1.2 TB" in message and "refused before allocating" in message, message
    assert str(source) in message


def test_safetensors_claiming_more_than_it_holds_is_refused(tmp_path):
    source = tmp_path / "cut.safetensors"
    save_file(state_of(small_timm_classifier()), source)
    source.write_bytes(source.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="truncated or corrupt file; refused before allocating"):
        convert_checkpoint(source, tmp_path / "out", labels="A,B,C")


def test_wrong_tensor_shape_is_a_sentence_naming_key_and_shapes(tmp_path):
    state = state_of(small_timm_classifier())
    state["blocks.1.mlp.fc1.weight"] = torch.zeros(100, 64)  # the architecture says (128, 64)
    save_file(state, tmp_path / "odd.safetensors")
    with pytest.raises(ValueError) as info:
        convert_checkpoint(tmp_path / "odd.safetensors", tmp_path / "out", labels="A,B,C")
    message = str(info.value)
    assert "blocks.1.mlp.fc1.weight: expected shape (128, 64), found (100, 64)" in message, message
    assert "size mismatch" not in message and "odd.safetensors" in message


def test_fused_qkv_of_the_wrong_width_names_the_source_key(tmp_path):
    state = state_of(small_timm_classifier())
    state["blocks.0.attn.qkv.weight"] = torch.zeros(3 * 60, 64)
    save_file(state, tmp_path / "qkv.safetensors")
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv\.weight \(its q_proj part\): "
                       r"expected shape \(64, 64\), found \(60, 64\)"):  # fmt: skip
        convert_checkpoint(tmp_path / "qkv.safetensors", tmp_path / "out", labels="A,B,C")
