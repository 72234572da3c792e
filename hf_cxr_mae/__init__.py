"""hf-cxr-mae: masked-autoencoder pre-training and multi-label fine-tuning of ViTs on chest X-rays.

The public names load lazily (PEP 562): ``import hf_cxr_mae.serving.onnx_runtime`` must not pull in
PyTorch and transformers (about 0.75 GB of a serving process that needs neither), so this
package ``__init__`` imports nothing; ``from hf_cxr_mae import X`` imports X's module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import alias_moved_modules, lazy_exports

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

# Modules that moved into the serving/ and evaluation/ sub-packages (and the card module, which
# was ``hub``): their old paths still import, with a DeprecationWarning. ``hf_cxr_mae.hub`` now
# holds the Hub upload (formerly ``hub_push``); it forwards the card names it used to hold.
_MOVED = {
    "hub_push": "hub",
    "demo_app": "serving.demo",
    "visualization": "figures",  # every picture is drawn in figures
    "training.metrics": "training.logged_metrics",  # it shadowed the metrics/ package
    "data.recipe_data": "training.data_setup",  # recipe glue: data/ stays model-free
    **{
        name: f"serving.{name}"
        for name in (
            "predict", "inference", "onnx_graph", "onnx_runtime", "export", "model_checks",
        )
    },
    # predict's results file in one module; label files and pairing went to evaluation
    "predict_output": "serving.prediction_file",
    "serving.predict_output": "serving.prediction_file",
    "prediction_files": "evaluation.paired_files",
    "serving.prediction_files": "evaluation.paired_files",
    **{
        name: f"evaluation.{name}"
        for name in ("reports", "compare", "external", "external_compare", "external_report")
    },
}  # fmt: skip
alias_moved_modules({f"{__name__}.{old}": f"{__name__}.{new}" for old, new in _MOVED.items()})
