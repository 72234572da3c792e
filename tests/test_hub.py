import argparse
import json
import os
import re
import subprocess
import sys
from functools import partial

import huggingface_hub.constants
import numpy as np
import pytest
import torch
import yaml
from hub_server import FakeHub
from PIL import Image
from recipe_utils import TINY_TRAIN, recipe
from safetensors.torch import save_file
from timm.models.vision_transformer import Block, VisionTransformer
from transformers import AutoModel, AutoModelForImageClassification

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.convert import convert_checkpoint
from hf_cxr_mae.data import NIH14_LABELS
from hf_cxr_mae.hub_push import push_folder
from hf_cxr_mae.modeling import CXRMAEForPreTraining

NORM = partial(torch.nn.LayerNorm, eps=1e-6)


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.2)
    return module.eval()


def timm_classifier(global_pool: str = "avg") -> VisionTransformer:
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


SECTIONS = [
    "## Model description",
    "## How to use",
    "## Evaluation",
    "## Intended use",
    "### Out-of-scope use",
    "## Limitations and bias",
    "## Citation",
]


def split_card(text: str) -> tuple[dict, str]:
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert match, "card must start with YAML metadata"
    return yaml.safe_load(match.group(1)), match.group(2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub_runs")
    demo = ["--demo_size", "48", "--max_eval_samples", "32", "--pixel_cache", "false"]
    recipe("pretrain").main(
        [
            *TINY_TRAIN,
            *demo,
            "--output_dir",
            str(root / "mae"),
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
        ]
    )
    recipe("finetune").main(
        [
            *TINY_TRAIN,
            *demo,
            "--model_name_or_path",
            str(root / "mae"),
            "--output_dir",
            str(root / "ft"),
            "--max_steps",
            "2",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "steps",
            "--save_steps",
            "2",
            "--load_best_model_at_end",
            "false",
            "--blr",
            "1e-3",
        ]
    )
    return root


def test_card_of_a_training_run(trained):
    meta, body = split_card((trained / "ft" / "README.md").read_text())
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-classification"
    assert set(meta["tags"]) >= {
        "chest-x-ray",
        "medical-imaging",
        "masked-autoencoder",
        "vision-transformer",
    }
    assert meta["license"]
    results = meta["model-index"][0]["results"][0]
    assert results["dataset"]["split"] == "test"
    metrics = json.loads((trained / "ft" / "metrics.json").read_text())
    values = {m["name"]: m["value"] for m in results["metrics"]}
    assert values["mAUC (mean AUROC)"] == pytest.approx(round(metrics["mauc"], 4))
    for name, value in metrics["auroc"].items():
        assert values[f"AUROC {name}"] == pytest.approx(round(value, 4))
    positions = [body.index(s) for s in SECTIONS]
    assert positions == sorted(positions), "sections out of order"
    assert "not a medical device" in body and "| blr | 0.001 |" in body and "DEMO" in body
    # The test numbers come from a model chosen without the test set, and the card says so.
    assert "Model selection (the best\nepoch) used the validation split only" in body
    assert "base_model" not in meta  # a local folder is not a Hub id; no local path leaks
    for path in (trained / "ft").glob("*.json"):
        assert str(trained) not in path.read_text(), path
    assert str(trained) not in (trained / "ft" / "README.md").read_text()
    meta, _ = split_card((trained / "mae" / "README.md").read_text())
    assert meta["pipeline_tag"] == "image-feature-extraction"


def test_card_of_a_conversion_says_reported(tmp_path):
    state = timm_classifier().state_dict()
    save_file(state, tmp_path / "vit.safetensors")
    out = tmp_path / "conv"
    convert_checkpoint(tmp_path / "vit.safetensors", out, labels="nih14")
    meta, body = split_card((out / "README.md").read_text())
    assert "model-index" not in meta  # nothing measured, nothing claimed
    assert "vit.safetensors" in body and "Not measured by us" in body
    assert [s for s in SECTIONS if s not in body] == []


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def use(hub):
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)

    return use


def test_push_sends_the_model_files_only(trained, online):
    (trained / "ft" / "secrets.txt").write_text("hf_token")
    with FakeHub() as hub:
        online(hub)
        url = push_folder(trained / "ft", "org/cxr-vit", token="hf_notreal", backoff=0.01)
    assert url and url.endswith("a" * 40)
    files = set(hub.commits[0]["files"])
    assert files == {
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "training_args.json",
        "metrics.json",
        "all_results.json",
        "report.md",  # the test report, with its figures
        "roc.png",
        "reliability.png",
        "subgroups.png",
    }
    for name in ("config.json", "training_args.json", "README.md"):
        text = hub.commits[0]["files"][name].decode()
        assert "hf_notreal" not in text and str(trained) not in text, name


