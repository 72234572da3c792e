"""The image processor saved beside every checkpoint (a native transformers class)."""

from __future__ import annotations

from typing import Any

from transformers import BitImageProcessor, ViTMAEConfig
from transformers.image_utils import PILImageResampling


def eval_resize_size(config: Any) -> int:
    """Shortest side before the evaluation centre crop: ``image_size / crop_pct`` (256 for 224)."""
    return round(config.image_size / getattr(config, "crop_pct", 224 / 256))


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
