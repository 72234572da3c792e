"""The Hub: model cards from the real run (packaged templates), and a push that cannot hurt a run.

Cards are rendered with ``huggingface_hub.ModelCard`` from ``model_cards/model_card.md.jinja``
(shipped inside the package as ``hf_cxr_mae.model_cards``); their metadata carries ``model-index``
results built from the run's own metrics. ``push_folder`` uploads only what a model repo needs,
retries with backoff, reports failures and never raises, so a network problem never stops
training and never touches the local checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

logger = logging.getLogger(__name__)

PAPER = "Delving into Masked Autoencoders for Multi-Label Thorax Disease Classification (Xiao et al., WACV 2023)"
PAPER_URL = "https://arxiv.org/abs/2210.12843"
TAGS = ["chest-x-ray", "medical-imaging", "masked-autoencoder", "vision-transformer"]
# What the paper reports (mean AUROC, %), for converted checkpoints: reported, not measured here.
REPORTED = {
    ("vit-small-patch16", "nih14"): 82.3,
    ("vit-base-patch16", "nih14"): 83.0,
}
# Only these files go to a model repo (never optimizer states, pickles, caches or previews).
PUSH_PATTERNS = [
    "config.json", "*.safetensors", "model.safetensors.index.json", "preprocessor_config.json",
    "README.md", "training_args.json", "metrics.json", "all_results.json", "report.md", "roc.png",
    "confusion_matrix.png", "example.png",
]  # fmt: skip
_SECRET_FIELDS = {"hub_token", "push_to_hub_token", "token", "hub_model_id_token"}


def template_path() -> Path:
    return Path(str(resources.files("hf_cxr_mae.model_cards") / "model_card.md.jinja"))


def scrub(value: Any) -> Any:
    """Local absolute paths -> their last part (no user names, mount points or patient folders)."""
    if isinstance(value, str) and os.path.isabs(value):
        return Path(value).name
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in _SECRET_FIELDS}
    return value


# TrainingArguments fields that describe the recipe (the rest is plumbing transformers derives).
RECIPE_FIELDS = {
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "warmup_steps", "lr_scheduler_type",
    "seed", "bf16", "fp16", "max_grad_norm", "label_smoothing_factor", "metric_for_best_model",
}  # fmt: skip


def _plain(value: Any) -> Any:
    value = getattr(value, "value", value)  # enums
    return value if isinstance(value, (int, float, str, bool, list, type(None))) else str(value)


def non_default_args(*arg_objects: Any) -> dict[str, Any]:
    """Recipe settings that differ from their class defaults (scrubbed of paths and secrets).

    From ``TrainingArguments`` only ``RECIPE_FIELDS`` and the fields our subclasses add count.
    """
    from transformers import TrainingArguments

    base_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    out: dict[str, Any] = {}
    for obj in arg_objects:
        for f in dataclasses.fields(obj):
            if (
                f.name.startswith("_")
                or f.name in _SECRET_FIELDS
                or (f.name in base_fields and f.name not in RECIPE_FIELDS)
            ):
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            value = _plain(getattr(obj, f.name, None))
            if value != _plain(default):
                out[f.name] = scrub(value)
    if hasattr(arg_objects[-1], "effective_batch_size"):
        out["effective batch size"] = arg_objects[-1].effective_batch_size
    return out


def _is_hub_id(name: str | None) -> bool:
    return (
        bool(name) and not os.path.exists(name) and not os.path.isabs(name) and name.count("/") == 1
    )


def _eval_result(dataset: str, split: str | None, name: str, value: float) -> EvalResult:
    return EvalResult(
        task_type="image-classification",
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_split=split,
        metric_type="roc_auc",
        metric_name=name,
        metric_value=round(value, 4),
    )


def render_card(
    kind: str,
    config: Any,
    *,
    model_name: str,
    datasets: list[str],
    hyperparameters: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    base_model: str | None = None,
    uncertainty: str | None = None,
    source: str | None = None,
    repo_id: str | None = None,
) -> ModelCard:
    """A card for a ``pretrain`` encoder, a ``classifier`` or a ``conversion`` (``source`` set)."""
    classifier = getattr(config, "model_type", "") == "beit" or kind == "classifier"
    labels = [config.id2label[i] for i in range(config.num_labels)] if classifier else []
    preset = (getattr(config, "preset", None) or "").split("-dec")[0]
    eval_results = []
    split = (report or {}).get("split")
    if report and report.get("auroc"):
        dataset = datasets[0] if datasets else "chest-x-ray"
        results = [(f"AUROC {n}", v) for n, v in report["auroc"].items()] + [
            ("mAUC (mean AUROC)", report.get("mauc"))
        ]
        eval_results = [
            _eval_result(dataset, split, name, value)
            for name, value in results
            if value is not None
        ]
    widget = (
        [
            {
                "src": f"https://huggingface.co/{repo_id}/resolve/main/example.png",
                "example_title": "synthetic example",
            }
        ]
        if repo_id
        else None
    )
    card_data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="image-classification" if classifier else "image-feature-extraction",
        tags=TAGS,
        datasets=[d for d in datasets if d != "demo"] or None,
        base_model=base_model if _is_hub_id(base_model) else None,
        model_name=model_name,
        eval_results=eval_results or None,
        widget=widget,
    )
    reported = REPORTED.get((preset, "nih14")) if source else None
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        repo_name=model_name,
        kind="conversion" if source else kind,
        classifier=classifier,
        labels=labels,
        config=config,
        preset=preset or "custom",
        datasets_text=", ".join(datasets) if datasets else "unknown",
        hyperparameters=scrub(hyperparameters or {}),
        report=report,
        uncertainty=uncertainty,
        base_model_note=None
        if base_model is None or _is_hub_id(base_model)
        else "a local checkpoint",
        source=source,
        reported=reported,
        paper=PAPER,
        paper_url=PAPER_URL,
        demo="demo" in datasets,
    )


def write_card(output_dir: str | Path, **kwargs: Any) -> Path:
    path = Path(output_dir) / "README.md"
    render_card(**kwargs).save(path)
    return path


def write_conversion_card(output_dir: Path, config: Any, kind: str, source_name: str) -> Path:
    return write_card(
        output_dir,
        kind=kind,
        config=config,
        model_name=output_dir.name,
        datasets=[],
        source=source_name,
    )


def write_training_args(output_dir: str | Path, *arg_objects: Any) -> Path:
    """``training_args.json``: every argument, scrubbed of secrets and local paths (JSON, not pickle)."""
    merged: dict[str, Any] = {}
    for obj in arg_objects:
        raw = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
        merged.update({k: v for k, v in raw.items() if not k.startswith("_")})
    path = Path(output_dir) / "training_args.json"
    path.write_text(json.dumps(scrub(merged), indent=2, default=str))
    return path


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload model from hf-cxr-mae",
    retries: int = 4,
    backoff: float = 2.0,
) -> str | None:
    """Upload a model folder's publishable files; retry with exponential backoff.

    Returns the commit URL, or None after reporting the failure (never raises, never deletes).
    """
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    folder = Path(folder)
    for attempt in range(retries + 1):
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(
                folder_path=folder,
                repo_id=repo_id,
                allow_patterns=PUSH_PATTERNS,
                ignore_patterns=["*/*"],  # top-level files only: no checkpoints, previews, caches
                commit_message=commit_message,
            )
            url = getattr(info, "commit_url", None) or str(info)
            logger.info("Pushed %s to %s (%s)", folder, repo_id, url)
            return url
        except Exception as err:  # network, HTTP, auth: reported, never raised
            status = getattr(getattr(err, "response", None), "status_code", None)
            final = attempt == retries or (
                isinstance(err, HfHubHTTPError) and status in (401, 403, 404)
            )
            if final:
                logger.error(
                    "Push of %s to %s failed: %s. The local copy is intact; push later with `hf-cxr-mae push %s %s`.",
                    folder,
                    repo_id,
                    err,
                    folder,
                    repo_id,
                )
                return None
            wait = backoff * 2**attempt
            logger.warning(
                "Push to %s failed (attempt %d/%d: %s); retrying in %.1fs.",
                repo_id,
                attempt + 1,
                retries + 1,
                err,
                wait,
            )
            time.sleep(wait)
    return None
