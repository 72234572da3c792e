"""Classification metrics shared by training (the Trainer's ``compute_metrics``, metrics.json)
and the evaluation reports: probabilities from logits, per-finding AUROC / AP (our packaged
``evaluate`` module) and the single-label accuracy, sensitivity and PPV."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

METRIC_PATH = Path(__file__).resolve().parent / "multilabel_auroc" / "multilabel_auroc.py"

SINGLE_LABEL = "single_label_classification"


@lru_cache(maxsize=1)
def load_auroc_metric():
    """The packaged multi-label AUROC metric, loaded by path (works offline)."""
    import evaluate

    return evaluate.load(str(METRIC_PATH))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    exp = np.exp(x - x.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def probabilities(logits: np.ndarray, problem_type: str | None) -> np.ndarray:
    """float64 probabilities: softmax over classes (single-label), sigmoid per finding otherwise."""
    logits = np.asarray(logits, dtype=np.float64)
    return softmax(logits) if problem_type == SINGLE_LABEL else sigmoid(logits)


def scores_and_targets(
    logits: np.ndarray, labels: np.ndarray, num_labels: int, problem_type: str
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and one score column per finding / class: softmax against one-hot class
    labels (single-label), sigmoid against the multi-hot labels (multi-label)."""
    if problem_type == SINGLE_LABEL:
        classes = np.asarray(labels).astype(int).reshape(-1)
        return probabilities(logits, problem_type), np.eye(num_labels)[classes]
    return probabilities(logits, problem_type), np.asarray(labels, dtype=np.float64)


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
    scores, targets = scores_and_targets(logits, labels, len(label_names), SINGLE_LABEL)
    out = auroc_metrics(scores, targets, label_names)
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


def metrics_for(
    problem_type: str,
) -> Callable[[np.ndarray, np.ndarray, Sequence[str]], dict[str, Any]]:
    """The metric function of a problem type: single-label or multi-label."""
    return single_label_metrics if problem_type == SINGLE_LABEL else multilabel_metrics
