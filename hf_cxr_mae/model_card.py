"""Model cards from the real run (packaged templates); pushing them lives in ``hub``.

Cards are rendered with ``huggingface_hub.ModelCard`` from ``model_cards/model_card.md.jinja``
(shipped inside the package as ``hf_cxr_mae.model_cards``); their metadata carries ``model-index``
results built from the run's own metrics. ``training_args.json`` is written here too, scrubbed of
secrets and local paths.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .tables import calibration_rows, interval, number, operating_point_rows, subgroup_rows

logger = logging.getLogger(__name__)

PAPER = "Delving into Masked Autoencoders for Multi-Label Thorax Disease Classification (Xiao et al., WACV 2023)"
PAPER_URL = "https://arxiv.org/abs/2210.12843"
TAGS = ["chest-x-ray", "medical-imaging", "masked-autoencoder", "vision-transformer"]
# What the paper reports (mean AUROC, %), for converted checkpoints: reported, not measured here.
REPORTED = {
    ("vit-small-patch16", "nih14"): 82.3,
    ("vit-base-patch16", "nih14"): 83.0,
}
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


@dataclasses.dataclass
class CardData:
    """What a model card says, filled from the run as it happens and rendered once by
    ``render_card``: the model (``config``), its data, the recipe settings that differ from the
    defaults, the test report once there is one, and where it started from / goes to."""

    kind: str  # "pretrain", "classifier" or "conversion"
    config: Any
    model_name: str
    datasets: list[str] = dataclasses.field(default_factory=list)
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    report: dict[str, Any] | None = None
    base_model: str | None = None
    uncertainty: str | None = None
    source: str | None = None  # the converted checkpoint's name (conversions only)
    repo_id: str | None = None  # the Hub repo pushed to: the widget's example image lives there
    # Evaluations on data of other sources (``external_report.external_result`` of each one's
    # metrics.json): rendered as the card's "External validation" table.
    external_results: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def clinical_tables(report: dict[str, Any] | None, config: Any) -> dict[str, Any]:
    """The card's measured bias-and-limitations content, as rows of formatted cells (the rows of
    report.md's tables, ``hf_cxr_mae.tables``): subgroup mAUC (the report's ``subgroups``), the
    largest TPR / FPR gaps per column at the thresholds, ECE per finding (``calibration``), and
    the stored thresholds with their rates on the report's split. Empty lists where the report
    lacks them."""
    report = report or {}
    out: dict[str, Any] = {"subgroups": [], "gaps": [], "calibration": [], "thresholds": []}
    subgroups = report.get("subgroups")
    if subgroups:
        # The card leaves out the overall value over the same findings.
        rows = subgroup_rows(subgroups, flag="**below overall**")
        out["subgroups"] = [r[:5] + r[6:] for r in rows]
        for column, findings in subgroups.get("gaps", {}).items():
            for rate in ("tpr", "fpr"):
                gaps = {f: g for f, g in findings.items() if g.get(f"{rate}_gap") is not None}
                if gaps:
                    worst = max(gaps, key=lambda f: gaps[f][f"{rate}_gap"])
                    g = gaps[worst]
                    out["gaps"].append(
                        [column, rate.upper(), worst, number(g[f"{rate}_gap"]),
                         f"{g[f'{rate}_lowest']} < {g[f'{rate}_highest']}"]
                    )  # fmt: skip
    calibration = report.get("calibration")
    if calibration:
        temperatures = (getattr(config, "calibration", None) or {}).get("temperatures", {})
        out["calibration"] = calibration_rows(calibration["ece"], temperatures)
        out["mean_ece"] = number(calibration.get("mean_ece"))
    points = getattr(config, "operating_points", None)
    if points:
        thresholds = points.get("thresholds", {})
        rates = (report.get("operating_points") or {}).get("rates") or {}
        # The card shows the rates, not the counts.
        out["thresholds"] = [
            r[:6] for r in operating_point_rows(list(thresholds), thresholds, rates)
        ]
        method = points.get("method")
        out["method"] = (
            "Youden's J" if method == "youden" else f"{method} >= {points.get('target')}"
        )
    return out


def render_card(card: CardData) -> ModelCard:
    """A card for a ``pretrain`` encoder, a ``classifier`` or a ``conversion`` (``source`` set)."""
    config, datasets, report = card.config, card.datasets, card.report
    base_model, source, repo_id = card.base_model, card.source, card.repo_id
    classifier = getattr(config, "model_type", "") == "beit" or card.kind == "classifier"
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
        model_name=card.model_name,
        eval_results=eval_results or None,
        widget=widget,
    )
    reported = REPORTED.get((preset, "nih14")) if source else None
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        repo_name=card.model_name,
        kind="conversion" if source else card.kind,
        classifier=classifier,
        labels=labels,
        config=config,
        preset=preset or "custom",
        datasets_text=", ".join(datasets) if datasets else "unknown",
        hyperparameters=scrub(card.hyperparameters),
        report=report,
        uncertainty=card.uncertainty,
        base_model_note=None
        if base_model is None or _is_hub_id(base_model)
        else "a local checkpoint",
        source=source,
        reported=reported,
        paper=PAPER,
        paper_url=PAPER_URL,
        demo="demo" in datasets,
        clinical=clinical_tables(report, config) if classifier else None,
        calibration=getattr(config, "calibration", None),
        operating_points=getattr(config, "operating_points", None),
        external_results=[
            {
                **r,
                "mauc_text": number(r.get("mauc")),
                "ci_text": interval(r.get("mauc_ci95")),
                "source_text": number(r.get("source_test_mauc")),
            }
            for r in card.external_results
        ],
    )


def write_card(output_dir: str | Path, card: CardData) -> Path:
    """README.md: the rendered card."""
    path = Path(output_dir) / "README.md"
    render_card(card).save(path)
    return path


def write_conversion_card(output_dir: Path, config: Any, kind: str, source_name: str) -> Path:
    return write_card(
        output_dir,
        CardData(kind=kind, config=config, model_name=output_dir.name, source=source_name),
    )


def write_run_card(output_dir: str | Path, card: CardData, *arg_objects: Any) -> None:
    """A run's README.md (the card, its recipe the settings that differ from the defaults) and
    training_args.json (scrubbed of secrets and local paths)."""
    write_training_args(output_dir, *arg_objects)
    card.hyperparameters = non_default_args(*arg_objects)
    write_card(output_dir, card)


def write_training_args(output_dir: str | Path, *arg_objects: Any) -> Path:
    """``training_args.json``: every argument, scrubbed of secrets and local paths (JSON, not pickle)."""
    merged: dict[str, Any] = {}
    for obj in arg_objects:
        raw = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
        merged.update({k: v for k, v in raw.items() if not k.startswith("_")})
    path = Path(output_dir) / "training_args.json"
    path.write_text(json.dumps(scrub(merged), indent=2, default=str))
    return path


ONNX_START, ONNX_END = "<!-- onnx-export -->", "<!-- /onnx-export -->"


def onnx_card_section(
    checks: list[dict[str, Any]], fused: int, int8_file: str, variant: str | None, source: str
) -> str:
    """The card's "ONNX export" section: how the graphs were made and each one's check against
    PyTorch (``checks``: ``export.Verification`` as dicts)."""
    import onnxruntime
    import torch

    rows = "\n".join(
        f"| `onnx/{c['variant']}` | {c['images']} ({c['image_source']}) | "
        f"{c['max_logit_difference']:.2e} | {c['max_probability_difference']:.4f} | "
        f"{c['agreement']:.4f} | {c['tolerance']} |"
        for c in checks
    )
    calibrated = ", activation ranges calibrated on the images named below" if variant == "static" else ""
    return f"""{ONNX_START}
