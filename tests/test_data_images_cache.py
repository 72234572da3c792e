import random

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from hf_cxr_mae import CXRMAEConfig
from hf_cxr_mae.data import load_cxr_dataset, read_xray, to_grayscale
from hf_cxr_mae.data.cache import build_cache
from hf_cxr_mae.data.transforms import CXRCollator, batch_transform, create_transform, example_image

MONO2 = "siim-cr-chest-pa-monochrome2.dcm"
MONO1 = "siim-cr-chest-pa-monochrome1-header.dcm"


def test_16bit_png_scaled_by_range_or_window(tmp_path):
    ramp = np.linspace(1000, 5000, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "w.png")
    out = np.asarray(read_xray(tmp_path / "w.png"))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    np.testing.assert_allclose(out, (ramp - 1000) / 4000 * 255, atol=0.51)
    windowed = np.asarray(read_xray(tmp_path / "w.png", window=(2000, 3000)))
    assert windowed[0, 0] == 0 and windowed[-1, -1] == 255


def test_color_modes_become_one_channel():
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    base = Image.fromarray(gray)
    for image in [
        base.convert("RGB"),
        base.convert("RGBA"),
        base.convert("P"),
        base.convert("CMYK"),
        base.convert("I"),
    ]:
        out = to_grayscale(image)
        assert out.mode == "L" and out.size == (16, 16)
        assert np.abs(np.asarray(out).astype(int) - gray).max() <= 2, image.mode


def test_dicom_monochrome1_is_inverted(shared_data):
    mono2 = np.asarray(read_xray(shared_data / "dicom" / MONO2)).astype(int)
    mono1 = np.asarray(read_xray(shared_data / "dicom" / MONO1)).astype(int)
    # The two files store identical pixels; only the header differs. Displayed correctly
    # (air dark) the MONOCHROME1 one is the exact inverse of the MONOCHROME2 one.
    stored = pydicom.dcmread(shared_data / "dicom" / MONO1).pixel_array.astype(int)
    np.testing.assert_array_equal(mono2, stored)
    np.testing.assert_array_equal(mono1, 255 - mono2)
    assert (
        mono2[:32, :32].mean() < 40 < 150 < mono2[480:544, 480:544].mean()
    )  # air dark, body bright


def test_no_patient_tag_reaches_dataset_or_cache(shared_data, tmp_path):
    header = pydicom.dcmread(shared_data / "dicom" / MONO2, stop_before_pixels=True)
    secrets = {str(header.PatientName), str(header.PatientID), str(header.StudyInstanceUID)}
    folder = tmp_path / "export"
    folder.mkdir()
    for name in (MONO1, MONO2):
        (folder / name).symlink_to(shared_data / "dicom" / name)
    dd = load_cxr_dataset("imagefolder", folder)
    ds = dd["train"]
    assert len(ds) == 2 and ds[0]["image"].size == (1024, 1024)
    for row in ds.cast_column("image", ds.features["image"].__class__(decode=False)):
        text = repr({k: v for k, v in row.items() if k != "image"}) + repr(row["image"]["path"])
        assert not any(s in text for s in secrets)
        assert row["image"]["bytes"] is not None and not any(
            s.encode() in row["image"]["bytes"] for s in secrets
        )
    cache_dir = tmp_path / "cache"
    build_cache(ds, size=256, cache_dir=cache_dir)
    for path in cache_dir.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert not any(s.encode() in blob for s in secrets), path


@pytest.fixture
def nih_test(nih_dir):
    return load_cxr_dataset("nih14", nih_dir, image_dir="images")["test"].select(range(12))


