"""Metrics for the Trainer: multi-label AUROC (our ``evaluate`` module) and single-label accuracy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from transformers import EvalPrediction

METRIC_PATH = (
    Path(__file__).resolve().parents[1] / "metrics" / "multilabel_auroc" / "multilabel_auroc.py"
)


@lru_cache(maxsize=1)
def load_auroc_metric():
    """The packaged multi-label AUROC metric, loaded by path (works offline)."""
    import evaluate

    return evaluate.load(str(METRIC_PATH))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def auroc_metrics(
    scores: np.ndarray, labels: np.ndarray, label_names: Sequence[str]
) -> dict[str, Any]:
    """Per-finding AUROC / AP, mAUC and counts from scores (``None`` where a finding has one class only)."""
    return load_auroc_metric().compute(
        predictions=scores, references=labels, label_names=list(label_names)
    )


def multilabel_metrics(
    logits: np.ndarray, labels: np.ndarray, label_names: Sequence[str]
) -> dict[str, Any]:
    """``auroc_metrics`` on sigmoid probabilities."""
    return auroc_metrics(sigmoid(np.asarray(logits, dtype=np.float64)), labels, label_names)


def single_label_metrics(
    logits: np.ndarray, labels: np.ndarray, label_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class sensitivity (recall) and PPV (precision), and one-vs-rest AUROC."""
    labels = np.asarray(labels).astype(int).reshape(-1)
    pred = np.asarray(logits).argmax(-1)
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    out = auroc_metrics(
        exp / exp.sum(-1, keepdims=True), np.eye(len(label_names))[labels], label_names
    )
    out["accuracy"] = float((pred == labels).mean())
    out["sensitivity"] = {
        n: float((pred[labels == k] == k).mean()) if (labels == k).any() else None
        for k, n in enumerate(label_names)
    }
    out["ppv"] = {
        n: float((labels[pred == k] == k).mean()) if (pred == k).any() else None
        for k, n in enumerate(label_names)
    }
    return out


def flatten_for_logs(metrics: dict[str, Any]) -> dict[str, float]:
    """Scalars the Trainer can log: mauc, accuracy and ``auroc_<finding>`` (defined ones only)."""
    flat: dict[str, float] = {}
    for key in ("mauc", "accuracy"):
        if metrics.get(key) is not None:
            flat[key] = metrics[key]
    for name, value in metrics.get("auroc", {}).items():
        if value is not None:
            flat[f"auroc_{name.replace(' ', '_')}"] = value
    return flat


def compute_metrics_fn(
    label_names: Sequence[str], problem_type: str
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` for the Trainer."""
    compute = (
        single_label_metrics
        if problem_type == "single_label_classification"
        else multilabel_metrics
    )

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = (
            prediction.predictions[0]
            if isinstance(prediction.predictions, tuple)
            else prediction.predictions
        )
        return flatten_for_logs(compute(logits, prediction.label_ids, label_names))

    return compute_metrics
