"""The image processor a checkpoint ships (``processing.build_image_processor``) holds exactly the
evaluation preprocessing, and ``onnx_runtime.processor_settings`` refuses a
``preprocessor_config.json`` lacking any key ONNX serving reads: each one removed on its own
(transformers would fill an absent key with its own default, e.g. a 224 centre crop, so serving
must not guess), while keys it does not need may be absent."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from hf_cxr_mae.processing import build_image_processor
from hf_cxr_mae.serving.onnx_runtime import processor_settings


def config(image_size=64, crop_pct=0.875, mean=(0.5056,) * 3, std=(0.252,) * 3):
    return SimpleNamespace(
        image_size=image_size, crop_pct=crop_pct, image_mean=list(mean), image_std=list(std)
    )


@pytest.mark.parametrize(
    "image_size, crop_pct, shortest_edge",
    [(224, 0.875, 256), (224, 1.0, 224), (384, 0.9, 427), (64, 0.875, 73)],
)
def test_the_processor_is_the_evaluation_transform(image_size, crop_pct, shortest_edge, tmp_path):
    """Shortest side round(image_size / crop_pct), bicubic, centre crop image_size, rescale
    1/255, the model's own mean and std, RGB: every value as written to the JSON."""
    mean, std = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)
    build_image_processor(config(image_size, crop_pct, mean, std)).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "BitImageProcessor"
    assert saved["size"] == {"shortest_edge": shortest_edge}
    assert saved["crop_size"] == {"height": image_size, "width": image_size}
    assert (saved["do_resize"], saved["do_center_crop"], saved["resample"]) == (True, True, 3)
    assert (saved["do_rescale"], saved["rescale_factor"]) == (True, 1 / 255)
    assert (saved["do_normalize"], saved["image_mean"], saved["image_std"]) == (
        True, list(mean), list(std),
    )  # fmt: skip
    assert saved["do_convert_rgb"] is True
    assert processor_settings(tmp_path) == saved


def write(folder, **changes):
    """The shipped processor config with keys changed (None: removed)."""
    build_image_processor(config()).save_pretrained(folder)
    path = folder / "preprocessor_config.json"
    settings = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            settings.pop(key)
        else:
            settings[key] = value
    path.write_text(json.dumps(settings))
    return folder


NEEDED = [
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
]


@pytest.mark.parametrize("key", NEEDED)
def test_each_needed_key_removed_alone_is_refused_by_name(key, tmp_path):
    """Remove one key of the shipped config: refused, naming that key and the file."""
    write(tmp_path, **{key: None})
    with pytest.raises(ValueError, match=rf"preprocessor_config\.json does not say {key};"):
        processor_settings(tmp_path)


@pytest.mark.parametrize(
    "off, key",
    [
        ("do_normalize", "image_mean"),
        ("do_normalize", "image_std"),
        ("do_center_crop", "crop_size"),
        ("do_rescale", "rescale_factor"),
    ],
)
def test_a_setting_of_a_step_turned_off_may_be_absent(off, key, tmp_path):
    """A step switched off needs no parameters: its key may be missing."""
    write(tmp_path, **{off: False, key: None})
    assert processor_settings(tmp_path)[off] is False


@pytest.mark.parametrize("key", ["do_convert_rgb", "image_processor_type"])
def test_keys_serving_does_not_read_may_be_absent(key, tmp_path):
    write(tmp_path, **{key: None})
    assert key not in processor_settings(tmp_path)


def test_a_processor_without_a_crop_step_needs_no_crop_setting(tmp_path):
    """ViTImageProcessor has no centre crop: its config (without do_center_crop) is accepted;
    the same config typed as our BitImageProcessor (which crops 224 x 224 by default) is not."""
    write(tmp_path, do_center_crop=None, crop_size=None, image_processor_type="ViTImageProcessor")
    assert "do_center_crop" not in processor_settings(tmp_path)
    write(tmp_path, do_center_crop=None, crop_size=None)
    with pytest.raises(ValueError, match="does not say do_center_crop;"):
        processor_settings(tmp_path)


def test_a_missing_file_and_old_integer_sizes_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"preprocessor_config\.json not found"):
        processor_settings(tmp_path)
    write(tmp_path, size=73)
    with pytest.raises(ValueError, match=r"size=73 is an older form"):
        processor_settings(tmp_path)
    write(tmp_path, crop_size=64)
    with pytest.raises(ValueError, match=r"crop_size=64 is an older form"):
        processor_settings(tmp_path)