def test_cache_and_raw_give_identical_eval_output(nih_test, tmp_path):
    config = CXRMAEConfig.from_preset("vit-small-patch16-dec512d2b")
    cached = build_cache(nih_test, size=320, cache_dir=tmp_path)
    assert cached.column_names[-3:] == ["pixels", "height", "width"]
    assert min(cached[0]["height"], cached[0]["width"]) == 320
    assert cached["labels"] == nih_test["labels"] and cached["image_id"] == nih_test["image_id"]
    from_raw = create_transform(config, "eval", pre_resize=320)
    from_cache = create_transform(config, "eval")
    for i in range(len(nih_test)):
        a = from_raw(nih_test[i]["image"])
        b = from_cache(example_image(cached[i : i + 1], 0))
        assert a.shape == (1, 224, 224)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # Reused, not rebuilt: a second call returns the same files.
    again = build_cache(nih_test, size=320, cache_dir=tmp_path)
    assert again.cache_files[0]["filename"] == cached.cache_files[0]["filename"]
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def _draws(transform, get, n: int) -> torch.Tensor:
    """``n`` augmented crops of the 12 images in turn, every random source seeded with 0."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    return torch.stack([transform(get(i % 12)) for i in range(n)])


@pytest.mark.parametrize("mode", ["pretrain", "train"])
def test_cache_and_raw_give_identical_training_crops(nih_test, tmp_path, mode):
    # Raw files shrunk as the cache shrinks them draw exactly the crops the cache gives: any
    # cache-side change (intensities, orientation, framing, aspect) shows as a mismatch here.
    config = CXRMAEConfig.from_preset("vit-test-patch8-dec32d1b")
    cached = build_cache(nih_test, size=320, cache_dir=tmp_path)
    from_raw = _draws(
        create_transform(config, mode, pre_resize=320), lambda i: nih_test[i]["image"], 24
    )
    from_cache = _draws(
        create_transform(config, mode), lambda i: example_image(cached[i : i + 1], 0), 24
    )
    torch.testing.assert_close(from_raw, from_cache, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["pretrain", "train"])
def test_cache_and_raw_share_the_augmentation_distribution(nih_test, tmp_path, mode):
    # Training on full-resolution files (no pre_resize) or on the 320 px cache: same distribution.
    config = CXRMAEConfig.from_preset("vit-test-patch8-dec32d1b")
    cached = build_cache(nih_test, size=320, cache_dir=tmp_path)
    transform = create_transform(config, mode)
    stats = {}
    for name, get in [
        ("raw", lambda i: nih_test[i]["image"]),
        ("cache", lambda i: example_image(cached[i : i + 1], 0)),
    ]:
        outs = _draws(transform, get, 192)
        sharpness = (outs[..., 1:] - outs[..., :-1]).abs().mean().item()
        stats[name] = (outs.mean().item(), outs.std().item(), sharpness)
    gap = [abs(a - b) for a, b in zip(stats["raw"], stats["cache"], strict=True)]
    # What each gap measures (pretrain / train), the correct cache over seeds 0-4 against caches
    # broken on purpose in hf_cxr_mae/data/cache.py (this seed) or by measurement (seeds 0-4):
    # mean: correct <= 0.032 / 0.019; +10 grey levels 0.17 / 0.09, +5 levels 0.11 / 0.04.
    assert gap[0] < 0.05, gap
    # std (was 0.05): correct <= 0.008 / 0.013; contrast x0.9 0.089 / 0.060 (cache.py),
    # cache cropped to its centre 80% >= 0.056 / 0.019.
    assert gap[1] < 0.03, gap
    # Sharpness, mean |neighbour difference| (replaces quantiles of crop brightness at atol 0.15:
    # the correct cache reaches 0.17 there on other seeds, so they caught nothing subtler than
    # +10 grey levels): correct <= 0.002 / 0.004; cache stored at 64 px 0.0069 / 0.0128
    # (cache.py; passed every old check), contrast x0.9 0.015 / 0.013 (cache.py), crop scale
    # 0.08 <-> 0.5 >= 0.018 / 0.012, centre 80% >= 0.020 / 0.015. An upside-down or mirrored
    # cache keeps these statistics: the exact test above catches it.
    assert gap[2] < 0.006, gap


def test_set_transform_and_collator_feed_three_channels(nih_test, tmp_path):
    config = CXRMAEConfig.from_preset("vit-test-patch8-dec32d1b")
    names = list(nih_test.features["labels"])
    for data in (nih_test, build_cache(nih_test, size=128, cache_dir=tmp_path)):
        ds = data.with_transform(batch_transform(create_transform(config, "train"), names))
        batch = CXRCollator(num_channels=3)([ds[i] for i in range(4)])
        assert batch["pixel_values"].shape == (4, 3, 64, 64)
        assert batch["pixel_values"].stride(1) == 0  # expanded view, not a copy
        expected = torch.tensor([[nih_test[i]["labels"][n] for n in names] for i in range(4)])
        torch.testing.assert_close(batch["labels"], expected)


def test_mixup_mixes_images_and_targets():
    torch.manual_seed(0)
    examples = [
        {
            "pixel_values": torch.full((1, 8, 8), float(i)),
            "labels": torch.tensor([float(i % 2), 1.0]),
            "aug_seed": i,  # training rows carry their augmentation seed; only they are mixed
        }
        for i in range(4)
    ]
    batch = CXRCollator(mixup_alpha=0.8)(examples)
    x = batch["pixel_values"][:, 0, 0, 0]
    # Pair (0, 3): x0 = lam * 0 + (1 - lam) * 3 -> lam from the image, then check the targets.
    lam = 1 - x[0].item() / 3
    assert 0 < lam < 1
    torch.testing.assert_close(batch["labels"][0], torch.tensor([lam * 0 + (1 - lam) * 1, 1.0]))