## ONNX export

Exported from `{source}` by `hf-cxr-mae export` (torch {torch.__version__}, onnxruntime
{onnxruntime.__version__}). Input `pixel_values` (batch, channels, height, width) preprocessed by
`preprocessor_config.json`; output `logits` (batch, labels): sigmoid per finding (multi-label) or
softmax. {fused} attention blocks run as `com.microsoft.MultiHeadAttention`, so the graph needs
ONNX Runtime (CPU). Int8 graphs quantise the MatMul weights (`{int8_file}`{calibrated}).

Checked against the PyTorch model (fp32) before writing; a graph outside its tolerance is refused:

| graph | check images | max logit diff. | max prob. diff. | decisions agreeing | tolerance |
|---|---|--:|--:|--:|---|
{rows}

```python
from hf_cxr_mae.serving.onnx_runtime import OnnxClassifier
model = OnnxClassifier("path/to/this/folder")   # the fastest graph here; model.config: labels
probabilities = model.predict_proba(["xray.png"])  # (images, findings), numpy; no torch
logits = model(pixel_values)                        # numpy or torch in, the same out
```
Or `hf-cxr-mae predict --model path/to/this/folder images/` (Grad-CAM heatmaps need PyTorch).
{ONNX_END}
"""


def add_onnx_section(out_dir: Path, source: str | None, section: str) -> None:
    """``out_dir``'s card (else the source's, else a title) with the ONNX ``section`` added, or
    replacing the one already there."""
    card = out_dir / "README.md"
    text = None
    if card.is_file():
        text = card.read_text(encoding="utf-8")
    elif source and (Path(source) / "README.md").is_file():
        text = (Path(source) / "README.md").read_text(encoding="utf-8")
    if text is None:
        text = f"# {Path(source or 'model').name} (ONNX)\n"
    if ONNX_START in text and ONNX_END in text:
        before, _, rest = text.partition(ONNX_START)
        text = before + rest.partition(ONNX_END)[2].lstrip("\n")
    card.write_text(text.rstrip("\n") + "\n\n" + section, encoding="utf-8")
