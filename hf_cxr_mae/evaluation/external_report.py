"""The external-validation part of an evaluation report: the model's own test report set beside
the external results (AUROC, and sensitivity / specificity at the stored thresholds, which were
fitted on the source's validation split), the markdown section of report.md, and the model
card's row for it.

The source test and the external set share no image: the comparison is two sets of numbers
with their own intervals, never a paired test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..tables import estimate, number, signed

UNPAIRED_NOTE = (
    "Other images: the source's test split and this set share no image, so this is not a paired "
    "comparison and no p-value is computed (DeLong's test and the paired bootstrap pair each "
    "image's two scores). Each interval is its own set's bootstrap; label definitions, "
    "prevalence and population differ between the sets too."
)
RATES = ("sensitivity", "specificity")


def source_test_report(model_path: str) -> dict[str, Any] | None:
    """The model's own test report (metrics.json with split 'test' in its folder), if any."""
    path = Path(str(model_path)) / "metrics.json"
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return report if report.get("split") == "test" and report.get("auroc") else None


def _pair(source: float | None, external: float | None) -> dict[str, Any]:
    drop = None if source is None or external is None else source - external
    return {"source": source, "external": external, "drop": drop}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def add_source_comparison(report: dict[str, Any]) -> None:
    """``report["external_validation"]["against_source_test"]``: per scored finding the AUROC on
    the model's own test split and here (with both intervals) and its drop, the stored
    threshold's sensitivity / specificity there and here and their drops; None (with a note)
    when the model's folder holds no test report."""
    block = report["external_validation"]
    source = source_test_report(block["model_source"]["model"])
    if source is None:
        block["against_source_test"] = None
        block["against_source_test_note"] = (
            "No test report (metrics.json of split 'test') in the model's folder: nothing to "
            "compare with."
        )
        return
    names = list(report["auroc"])
    here = (report.get("operating_points") or {}).get("rates") or {}
    there = (source.get("operating_points") or {}).get("rates") or {}
    findings: dict[str, Any] = {}
    for name in names:
        entry = {
            "auroc": {
                **_pair(source["auroc"].get(name), report["auroc"].get(name)),
                "source_ci95": (source.get("auroc_ci95") or {}).get(name),
                "external_ci95": (report.get("auroc_ci95") or {}).get(name),
            }
        }
        h, t = here.get(name), there.get(name)
        if h or t:
            entry["threshold"] = (h or t)["threshold"]
            for rate in RATES:
                entry[rate] = {
                    **_pair(t[rate]["value"] if t else None, h[rate]["value"] if h else None),
                    "source_ci95": t[rate]["ci95"] if t else None,
                    "external_ci95": h[rate]["ci95"] if h else None,
                }
        findings[name] = entry
    both = [n for n in names if findings[n]["auroc"]["drop"] is not None]
    block["against_source_test"] = {
        "report": "metrics.json in the model's folder",
        "num_images": source.get("num_images"),
        "findings": findings,
        "mean_auroc": {
            "findings": both,
            **_pair(
                _mean([findings[n]["auroc"]["source"] for n in both]),
                _mean([findings[n]["auroc"]["external"] for n in both]),
            ),
        },
        "paired": False,
        "p_value": None,
        "note": UNPAIRED_NOTE,
    }


def external_lines(report: dict[str, Any]) -> list[str]:
    """Markdown: the sources, the label map, what was left out and why, and the comparison with
    the model's own test report."""
    block = report.get("external_validation")
    if not block:
        return []
    return ["", "## External validation", *label_map_lines(block), *_source_lines(block)]


