"""Evaluation reports people can read: metrics.json, ROC panels, confusion matrix, report.md.

Plots need matplotlib (``pip install 'hf-cxr-mae[viz]'``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from .metrics.classification import SINGLE_LABEL, metrics_for, scores_and_targets


def _auroc_or_nan(y: np.ndarray, s: np.ndarray) -> float:
    keep = y != -1
    y, s = y[keep], s[keep]
    if y.size == 0 or y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, s))


def bootstrap_auroc(
    scores: np.ndarray,
    labels: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[list[tuple[float, float] | None], tuple[float, float] | None]:
    """Percentile bootstrap CIs (images resampled with replacement) per finding and for the mean.

    A resample where a finding has one class only is skipped for that finding; a finding whose
    resamples are all such gets None.
    """
    rng = np.random.default_rng(seed)
    n, k = labels.shape
    per = [[] for _ in range(k)]
    means = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        values = [_auroc_or_nan(labels[idx, j], scores[idx, j]) for j in range(k)]
        for j, v in enumerate(values):
            if not math.isnan(v):
                per[j].append(v)
        defined = [v for v in values if not math.isnan(v)]
        if defined:
            means.append(float(np.mean(defined)))
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def interval(values: list[float]) -> tuple[float, float] | None:
        return (
            (float(np.percentile(values, lo)), float(np.percentile(values, hi))) if values else None
        )

    return [interval(v) for v in per], interval(means)


def roc_figure(scores: np.ndarray, labels: np.ndarray, names: Sequence[str], path: Path) -> None:
    """A panel per finding: ROC curve, chance line, AUROC and counts in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for j, name in enumerate(names):
        ax = axes[j // cols][j % cols]
        keep = labels[:, j] != -1
        y, s = labels[keep, j], scores[keep, j]
        ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
        if y.size and y.min() != y.max():
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, linewidth=1.8)
            title = (
                f"{name}\nAUROC {roc_auc_score(y, s):.3f} ({int(y.sum())}+/{int((y == 0).sum())}-)"
            )
        else:
            title = f"{name}\nAUROC undefined (one class)"
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("1 - specificity", fontsize=8)
        ax.set_ylabel("sensitivity", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_aspect("equal")
    for j in range(len(names), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_figure(matrix: np.ndarray, names: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 1.2 + 0.8 * len(names)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color=color, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    output_dir: str | Path,
    logits: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    split: str,
    problem_type: str = "multi_label_classification",
    n_resamples: int = 1000,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write metrics.json, roc.png (and confusion_matrix.png for single-label) and report.md."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(names)
    single = problem_type == SINGLE_LABEL
    scores, targets = scores_and_targets(logits, labels, len(names), problem_type)
    report: dict[str, Any] = {"split": split, "num_images": len(targets), **(extra or {})}
    # AUROC / AP per finding (and accuracy, sensitivity, PPV single-label): the training metrics.
    report.update(metrics_for(problem_type)(logits, labels, names))
    per_ci, mean_ci = bootstrap_auroc(scores, targets, n_resamples, seed)
    report["auroc_ci95"] = {
        n: (list(ci) if ci else None) for n, ci in zip(names, per_ci, strict=True)
    }
    report["mauc_ci95"] = list(mean_ci) if mean_ci else None
    report["bootstrap"] = {
        "resamples": n_resamples,
        "seed": seed,
        "method": "percentile, images resampled with replacement",
    }
    if report["undefined"]:
        report["note"] = (
            f"AUROC undefined (one class only in this split) for {report['undefined']}: left out of mAUC."
        )
    if single and len(names) == 2:
        # Two classes: the second class's curve is the first's mirrored; draw it once.
        roc_figure(scores[:, 1:], targets[:, 1:], [f"{names[1]} vs {names[0]}"], out / "roc.png")
    else:
        roc_figure(scores, targets, names, out / "roc.png")
    figures = ["roc.png"]
    if single:
        classes = targets.argmax(-1)
        matrix = np.zeros((len(names), len(names)), dtype=int)
        np.add.at(matrix, (classes, scores.argmax(-1)), 1)
        report["confusion_matrix"] = matrix.tolist()
        confusion_figure(matrix, names, out / "confusion_matrix.png")
        figures.append("confusion_matrix.png")
    write_metrics_json(out, report)
    (out / "report.md").write_text(_markdown(report, names, figures))
    return report


def write_metrics_json(output_dir: str | Path, report: dict[str, Any]) -> Path:
    """metrics.json, the one writer (evaluation reports and the runs' test metrics)."""
    path = Path(output_dir) / "metrics.json"
    path.write_text(json.dumps(report, indent=2))
    return path


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _markdown(report: dict[str, Any], names: list[str], figures: list[str]) -> str:
    lines = [f"# Evaluation on {report['split']} ({report['num_images']} images)", ""]
    if report.get("model"):
        lines += [f"Model: `{report['model']}`", ""]
    ci = report["mauc_ci95"]
    lines += [
        f"**mAUC {_fmt(report['mauc'])}**" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""),
        "",
    ]
    if "accuracy" in report:
        lines += [f"Accuracy {report['accuracy']:.3f}", ""]
    lines += [
        "| finding | AUROC | 95% CI | AP | positives | negatives |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for n in names:
        c = report["auroc_ci95"][n]
        lines.append(
            f"| {n} | {_fmt(report['auroc'][n])} | {f'{c[0]:.3f}-{c[1]:.3f}' if c else '-'} | "
            f"{_fmt(report['average_precision'][n])} | {report['positives'][n]} | {report['negatives'][n]} |"
        )
    lines += [
        "",
        f"Confidence intervals: {report['bootstrap']['resamples']} bootstrap resamples ({report['bootstrap']['method']}).",
    ]
    if report.get("note"):
        lines += ["", report["note"]]
    if "sensitivity" in report:
        lines += ["", "| class | sensitivity | PPV |", "|---|--:|--:|"]
        lines += [
            f"| {n} | {_fmt(report['sensitivity'][n])} | {_fmt(report['ppv'][n])} |" for n in names
        ]
    lines += [""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)