def test_push_retries_after_server_errors(trained, online):
    with FakeHub(fail_first=2) as hub:
        online(hub)
        url = push_folder(trained / "ft", "org/cxr-vit", backoff=0.01)
    assert url and url.endswith("a" * 40)  # the commit made after the two failures
    assert sum(path.startswith("/api/repos/create") for _, path in hub.requests) == 3
    assert len(hub.commits) == 1


def test_a_hub_outage_never_stops_training(trained, online, tmp_path, caplog):
    out = tmp_path / "ft"
    with FakeHub(always_fail=True) as hub:
        online(hub)
        metrics = recipe("finetune").main(
            [*TINY_TRAIN, "--demo_size", "48", "--max_eval_samples", "32", "--pixel_cache", "false", "--model_name_or_path", str(trained / "mae"),
             "--output_dir", str(out), "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "1",
             "--load_best_model_at_end", "false", "--push_to_hub", "--hub_model_id", "org/never", "--push_retries", "1"]
        )  # fmt: skip
    # Training went on to the end: the test split was scored and its report written.
    assert metrics["test_mauc"] == pytest.approx(
        json.loads((out / "metrics.json").read_text())["mauc"], abs=1e-6
    )
    assert (out / "model.safetensors").is_file() and (
        out / "checkpoint-2" / "model.safetensors"
    ).is_file()
    assert "failed" in caplog.text and "local copy is intact" in caplog.text
    assert any("/commit/" in path or "/repos/create" in path for _, path in hub.requests)


def test_offline_load_by_repo_id_from_the_hub_cache(trained, tmp_path):
    """The Hub's cache layout, no network: AutoModel, AutoModelForImageClassification, pipeline."""
    cache = tmp_path / "hf_home" / "hub"
    for repo, folder in (
        ("org/cxr-mae", trained / "mae"),
        ("org/cxr-vit", trained / "ft"),
    ):
        root = cache / f"models--{repo.replace('/', '--')}"
        snapshot = root / "snapshots" / ("b" * 40)
        snapshot.mkdir(parents=True)
        for file in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
            (snapshot / file).write_bytes((folder / file).read_bytes())
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text("b" * 40)
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 80), dtype=np.uint8)).save(image)
    script = (
        "import json\n"
        "from transformers import AutoModel, AutoModelForImageClassification, pipeline\n"
        "enc = AutoModel.from_pretrained('org/cxr-mae')\n"
        "clf = AutoModelForImageClassification.from_pretrained('org/cxr-vit')\n"
        f"scores = pipeline('image-classification', model='org/cxr-vit', top_k=4)({str(image)!r})\n"
        "print('RESULT', json.dumps({'enc': type(enc).__name__, 'clf': type(clf).__name__, 'scores': scores}))\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["enc"] == "ViTMAEModel" and result["clf"] == "BeitForImageClassification"
    assert len(result["scores"]) == 4 and all(0 < s["score"] < 1 for s in result["scores"])
    assert abs(sum(s["score"] for s in result["scores"]) - 1) > 1e-3  # sigmoids, not a softmax


def test_hub_strategy_every_save_pushes_each_checkpoint(trained, online, tmp_path):
    with FakeHub() as hub:
        online(hub)
        recipe("finetune").main(
            [*TINY_TRAIN, "--demo_size", "48", "--max_eval_samples", "16", "--pixel_cache", "false", "--model_name_or_path", str(trained / "mae"),
             "--output_dir", str(tmp_path / "ft"), "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "1",
             "--load_best_model_at_end", "false", "--push_to_hub", "--hub_model_id", "org/live", "--hub_strategy", "every_save"]
        )  # fmt: skip
    messages = [c["header"]["summary"] for c in hub.commits]
    assert messages == [
        "Training in progress, step 1",
        "Training in progress, step 2",
        "Upload model from hf-cxr-mae",
    ]
    assert (
        "model.safetensors" in hub.commits[0]["files"]
        and "optimizer.pt" not in hub.commits[0]["files"]
    )
    assert {"README.md", "example.png"} <= set(hub.commits[-1]["files"])