def label_map_lines(block: dict[str, Any]) -> list[str]:
    """Markdown: the sources of model and data, the uncertainty policy, what 'no finding' means
    there, the label map, and what was left out and why (an ``external_validation`` block)."""
    model, data, lm = block["model_source"], block["data_source"], block["label_map"]
    method = (
        "`auto`: the harmonised table, `hf_cxr_mae.data.label_space`"
        if lm["method"] == "auto"
        else f"`{lm['method']}`"
    )
    lines = [
        "",
        f"Model `{model['model']}`, trained on **{model['dataset'] or 'unknown data'}** (from "
        f"{model['from']}); evaluated on **{data['dataset']}**"
        + (f" (`{data['data_dir']}`)" if data.get("data_dir") else "")
        + f", split {data['split']}, {block['num_images']} images.",
    ]
    if data.get("uncertainty"):
        u = data["uncertainty"]
        given = "given" if u["given"] else "the loader's default"
        lines += ["", f"Uncertain labels: policy `{u['policy']}` ({given}): {u['rule']}."]
    if data.get("no_finding"):
        lines += ["", f"'No finding' here: {data['no_finding']['meaning']}"]
    if data.get("note"):
        lines += ["", f"Note: {data['note']}"]
    lines += [
        "",
        f"Label map ({method}): only these findings are scored.",
        "",
        "| model finding | dataset label(s) | why |",
        "|---|---|---|",
    ]
    lines += [f"| {f} | {' / '.join(lm['sources'][f])} | {lm['why'][f]} |" for f in lm["findings"]]
    if lm["normal"]:
        lines += ["", f"Normal class, the negatives: {', '.join(lm['normal'])}."]
    if dropped := block.get("images_left_out"):
        shown = ", ".join(f"{n} of {c}" for c, n in dropped.items())
        lines += ["", f"Images left out (their class maps to no finding): {shown}."]
    for side, left in (("model findings", lm["left_out_model"]), ("dataset labels", lm["left_out_dataset"])):  # fmt: skip
        if left:
            lines += ["", f"Left out, {side}:", "", "| name | why |", "|---|---|"]
            lines += [f"| {name} | {why} |" for name, why in left.items()]
    return lines


def _source_lines(block: dict[str, Any]) -> list[str]:
    against = block.get("against_source_test")
    lines = ["", "### Against the model's own test split", ""]
    if against is None:
        return [*lines, block.get("against_source_test_note", "")]
    lines += [
        f"{against['num_images']} test images of the source. {against['note']} Thresholds: "
        "the model's stored operating points, fitted on the source's validation split.",
        "",
        "| finding | AUROC source test | AUROC here | drop | threshold | sensitivity source "
        "-> here (drop) | specificity source -> here (drop) |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, e in against["findings"].items():
        a = e["auroc"]
        rates = [
            f"{number(e[r]['source'], missing='-')} -> {number(e[r]['external'], missing='-')} "
            f"({signed(e[r]['drop'])})"
            if r in e
            else "-"
            for r in RATES
        ]
        threshold = number(e.get("threshold"), 4, missing="none")
        lines.append(
            f"| {name} | {estimate(a['source'], a['source_ci95'], '-')} | "
            f"{estimate(a['external'], a['external_ci95'], '-')} | {signed(a['drop'])} | {threshold} | "
            + " | ".join(rates)
            + " |"
        )
    m = against["mean_auroc"]
    lines.append(
        f"| **mean** ({len(m['findings'])} findings) | {number(m['source'], missing='-')} | "
        f"{number(m['external'], missing='-')} | {signed(m['drop'])} | | | |"
    )
    return lines


def external_result(report: dict[str, Any] | str | Path) -> dict[str, Any]:
    """A model card's ``external_results`` entry from an external evaluation's metrics.json (or
    its report dict): the data, split, images, findings scored, mAUC with its interval, the
    mean AUROC of the same findings on the model's own test split, the label map used."""
    if not isinstance(report, dict):
        report = json.loads(Path(report).read_text())
    block = report.get("external_validation")
    if not block:
        raise ValueError("Not an external evaluation: its metrics.json has no external_validation.")
    against = block.get("against_source_test") or {}
    method = block["label_map"]["method"]
    return {
        "dataset": block["data_source"]["dataset"],
        "split": block["data_source"]["split"],
        "num_images": report["num_images"],
        "findings": list(report["auroc"]),
        "mauc": report.get("mauc"),
        "mauc_ci95": report.get("mauc_ci95"),
        "source_test_mauc": (against.get("mean_auroc") or {}).get("source"),
        "label_map": method if method == "auto" else Path(method).name,
    }
