"""What fine-tuning fits on the VALIDATION split once training is over, never on test:
temperature scaling (``--temperature_scaling``, folded into the head) and then, on the
calibrated probabilities, per-finding operating points (``--operating_point``). Both are stored
in the model's config.json and the model is saved again."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from ..metrics.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    calibration_summary,
    fit_temperature,
)
from ..metrics.classification import SINGLE_LABEL, scores_and_targets
from ..metrics.operating_points import choose_threshold
from ..processing import fold_temperature

logger = logging.getLogger("hf_cxr_mae")


def logits_of(prediction) -> np.ndarray:
    """The logits of a ``trainer.predict`` output (first element when the model returns more)."""
    p = prediction.predictions
    return np.asarray(p[0] if isinstance(p, tuple) else p, dtype=np.float64)


def fit_softmax_temperature(logits: np.ndarray, classes: np.ndarray) -> float:
    """One temperature T minimising the cross-entropy of softmax(logits / T) (single-label);
    the search bounds of ``metrics.calibration.fit_temperature``."""
    logits = np.asarray(logits, dtype=np.float64)
    classes = np.asarray(classes).astype(int).reshape(-1)

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(-1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
        return float(-log_p[np.arange(len(classes)), classes].mean())

    result = minimize_scalar(
        nll,
        bounds=(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def fit_temperatures(
    logits: np.ndarray, labels: np.ndarray, names: list[str], problem_type: str
) -> dict[str, float]:
    """Per finding (multi-label, binary cross-entropy) or one for all classes (single-label)."""
    if problem_type == SINGLE_LABEL:
        t = fit_softmax_temperature(logits, labels)
        return dict.fromkeys(names, t)
    labels = np.asarray(labels, dtype=np.float64)
    return {n: fit_temperature(logits[:, j], labels[:, j]) for j, n in enumerate(names)}


def choose_operating_points(
    probabilities: np.ndarray, targets: np.ndarray, names: list[str], method: str, target: float
) -> dict[str, Any]:
    """``config.operating_points``: a threshold per finding chosen on these (validation) images;
    None, with a warning, for a finding without both classes here."""
    thresholds: dict[str, float | None] = {}
    for j, name in enumerate(names):
        try:
            thresholds[name] = choose_threshold(
                targets[:, j], probabilities[:, j], method, None if method == "youden" else target
            )
        except ValueError as err:
            logger.warning("No operating point for %s on the validation split: %s", name, err)
            thresholds[name] = None
    return {
        "method": method,
        "target": None if method == "youden" else target,
        "fitted_on": "validation",
        "thresholds": thresholds,
    }


def _mean_ece(summary: dict[str, dict]) -> float | None:
    values = [s["ece"] for s in summary.values() if s["ece"] is not None]
    return float(np.mean(values)) if values else None


def fit_on_validation(
    trainer, validation, prediction, names: list[str], problem_type: str, args
) -> dict[str, Any]:
    """Temperature scaling (folded into ``trainer.model``) then operating points, both fitted on
    ``prediction`` (the final model's predictions on ``validation``) and recorded in the model's
    config. Returns what was fitted and its effect on validation (for metrics.json); ``{}`` when
    nothing was asked for. Every process fits the same values from the same gathered predictions."""
    logits, labels = logits_of(prediction), prediction.label_ids
    model = trainer.model
    fitted: dict[str, Any] = {"split": "validation", "num_images": len(logits)}
    if args.temperature_scaling:
        scores, targets = scores_and_targets(logits, labels, len(names), problem_type)
        before = calibration_summary(targets, scores, names)
        temperatures = fit_temperatures(logits, labels, names, problem_type)
        fold_temperature(model, temperatures)
        # The folded model's own predictions: what is saved is what the thresholds see.
        logits = logits_of(trainer.predict(validation, metric_key_prefix="calibrated"))
        scores, targets = scores_and_targets(logits, labels, len(names), problem_type)
        after = calibration_summary(targets, scores, names)
        fitted["temperature_scaling"] = {
            "temperatures": temperatures,
            "ece_before": {n: before[n]["ece"] for n in names},
            "ece_after": {n: after[n]["ece"] for n in names},
            "mean_ece_before": _mean_ece(before),
            "mean_ece_after": _mean_ece(after),
        }
        logger.info(
            "Temperature scaling on validation: mean ECE %s -> %s",
            fitted["temperature_scaling"]["mean_ece_before"],
            fitted["temperature_scaling"]["mean_ece_after"],
        )
    if args.operating_point != "none" and problem_type != SINGLE_LABEL:
        scores, targets = scores_and_targets(logits, labels, len(names), problem_type)
        points = choose_operating_points(
            scores, targets, names, args.operating_point, args.operating_target
        )
        model.config.operating_points = points
        fitted["operating_points"] = points
        logger.info(
            "Operating points (%s) on validation: %s", points["method"], points["thresholds"]
        )
    return fitted if len(fitted) > 2 else {}


def warn_nothing_fitted(args, problem_type: str) -> None:
    """Without a validation split there is nothing to fit on (test is never used): say so."""
    asked = ["--temperature_scaling"] if args.temperature_scaling else []
    if args.operating_point != "none" and problem_type != SINGLE_LABEL:
        asked.append(f"--operating_point {args.operating_point}")
    if asked:
        logger.warning(
            "No validation split: %s skipped (they are fitted on validation, never on test); "
            "the model has no stored thresholds or temperatures.",
            " and ".join(asked),
        )


# Files of a saved model that post-processing changes: the weights first, config.json (the
# record of what was fitted) last, so a crash in between never claims a calibration it lacks.
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def resave_model(trainer, weights: bool) -> None:
    """Save the post-processed model over the one saved right after training: into a staging
    folder first, then each file moved into place (a crash leaves whole files only)."""
    out = Path(trainer.args.output_dir)
    staging = out / ".postprocessed"
    if weights:
        trainer.save_model(str(staging))  # every process: gathers sharded weights if any
    elif trainer.is_world_process_zero():
        trainer.model.config.save_pretrained(staging)
    if not trainer.is_world_process_zero():
        return
    files = sorted(p for p in staging.iterdir() if p.name.endswith(".safetensors"))
    files += [staging / n for n in _WEIGHTS[1:] if (staging / n).is_file()]
    for path in [*files, staging / "config.json"] if weights else [staging / "config.json"]:
        os.replace(path, out / path.name)
    shutil.rmtree(staging, ignore_errors=True)
