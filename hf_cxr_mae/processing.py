"""The image processor saved beside every checkpoint (a native transformers class)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from transformers import BitImageProcessor, ViTMAEConfig
from transformers.image_utils import PILImageResampling

from .configuration import CXRClassifierConfig
from .constants import eval_resize_size


def build_image_processor(config: ViTMAEConfig | Any) -> BitImageProcessor:
    """Evaluation preprocessing for a model: RGB, shortest edge to ``image_size / crop_pct``
    (256 for 224), bicubic, centre crop ``image_size``, scale to [0, 1], normalise with the
    model's mean / std.

    ``BitImageProcessor`` is a stock transformers class, so ``AutoImageProcessor`` and
    ``pipeline(...)`` load it without this package.
    """
    size = config.image_size
    return BitImageProcessor(
        do_convert_rgb=True,
        do_resize=True,
        size={"shortest_edge": eval_resize_size(config)},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
    )


def data_settings(model) -> SimpleNamespace:
    """image_size / mean / std / crop_pct / channels of any classifier (ours carry them; CNNs get CXR ones)."""
    cfg = model.config
    ours = CXRClassifierConfig()
    return SimpleNamespace(
        image_size=getattr(cfg, "image_size", 224),
        image_mean=getattr(cfg, "image_mean", ours.image_mean),
        image_std=getattr(cfg, "image_std", ours.image_std),
        crop_pct=getattr(cfg, "crop_pct", ours.crop_pct),
        num_channels=getattr(cfg, "num_channels", 3),
    )


def problem_type_of(dataset) -> str:
    """``single_label_classification`` for a ``label`` (ClassLabel) column, else multi-label."""
    return (
        "single_label_classification"
        if "label" in dataset.column_names
        else "multi_label_classification"
    )
