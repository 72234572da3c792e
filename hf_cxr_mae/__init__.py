"""hf-cxr-mae: masked-autoencoder pre-training and multi-label fine-tuning of ViTs on chest X-rays."""

from .configuration import CXR_MEAN, CXR_STD, CXRClassifierConfig, CXRMAEConfig, preset_names
from .modeling import (
    IGNORE_LABEL,
    CXRMAEForPreTraining,
    CXRMAEModel,
    CXRViTForImageClassification,
    check_pixel_values,
    resize_pos_embed,
    sincos_pos_embed,
)
from .processing import build_image_processor

__version__ = "0.1.0"

__all__ = [
    "CXR_MEAN",
    "CXR_STD",
    "IGNORE_LABEL",
    "CXRClassifierConfig",
    "CXRMAEConfig",
    "CXRMAEForPreTraining",
    "CXRMAEModel",
    "CXRViTForImageClassification",
    "build_image_processor",
    "check_pixel_values",
    "preset_names",
    "resize_pos_embed",
    "sincos_pos_embed",
]
