"""Attacks on the paper protocol and the package restructure (#12, #13), as a new user would
follow the README: each test pins one problem found that way."""

from pathlib import Path

from recipe_utils import TINY_TRAIN, recipe

from hf_cxr_mae.cli import main


def _cache_entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith("."))


def _split_file(path: Path, names: list[str]) -> Path:
    path.write_text("\n".join(names) + "\n")
    return path


def test_cache_command_for_pretrain_builds_what_the_pretrain_recipe_reuses(nih_dir, tmp_path):
    """README: ``hf-cxr-mae cache ... --recipe pretrain`` "builds ahead exactly the caches the
    recipe will reuse". Pre-training caches its own images (the sources' training images and a
    hold-out carved from them), so the command must build those, not the fine-tuning splits."""
    names = sorted(p.name for p in (nih_dir / "images").glob("*.png"))[:40]
    train = _split_file(tmp_path / "tr.txt", names[:30])
    val = _split_file(tmp_path / "va.txt", names[30:])
    cache_dir = tmp_path / "cache"
    options = ["--option", "image_dir=images",
               "--option", f"split_files=train={train},validation={val}"]  # fmt: skip
    main(["cache", "nih14", "--data_dir", str(nih_dir), "--recipe", "pretrain",
          "--image_size", "32", "--cache_dir", str(cache_dir), *options])  # fmt: skip
    built = _cache_entries(cache_dir)
    recipe("pretrain").main(
        [*TINY_TRAIN, "--dataset", "nih14", "--data_dir", str(nih_dir), "--image_dir", "images",
         "--split_files", f"train={train},validation={val}", "--image_size", "32",
         "--output_dir", str(tmp_path / "pt"), "--max_steps", "1", "--eval_strategy", "no",
         "--save_strategy", "no", "--cache_dir", str(cache_dir)]
    )  # fmt: skip
    assert _cache_entries(cache_dir) == built


def test_auto_resume_refuses_a_checkpoint_that_predates_a_setting(tmp_path):
    """A checkpoint saved before ``dataloader_drop_last`` was recorded (the old default kept the
    partial batch) must not be auto-resumed under the new default: its steps per epoch, warmup
    and cosine differ. A setting missing from the checkpoint is unknown, not equal."""
    import json

    import pytest

    from hf_cxr_mae.training.resume import check_same_run
    from hf_cxr_mae.training.trainer import RUN_SETTINGS

    now = {"learning_rate": 1e-3, "seed": 0, "dataloader_drop_last": True}
    old = {k: v for k, v in now.items() if k != "dataloader_drop_last"}
    (tmp_path / RUN_SETTINGS).write_text(json.dumps(old))
    with pytest.raises(ValueError, match="dataloader_drop_last"):
        check_same_run(str(tmp_path), now, explicit=False)
    check_same_run(str(tmp_path), now, explicit=True)  # named explicitly: resumes, with a warning


def test_paper_protocol_on_a_subset_says_it_needs_the_full_release(nih_dir, shared_data):
    """``protocol="paper"`` on a partial NIH copy (the 500-image sample): the user cannot "fix"
    the shipped split files line by line; the error must say the release is incomplete, how many
    listed images are absent, and how to go on (on_bad='skip' or own split_files)."""
    import pandas as pd
    import pytest

    from hf_cxr_mae.data import load_cxr_dataset
    from hf_cxr_mae.data.validation import DataValidationError

    listed = set()
    for name in ("train_official.txt", "val_official.txt", "test_official.txt"):
        text = (shared_data / "nih-paper-split" / name).read_text()
        listed |= {line.split()[0] for line in text.splitlines() if line.strip()}
    present = set(pd.read_csv(nih_dir / "Data_Entry_2017.csv")["Image Index"])
    absent = len(listed - present)
    assert 0 < absent < len(listed)
    with pytest.raises(DataValidationError) as err:
        load_cxr_dataset("nih14", nih_dir, image_dir="images", protocol="paper")
    message = str(err.value)
    assert f"{absent:,} of the {len(listed):,}" in message
    assert "full" in message and "on_bad" in message and "split_files" in message


def test_preview_shows_each_source_with_its_own_normalisation():
    """With per-source pre-training normalisation a CheXpert image is normalised with ImageNet's
    statistics; its preview must undo those, not the model's NIH mean / std, or the picture's
    grey levels are wrong (contrast x1.1 and shifted)."""
    import numpy as np
    import torch

    from hf_cxr_mae.configuration import CXRMAEConfig
    from hf_cxr_mae.data.transforms import SOURCE_NORMALIZATION
    from hf_cxr_mae.modeling import CXRMAEForPreTraining
    from hf_cxr_mae.visualization import reconstruction_panels

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
