"""hf-cxr-mae: masked-autoencoder pre-training and multi-label fine-tuning of ViTs on chest X-rays.

The public names load lazily (PEP 562): ``import hf_cxr_mae.onnx_runtime`` must not pull in
PyTorch and transformers (about 0.75 GB of a serving process that needs neither), so this
package ``__init__`` imports nothing; ``from hf_cxr_mae import X`` imports X's module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# Public name -> the submodule that defines it (IGNORE_LABEL: modeling re-exports it, constants
# holds it without torch).
_EXPORTS = {
    "CXR_MEAN": "configuration",
    "CXR_STD": "configuration",
    "CXRClassifierConfig": "configuration",
    "CXRMAEConfig": "configuration",
    "preset_names": "configuration",
    "IGNORE_LABEL": "constants",
    "CXRMAEForPreTraining": "modeling",
    "CXRMAEModel": "modeling",
    "CXRViTForImageClassification": "modeling",
    "check_pixel_values": "modeling",
    "resize_pos_embed": "modeling",
    "sincos_pos_embed": "modeling",
    "build_image_processor": "processing",
}

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

if TYPE_CHECKING:  # static tools see the names as before
    from .configuration import CXR_MEAN, CXR_STD, CXRClassifierConfig, CXRMAEConfig, preset_names
    from .constants import IGNORE_LABEL
    from .modeling import (
        CXRMAEForPreTraining,
        CXRMAEModel,
        CXRViTForImageClassification,
        check_pixel_values,
        resize_pos_embed,
        sincos_pos_embed,
    )
    from .processing import build_image_processor


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
