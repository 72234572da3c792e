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


def data_settings(model_or_config: Any) -> SimpleNamespace:
    """image_size / mean / std / crop_pct / channels of any classifier, or of its config (ours
    carry them; CNNs get CXR ones)."""
    cfg = getattr(model_or_config, "config", model_or_config)
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


# Clinical post-processing stored in a classifier's config.json (see ``fold_temperature`` and
# ``flagged_findings``): fitted on the validation split at the end of fine-tuning.
POSTPROCESSING_KEYS = ("calibration", "operating_points")


def clear_postprocessing(config: Any) -> None:
    """Drop calibration and operating points inherited from a source checkpoint: they were
    fitted for other weights, and a new fine-tune fits its own (or none)."""
    for key in POSTPROCESSING_KEYS:
        config.__dict__.pop(key, None)


def classifier_head(model: Any) -> Any:
    """The ``nn.Linear`` that outputs the logits: ``classifier`` (ours, BEiT, ViT) or a timm
    model's ``get_classifier()`` (the DenseNet-121 baseline's ``TimmWrapper``)."""
    from torch import nn

    head = getattr(model, "classifier", None)
    if head is None and hasattr(getattr(model, "timm_model", None), "get_classifier"):
        head = model.timm_model.get_classifier()
    if not isinstance(head, nn.Linear) or head.out_features != model.config.num_labels:
        raise ValueError(
            f"{type(model).__name__} has no Linear head with {model.config.num_labels} outputs "
            f"(found {type(head).__name__}): cannot fold a temperature into it."
        )
    return head


def fold_temperature(model: Any, temperatures: dict[str, float]) -> None:
    """Divide each finding's row of the head (weights and bias) by its temperature, in place:
    the model then outputs ``logits / T`` itself, so ``pipeline`` and
    ``AutoModelForImageClassification`` users get calibrated probabilities without our code.
    Recorded as ``config.calibration`` (method, fitted_on, temperatures per finding)."""
    import torch

    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    missing = [n for n in names if n not in temperatures]
    bad = {n: t for n, t in temperatures.items() if not (t > 0 and t < float("inf"))}
    if missing or bad:
        raise ValueError(
            f"Temperatures must be given for every finding and be positive and finite; "
            f"missing {missing}, invalid {bad}."
        )
    head = classifier_head(model)
    scale = torch.tensor([1.0 / temperatures[n] for n in names], dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_((head.weight.double() * scale[:, None]).to(head.weight.dtype))
        if head.bias is not None:
            head.bias.copy_((head.bias.double() * scale).to(head.bias.dtype))
    model.config.calibration = {
        "method": "temperature",
        "fitted_on": "validation",
        "temperatures": {n: float(temperatures[n]) for n in names},
    }


def flagged_findings(config: Any, probabilities: dict[str, float]) -> dict[str, bool] | None:
    """Which findings reach their stored operating point (probability >= threshold), or None
    when the model has no operating points (single-label models, or fitted without them).
    Findings without a threshold (undefined on validation) are left out."""
    points = getattr(config, "operating_points", None)
    if not points or not points.get("thresholds"):
        return None
    thresholds = points["thresholds"]
    return {
        name: bool(p >= thresholds[name])
        for name, p in probabilities.items()
        if thresholds.get(name) is not None
    }
