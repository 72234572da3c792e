"""A model card written from the real run (metrics, recipe, labels); fuller templates come with the Hub work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DISCLAIMER = (
    "**Research use only. This model is not a medical device and must not be used for diagnosis, "
    "triage or any clinical decision.**"
)


def _fmt(value: Any) -> str:
    return (
        "undefined" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
    )


def write_model_card(
    output_dir: str,
    kind: str,
    config: Any,
    training_args: Any,
    datasets: list[str],
    metrics: dict[str, Any],
    split: str,
    report: dict[str, Any] | None = None,
    base_model: str | None = None,
    uncertainty: str | None = None,
) -> Path:
    """Write ``README.md`` (YAML metadata + sections) into ``output_dir``."""
    classifier = kind == "classifier"
    meta: dict[str, Any] = {
        "library_name": "transformers",
        "license": "apache-2.0",
        "pipeline_tag": "image-classification" if classifier else "image-feature-extraction",
        "tags": ["chest-x-ray", "medical-imaging", "masked-autoencoder", "vision-transformer"],
        "datasets": list(datasets),
    }
    if base_model:
        meta["base_model"] = base_model
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", ""]
    title = "chest X-ray classifier" if classifier else "chest X-ray MAE encoder"
    lines += [f"# {Path(output_dir).name}: {title}", "", DISCLAIMER, ""]
    lines += ["## Model", ""]
    if classifier:
        labels = [config.id2label[i] for i in range(config.num_labels)]
        lines += [f"Labels ({len(labels)}, one sigmoid probability each): {', '.join(labels)}."]
        if uncertainty:
            lines += [f"Uncertain labels policy: `{uncertainty}`."]
    else:
        lines += [f"Masked autoencoder, mask ratio {getattr(config, 'mask_ratio', '?')}."]
    lines += ["", f"Trained on: {', '.join(datasets)}.", ""]
    lines += ["| setting | value |", "|---|---|"]
    for key in (
        "learning_rate",
        "blr",
        "min_lr",
        "warmup_epochs",
        "layer_decay",
        "weight_decay",
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "seed",
    ):
        if hasattr(training_args, key):
            lines.append(f"| {key} | {getattr(training_args, key)} |")
    lines += ["", "## Evaluation", ""]
    if report and report.get("auroc"):
        lines += [
            f"Measured on the {report.get('split', split)} split ({report.get('num_images', '?')} images).",
            "",
        ]
        lines += ["| finding | AUROC | positives |", "|---|--:|--:|"]
        for name, value in report["auroc"].items():
            lines.append(f"| {name} | {_fmt(value)} | {report['positives'][name]} |")
        lines += [f"| **mean (mAUC)** | **{_fmt(report.get('mauc'))}** | |", ""]
    else:
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        lines += [f"| {k} | {_fmt(v)} |" for k, v in scalars.items()] or ["No evaluation."]
        lines += [""]
    lines += [
        "## Intended use",
        "",
        "Research on chest X-ray representation learning. Out of scope: any clinical use.",
        "",
    ]
    lines += [
        "## Citation",
        "",
        "Xiao et al., Delving into Masked Autoencoders for Multi-Label Thorax Disease Classification, WACV 2023 (arXiv 2210.12843).",
        "",
    ]
    path = Path(output_dir) / "README.md"
    path.write_text("\n".join(lines))
    return path
