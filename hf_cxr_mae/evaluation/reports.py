"""Evaluation reports people can read: metrics.json, ROC panels, confusion matrix, calibration
(ECE, reliability diagrams), the stored operating points' rates, subgroups, report.md.

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

from ..data.metadata import subgroup_columns
from ..metrics.bootstrap import bootstrap_aurocs, percentile_interval
from ..metrics.calibration import calibration_summary
from ..metrics.classification import SINGLE_LABEL, metrics_for, scores_and_targets
from ..metrics.operating_points import rates_at
from ..metrics.subgroups import age_bands, subgroup_report
from .external_report import add_source_comparison, external_lines

ECE_BINS = 15


def bootstrap_auroc(
    scores: np.ndarray,
    labels: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[list[list[float] | None], list[float] | None]:
    """Percentile bootstrap CIs (images resampled with replacement) per finding and for the mean.

    A resample where a finding has one class only is skipped for that finding (and left out of
    that resample's mean); a finding whose resamples are all such gets None.
    """
    per = bootstrap_aurocs(labels, scores, n_resamples, seed)
    defined = np.isfinite(per).any(1)
    means = np.nanmean(per[defined], axis=1) if defined.any() else np.zeros(0)
    per_ci = [percentile_interval(per[:, j], level) for j in range(per.shape[1])]
    return per_ci, percentile_interval(means, level)


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
    groups: dict[str, Sequence[Any]] | None = None,
    config: Any = None,
) -> dict[str, Any]:
    """Write metrics.json, roc.png, reliability.png (and confusion_matrix.png for single-label,
    subgroups.png with ``groups``) and report.md.

    ``groups`` (``metadata_groups``: one value per image, in the order of ``logits``) adds the
    subgroup report; ``config`` (the model's) adds the rates of its stored operating points on
    these images and says whether its probabilities are temperature-scaled."""
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
    figures += _clinical_sections(
        report, out, scores, targets, names, groups, config, single, n_resamples, seed
    )
    if "external_validation" in report:  # a model of another source: against its own test
        add_source_comparison(report)
    write_metrics_json(out, report)
    (out / "report.md").write_text(_markdown(report, names, figures))
    return report


def metadata_groups(dataset) -> dict[str, list]:
    """Subgroups of a dataset's images, one value per row in row order, for ``write_report``:
    every metadata column (``subgroup_columns``: sex, age, view, user columns), ages as bands
    (under ``age_band``)."""
    groups: dict[str, list] = {}
    for column in subgroup_columns(dataset):
        # One column as Arrow: no image is read, whatever transform the dataset carries.
        values = dataset.select_columns([column]).with_format("arrow")[:][column].to_pylist()
        if column == "age":
            groups["age_band"] = list(age_bands(values))
        else:
            groups[column] = values
    return groups


def _clinical_sections(
    report: dict[str, Any],
    out: Path,
    scores: np.ndarray,
    targets: np.ndarray,
    names: list[str],
    groups: dict[str, Sequence[Any]] | None,
    config: Any,
    single: bool,
    n_resamples: int,
    seed: int,
) -> list[str]:
    """Calibration, the stored operating points' rates and the subgroups, into ``report``; their
    figures into ``out``. Returns the figures' file names."""
    from .. import figures

    summary = calibration_summary(targets, scores, names, ECE_BINS)
    eces = {n: summary[n]["ece"] for n in names}
    defined = [v for v in eces.values() if v is not None]
    report["calibration"] = {
        "ece": eces,
        "mean_ece": float(np.mean(defined)) if defined else None,
        "n_bins": ECE_BINS,
        "temperature_scaling": getattr(config, "calibration", None),
        "reliability": {n: {k: v for k, v in summary[n].items() if k != "ece"} for n in names},
    }
    figures.reliability_figure(targets, scores, names, out / "reliability.png")
    shown = ["reliability.png"]

    points = getattr(config, "operating_points", None)
    thresholds = None
    if points and not single:  # thresholds are per finding: multi-label only
        thresholds = {
            n: t for n, t in points.get("thresholds", {}).items() if t is not None and n in names
        }
        rates = {
            n: rates_at(targets[:, j], scores[:, j], thresholds[n], n_resamples, seed)
            if n in thresholds
            else None
            for j, n in enumerate(names)
        }
        report["operating_points"] = {**points, "evaluated_on": report["split"], "rates": rates}
    if groups:
        report["subgroups"] = subgroup_report(
            scores, targets, names, groups, thresholds, n_resamples, seed
        )
        figures.subgroup_figure(report["subgroups"], out / "subgroups.png")
        shown.append("subgroups.png")
    return shown


def _jsonable(value: Any) -> Any:
    """Plain JSON: NumPy scalars as numbers, NaN as null (``json`` would write bare NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    return value


def write_metrics_json(output_dir: str | Path, report: dict[str, Any]) -> Path:
    """metrics.json, the one writer (evaluation reports and the runs' test metrics)."""
    path = Path(output_dir) / "metrics.json"
    path.write_text(json.dumps(_jsonable(report), indent=2))
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
    lines += external_lines(report)
    lines += calibration_lines(report, names)
    lines += operating_point_lines(report, names)
    lines += subgroup_lines(report, names)
    lines += [""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def _ci(interval: Sequence[float] | None) -> str:
    return f"{interval[0]:.3f}-{interval[1]:.3f}" if interval else "-"


def calibration_lines(report: dict[str, Any], names: list[str]) -> list[str]:
    """Markdown: ECE per finding and whether (and with which T) the model is temperature-scaled."""
    calibration = report.get("calibration")
    if not calibration:
        return []
    scaled = calibration.get("temperature_scaling")
    temperatures = (scaled or {}).get("temperatures", {})
    how = (
        f"temperature-scaled (T fitted on the {scaled.get('fitted_on', 'validation')} split, "
        "folded into the model's head)"
        if scaled
        else "not temperature-scaled"
    )
    lines = [
        "",
        "## Calibration",
        "",
        f"Expected calibration error (ECE, {calibration['n_bins']} equal-width bins; 0 is "
        f"perfect) of the probabilities, which are {how}. Mean ECE "
        f"{_fmt(calibration['mean_ece'])}.",
        "",
        "| finding | ECE |" + (" T |" if temperatures else ""),
        "|---|--:|" + ("--:|" if temperatures else ""),
    ]
    for n in names:
        t = f" {temperatures[n]:.3f} |" if n in temperatures else ""
        lines.append(f"| {n} | {_fmt(calibration['ece'][n])} |{t}")
    return lines


def operating_point_lines(report: dict[str, Any], names: list[str]) -> list[str]:
    """Markdown: the stored thresholds and their sensitivity / specificity / PPV / NPV here."""
    points = report.get("operating_points")
    if not points:
        return []
    method = points.get("method")
    chosen = "Youden's J" if method == "youden" else f"{method} >= {points.get('target')}"
    lines = [
        "",
        "## Operating points",
        "",
        f"Thresholds chosen on the **{points.get('fitted_on', 'validation')}** split ({chosen}), "
        f"stored in the model's config.json, applied here to the {report['split']} split "
        "(flagged: probability >= threshold); 95% intervals from bootstrap resamples of the images.",
        "",
        "| finding | threshold | sensitivity | specificity | PPV | NPV | TP | FP | TN | FN |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for n in names:
        rates = points["rates"].get(n)
        if rates is None:
            lines.append(f"| {n} | none (one class on validation) | - | - | - | - | | | | |")
            continue
        cells = [
            f"{_fmt(rates[k]['value'])} ({_ci(rates[k]['ci95'])})"
            for k in ("sensitivity", "specificity", "ppv", "npv")
        ]
        counts = " | ".join(str(rates[k]) for k in ("tp", "fp", "tn", "fn"))
        lines.append(f"| {n} | {rates['threshold']:.4f} | {' | '.join(cells)} | {counts} |")
    return lines


def subgroup_rows(subgroups: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(column, value, stats) for the overall row and each subgroup, in report order."""
    rows = [("overall", "all", subgroups["overall"])]
    for column, by_value in subgroups["groups"].items():
        rows += [(column, value, stats) for value, stats in by_value.items()]
    return rows


def subgroup_lines(report: dict[str, Any], names: list[str]) -> list[str]:
    """Markdown: mAUC per subgroup with intervals and counts (flagged when its interval lies
    below the overall value), AUROC per finding, and TPR / FPR at the stored thresholds."""
    subgroups = report.get("subgroups")
    if not subgroups:
        return []
    rows = subgroup_rows(subgroups)
    lines = [
        "",
        "## Subgroups",
        "",
        "Mean AUROC per subgroup over the findings with both classes in it, compared with the "
        "overall mean over the same findings; **below** marks a subgroup whose 95% interval "
        f"lies entirely under it ({subgroups['resamples']} bootstrap resamples of the "
        "subgroup's images). Small subgroups have wide intervals.",
        "",
        "| group | value | images | mAUC | 95% CI | overall, same findings | flag |",
        "|---|---|--:|--:|--:|--:|---|",
    ]
    for column, value, stats in rows:
        flag = "**below**" if stats.get("below_overall") else ""
        reference = stats.get("overall_mauc", stats["mauc"])
        lines.append(
            f"| {column} | {value} | {stats['count']} | {_fmt(stats['mauc'])} | "
            f"{_ci(stats['mauc_ci95'])} | {_fmt(reference)} | {flag} |"
        )
    lines += [
        "",
        "AUROC per finding and subgroup (positives in brackets):",
        "",
        "| group | value | " + " | ".join(names) + " |",
        "|---|---|" + "--:|" * len(names),
    ]
    for column, value, stats in rows:
        cells = [f"{_fmt(stats['auroc'][n])} ({stats['positives'][n]})" for n in names]
        lines.append(f"| {column} | {value} | " + " | ".join(cells) + " |")
    if "tpr" in subgroups["overall"]:
        lines += [
            "",
            "True-positive / false-positive rate per subgroup at the stored thresholds (the gaps "
            "an equal-opportunity audit looks at):",
            "",
            "| group | value | " + " | ".join(names) + " |",
            "|---|---|" + "--:|" * len(names),
        ]
        for column, value, stats in rows:
            cells = [
                f"{_fmt(stats['tpr'].get(n))} / {_fmt(stats['fpr'].get(n))}"
                if n in stats["tpr"]
                else "-"
                for n in names
            ]
            lines.append(f"| {column} | {value} | " + " | ".join(cells) + " |")
    return lines
