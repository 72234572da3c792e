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

from ..data.metadata import subgroup_columns
from ..figures import confusion_figure, roc_figure
from ..metrics.bootstrap import bootstrap_aurocs, percentile_interval
from ..metrics.calibration import calibration_summary
from ..metrics.classification import SINGLE_LABEL, metrics_for, scores_and_targets
from ..metrics.operating_points import rates_at
from ..metrics.subgroups import age_bands, subgroup_report
from ..tables import (
    calibration_rows,
    interval,
    number,
    operating_point_rows,
    subgroup_rows,
    subgroup_stats,
    table,
)
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


def _markdown(report: dict[str, Any], names: list[str], figures: list[str]) -> str:
    lines = [f"# Evaluation on {report['split']} ({report['num_images']} images)", ""]
    if report.get("model"):
        lines += [f"Model: `{report['model']}`", ""]
    ci = report["mauc_ci95"]
    mauc = f"**mAUC {number(report['mauc'])}**" + (f" (95% CI {interval(ci)})" if ci else "")
    lines += [mauc, ""]
    if "accuracy" in report:
        lines += [f"Accuracy {number(report['accuracy'])}", ""]
    header = ["finding", "AUROC", "95% CI", "AP", "positives", "negatives"]
    rows = [
        [n, number(report["auroc"][n]), interval(report["auroc_ci95"][n]),
         number(report["average_precision"][n]), report["positives"][n], report["negatives"][n]]
        for n in names
    ]  # fmt: skip
    lines += table(header, "lrrrrr", rows)
    lines += [
        "",
        f"Confidence intervals: {report['bootstrap']['resamples']} bootstrap resamples ({report['bootstrap']['method']}).",
    ]
    if report.get("note"):
        lines += ["", report["note"]]
    if "sensitivity" in report:
        rows = [[n, number(report["sensitivity"][n]), number(report["ppv"][n])] for n in names]
        lines += ["", *table(["class", "sensitivity", "PPV"], "lrr", rows)]
    lines += external_lines(report)
    lines += calibration_lines(report, names)
    lines += operating_point_lines(report, names)
    lines += subgroup_lines(report, names)
    lines += [""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


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
    rows = calibration_rows({n: calibration["ece"][n] for n in names}, temperatures)
    return [
        "",
        "## Calibration",
        "",
        f"Expected calibration error (ECE, {calibration['n_bins']} equal-width bins; 0 is "
        f"perfect) of the probabilities, which are {how}. Mean ECE "
        f"{number(calibration['mean_ece'])}.",
        "",
        # The T column only for a temperature-scaled model.
        *(
            table(["finding", "ECE", "T"], "lrr", rows)
            if temperatures
            else table(["finding", "ECE"], "lr", [r[:2] for r in rows])
        ),
    ]


def operating_point_lines(report: dict[str, Any], names: list[str]) -> list[str]:
    """Markdown: the stored thresholds and their sensitivity / specificity / PPV / NPV here."""
    points = report.get("operating_points")
    if not points:
        return []
    method = points.get("method")
    chosen = "Youden's J" if method == "youden" else f"{method} >= {points.get('target')}"
    header = ["finding", "threshold", "sensitivity", "specificity", "PPV", "NPV", "TP", "FP", "TN", "FN"]  # fmt: skip
    rows = operating_point_rows(names, points.get("thresholds", {}), points["rates"])
    return [
        "",
        "## Operating points",
        "",
        f"Thresholds chosen on the **{points.get('fitted_on', 'validation')}** split ({chosen}), "
        f"stored in the model's config.json, applied here to the {report['split']} split "
        "(flagged: probability >= threshold); 95% intervals from bootstrap resamples of the images.",
        "",
        *table(header, "l" + "r" * 9, rows),
    ]


def subgroup_lines(report: dict[str, Any], names: list[str]) -> list[str]:
    """Markdown: mAUC per subgroup with intervals and counts (flagged when its interval lies
    below the overall value), AUROC per finding, and TPR / FPR at the stored thresholds."""
    subgroups = report.get("subgroups")
    if not subgroups:
        return []
    stats = subgroup_stats(subgroups)
    header = ["group", "value", "images", "mAUC", "95% CI", "overall, same findings", "flag"]
    per_finding, align = ["group", "value", *names], "ll" + "r" * len(names)
    aurocs = [
        [c, v, *(f"{number(s['auroc'][n])} ({s['positives'][n]})" for n in names)]
        for c, v, s in stats
    ]
    lines = [
        "",
        "## Subgroups",
        "",
        "Mean AUROC per subgroup over the findings with both classes in it, compared with the "
        "overall mean over the same findings; **below** marks a subgroup whose 95% interval "
        f"lies entirely under it ({subgroups['resamples']} bootstrap resamples of the "
        "subgroup's images). Small subgroups have wide intervals.",
        "",
        *table(header, "llrrrrl", subgroup_rows(subgroups)),
        "",
        "AUROC per finding and subgroup (positives in brackets):",
        "",
        *table(per_finding, align, aurocs),
    ]
    if "tpr" in subgroups["overall"]:
        rates = [
            [c, v, *(f"{number(s['tpr'].get(n))} / {number(s['fpr'].get(n))}"
                     if n in s["tpr"] else "-" for n in names)]
            for c, v, s in stats
        ]  # fmt: skip
        lines += [
            "",
            "True-positive / false-positive rate per subgroup at the stored thresholds (the gaps "
            "an equal-opportunity audit looks at):",
            "",
            *table(per_finding, align, rates),
        ]
    return lines
