"""Per-source pre-training normalisation, as the official code: each source normalised with its own
statistics (one or three channels, collated in one batch), the model-normalisation option, and
reconstruction previews that undo each source's own normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image as PILImage

from hf_cxr_mae.configuration import CXRMAEConfig
from hf_cxr_mae.data.transforms import (
    AugmentationSeeds,
    CXRCollator,
    batch_transform,
    create_transform,
    example_image,
)
from hf_cxr_mae.training.arguments import DataArguments
from hf_cxr_mae.training.data_setup import source_transforms

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


def test_preview_shows_each_source_with_its_own_normalisation():
    """With per-source pre-training normalisation a CheXpert image is normalised with ImageNet's
    statistics; its preview must undo those, not the model's NIH mean / std, or the picture's
    grey levels are wrong (contrast x1.1 and shifted)."""
    import numpy as np
    import torch

    from hf_cxr_mae.configuration import CXRMAEConfig
    from hf_cxr_mae.data.transforms import SOURCE_NORMALIZATION
    from hf_cxr_mae.figures import reconstruction_panels
    from hf_cxr_mae.modeling import CXRMAEForPreTraining

    config = CXRMAEConfig.from_preset("vit-test-patch8-dec32d1b")
    model = CXRMAEForPreTraining(config)
    grey = np.random.default_rng(0).integers(0, 256, (config.image_size,) * 2).astype(np.float32)
    means, stds = SOURCE_NORMALIZATION["chexpert"]
    channels = [
        (grey / 255 - means[c % len(means)]) / stds[c % len(stds)]
        for c in range(config.num_channels)
    ]
    pixel_values = torch.from_numpy(np.stack(channels))[None]
    panels = reconstruction_panels(
        model, pixel_values, normalization=[SOURCE_NORMALIZATION["chexpert"]]
    )
    assert np.abs(panels[0][0].astype(int) - grey.astype(int)).max() <= 1
