"""How a run builds its model from the recipe arguments, and checks the checkpoint it starts
from before any data is read (the model code itself lives in ``modeling.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transformers import AutoConfig, PreTrainedModel

from ..configuration import CXRClassifierConfig, CXRMAEConfig
from ..modeling import CXRMAEForPreTraining, CXRViTForImageClassification

if TYPE_CHECKING:
    from .arguments import ModelArguments

# What each run may start from (a checkpoint's ``model_type``), and how the refusal names it.
SOURCE_MODEL_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    "pretrain": (("vit_mae",), "pre-training"),
    "vit": (("vit_mae", "beit"), "--architecture vit"),
    "densenet121": (("timm_wrapper",), "--architecture densenet121"),
}


def source_model_type(path: str) -> str:
    """The ``model_type`` of a checkpoint folder or Hub id, or a clear error naming it."""
    try:
        return AutoConfig.from_pretrained(path).model_type
    except OSError as err:
        hint = (
            " (the demo fine-tuning starts from recipes/pretrain.py's demo output: run it first)"
            if "demo" in path
            else ""
        )
        raise ValueError(
            f"Cannot load --model_name_or_path {path!r}: no such folder, and not found on the Hub{hint}. {err}"
        ) from err


def check_source_checkpoint(path: str | None, kind: str) -> None:
    """Refuse a checkpoint of another architecture before any data is read (``kind``: a key of
    ``SOURCE_MODEL_TYPES``); nothing to check without one."""
    if not path:
        return
    allowed, what = SOURCE_MODEL_TYPES[kind]
    model_type = source_model_type(path)
    if model_type not in allowed:
        raise ValueError(
            f"{path} is a {model_type!r} checkpoint; {what} starts from {' or '.join(allowed)}."
        )


def build_pretraining_model(
    model_args: ModelArguments,
) -> tuple[CXRMAEForPreTraining | None, CXRMAEConfig]:
    """The MAE to pre-train and its config: continued from ``model_name_or_path`` (checked), or a
    config from the preset (the model is then built once the data is ready: ``None``)."""
    if model_args.model_name_or_path:
        check_source_checkpoint(model_args.model_name_or_path, "pretrain")
        model = CXRMAEForPreTraining.from_pretrained(
            model_args.model_name_or_path, mask_ratio=model_args.mask_ratio
        )
        return model, model.config
    overrides = {"mask_ratio": model_args.mask_ratio, "norm_pix_loss": model_args.norm_pix_loss}
    if model_args.image_size:
        overrides["image_size"] = model_args.image_size
    return None, CXRMAEConfig.from_preset(model_args.preset, **overrides)


def build_classifier(
    model_args: ModelArguments,
    names: list[str],
    problem_type: str,
    layer_decay: float | None = None,
) -> PreTrainedModel:
    """The model to fine-tune: ViT (from an MAE, a classifier or scratch) or timm DenseNet-121.
    A ViT's config records the ``layer_decay`` it is trained with (None: none, 1.0)."""
    id2label = dict(enumerate(names))
    if model_args.architecture == "densenet121":
        from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

        if model_args.model_name_or_path:
            return TimmWrapperForImageClassification.from_pretrained(
                model_args.model_name_or_path, id2label=id2label, problem_type=problem_type
            )
        config = TimmWrapperConfig(
            architecture="densenet121",
            num_labels=len(names),
            id2label=id2label,
            problem_type=problem_type,
        )
        return TimmWrapperForImageClassification(config)
    overrides: dict[str, Any] = {
        "drop_path_rate": model_args.drop_path_rate,
        "pooling": model_args.pooling,
        "problem_type": problem_type,
        "layer_decay": layer_decay or 1.0,
    }
    if model_args.image_size:
        overrides["image_size"] = model_args.image_size
    if model_args.model_name_or_path:
        return CXRViTForImageClassification.from_checkpoint(
            model_args.model_name_or_path,
            id2label=names,
            reinit_head=model_args.reinit_head,
            **overrides,
        )
    return CXRViTForImageClassification(
        CXRClassifierConfig.from_preset(model_args.preset, id2label=id2label, **overrides)
    )
