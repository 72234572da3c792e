"""hf-cxr-mae: masked-autoencoder pre-training and multi-label fine-tuning of ViTs on chest X-rays.

The public names load lazily (PEP 562): ``import hf_cxr_mae.onnx_runtime`` must not pull in
PyTorch and transformers (about 0.75 GB of a serving process that needs neither), so this
package ``__init__`` imports nothing; ``from hf_cxr_mae import X`` imports X's module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    """A public name (imported from its submodule on first use), or a submodule itself
    (``hf_cxr_mae.modeling`` after a bare ``import hf_cxr_mae``, as before)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name.startswith("__"):  # dunder probes (copy, pickle, inspect) are no submodules
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":  # the submodule exists but one of its imports fails
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
