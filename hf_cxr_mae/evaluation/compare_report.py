"""compare.md and the files of a paired comparison (``hf-cxr-mae compare``): the table of both
models' AUROCs and their differences, with what each interval is; compare.json and compare.png
beside it. The statistics are ``compare.compare_scores``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..serving.prediction_file import Predictions
from ..tables import number, p_value, signed, signed_interval, table
from .compare import compare_scores

HEADER = (
    "Finding", "AUROC {a}", "AUROC {b}", "Difference A - B", "95% CI (DeLong)", "p (DeLong)",
    "p (Holm)", "95% CI (paired bootstrap)", "Positives / negatives",
)  # fmt: skip


def _finding_row(name: str, e: dict[str, Any]) -> list[str]:
    counts = f"{e['positives']} / {e['negatives']}"
    if e["difference"] is None:
        return [name, "undefined", "undefined", "-", "-", "-", "-", "-", counts]
    return [
        name, number(e["auroc_a"]), number(e["auroc_b"]), signed(e["difference"]),
        signed_interval(e["ci95"]), p_value(e["p_value"]), p_value(e.get("p_holm")),
        signed_interval(e["bootstrap_ci95"]), counts,
    ]  # fmt: skip


def markdown(result: dict[str, Any], names: Sequence[str]) -> str:
    """compare.md: the table of AUROCs and differences, with what each interval is."""
    header = [h.format(a=result["label_a"], b=result["label_b"]) for h in HEADER]
    rows = [_finding_row(name, result["findings"][name]) for name in names]
    m = result["mean"]
    if m["difference"] is not None:
        ci = signed_interval(m["ci95"])
        rows.append(
            ["**Mean AUROC**", f"**{number(m['auroc_a'])}**", f"**{number(m['auroc_b'])}**",
             f"**{signed(m['difference'])}**", f"{ci} (paired bootstrap)",
             f"{p_value(m['p_value'])} (bootstrap)", "-", ci, "-"]
        )  # fmt: skip
    lines = [
        f"# Paired comparison: A = {result['model_a']} vs B = {result['model_b']}",
        "",
        f"{result['num_images']} images scored by both models"
        + (f" ({result['data']})" if result.get("data") else "")
        + ".",
        "",
        *table(header, "l" * len(header), rows),
    ]
    lines += [
        "",
        "Per finding: DeLong's test for two correlated ROC curves (fast midrank algorithm, Sun & "
        "Xu 2014): the difference's 95% interval and two-sided p-value; Holm's adjustment for "
        f"testing {len(names) - len(result['undefined'])} findings. "
        f"Check: a paired bootstrap ({result['bootstrap']['resamples']} resamples of the "
        "images, the same for both models), percentile interval.",
        "",
        "Few positives make every interval wide and the normal approximation rough; a finding "
        "with fewer than 2 positive or negative images is not tested.",
        "",
        "Mean AUROC (over the findings with both classes here): the difference's interval is the "
        "paired bootstrap's percentile interval and its p-value the normal approximation with "
        "the bootstrap standard error (DeLong's test covers one finding at a time).",
    ]
    if result["undefined"]:
        lines += [
            "",
            "Undefined (one class only among these images, left out of the mean): "
            + ", ".join(result["undefined"])
            + ".",
        ]
    if result.get("left_out"):
        lines += [
            "",
            "Left out (no column in every file): "
            + "; ".join(f"{n} (not in {' nor '.join(v)})" for n, v in result["left_out"].items())
            + ".",
        ]
    if result.get("realigned"):
        lines += ["", "B's predictions listed the images in another order: re-aligned by image id."]
    lines += ["", "![comparison](compare.png)", ""]
    return "\n".join(lines)


def write_comparison(
    output_dir: str | Path,
    a: Predictions,
    b: Predictions,
    targets: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    realigned: bool = False,
    data: str | None = None,
    left_out: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """compare.json, compare.md and compare.png in ``output_dir``; returns the result.
    ``left_out``: findings not compared, each with the files that have no column for it."""
    from ..figures import comparison_figure

    if a.names != b.names:
        if sorted(a.names) != sorted(b.names):
            raise ValueError(f"The models predict different findings: A {a.names}, B {b.names}.")
        order = [b.names.index(n) for n in a.names]
        b = Predictions(b.ids, list(a.names), b.probabilities[:, order], b.source, b.meta)
    names = list(a.names)
    result = compare_scores(targets, a.probabilities, b.probabilities, names, n_resamples, seed)
    result.update(
        model_a=a.source,
        model_b=b.source,
        label_a="A",
        label_b="B",
        realigned=realigned,
        data=data,
        left_out=left_out or {},
    )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    (out / "compare.md").write_text(markdown(result, names))
    comparison_figure(result, names, out / "compare.png")
    return result
