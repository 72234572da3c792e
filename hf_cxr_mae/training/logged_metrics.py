"""The Trainer's ``compute_metrics``: the shared classification metrics
(``hf_cxr_mae.metrics.classification``) flattened to the scalars the Trainer logs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from transformers import EvalPrediction

from ..metrics.classification import metrics_for


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
    compute = metrics_for(problem_type)

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = (
            prediction.predictions[0]
            if isinstance(prediction.predictions, tuple)
            else prediction.predictions
        )
        return flatten_for_logs(compute(logits, prediction.label_ids, label_names))

    return compute_metrics
