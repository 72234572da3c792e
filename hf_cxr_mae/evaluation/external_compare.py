"""``compare`` across sources: two models on a dataset of another source (``--label_map``), a
paired comparison on the findings the dataset shares with them; or a model on one dataset and on
another (``--dataset_b``: its own test split and an external set), which is NOT paired: other
images, so both AUROCs are reported with their own intervals and no p-value is computed.

Serving-side code, as ``compare``: models and data, never the training package.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..tables import estimate, signed
from .external import ExternalSetup, model_findings, prepare_external
from .external_report import label_map_lines

logger = logging.getLogger("hf_cxr_mae")

UNPAIRED_WHY = (
    "A and B are scored on other images, so this is not a paired comparison: DeLong's test for "
    "correlated ROC curves and the paired bootstrap need every image scored by both, and here "
    "none is, so no p-value is computed. Each AUROC has its own set's bootstrap interval; the "
    "sets differ in label definitions, prevalence and population too, so a difference mixes "
    "the model's transfer with those."
)


def shared_images(ids_a: Sequence[str], dir_a: str, ids_b: Sequence[str], dir_b: str) -> int:
    """How many image files both sets score: ids (paths under their data folder) compared as
    real paths, so a linked or re-spelled folder still names the same files."""

    def files(ids: Sequence[str], root: str) -> set[str]:
        return {os.path.realpath(os.path.join(root, i)) for i in ids}

    return len(files(ids_a, dir_a) & files(ids_b, dir_b))


def unpaired_why(shared: int, n_a: int, n_b: int, same_model: bool) -> str:
    """Why an A-on-one-set, B-on-another comparison has no p-value, true to how the sets overlap."""
    if not shared:
        return UNPAIRED_WHY
    if shared == n_a == n_b:
        overlap = f"A and B score the same {shared} images"
    elif shared == n_a:
        overlap = f"All {n_a} images of A are among the {n_b} of B"
    elif shared == n_b:
        overlap = f"All {n_b} images of B are among the {n_a} of A"
    else:
        overlap = f"{shared} images are scored by both (of {n_a} in A, {n_b} in B)"
    if same_model:
        rest = (
            "one model's scores of those images are the same on both sides, so there is no "
            "paired comparison to make and no p-value is computed; and the two bootstrap "
            "intervals are not independent, so do not read their gap as a test"
        )
    else:
        rest = (
            "this run still compares the sets as unpaired (no p-value; the intervals are not "
            "independent): for a paired test of the two models, score both on one dataset "
            "(compare A B --dataset ... without --dataset_b)"
        )
    return f"{overlap}: {rest}."


def _setup(model, path, split_ds, spec, dataset, data_dir, split, options) -> ExternalSetup:
    """The label map of one model on one split: ``spec``, or ``auto`` where the dataset's labels
    are the model's own (its own test split); without ``spec`` other labels are refused."""
    from ..data import label_names

    if spec is None:
        # The model's findings in another order are matched by name (the auto map).
        if sorted(label_names(split_ds)) != sorted(model_findings(model)):
            raise ValueError(
                f"{path} predicts {model_findings(model)}; {dataset}'s labels are "
                f"{label_names(split_ds)}: pass --label_map auto (the harmonised table) or a FILE."
            )
        spec = "auto"
    return prepare_external(model, path, split_ds, spec, dataset, data_dir, split, options)


def _score(model, path: str, setup: ExternalSetup, split_ds, batch_size: int, num_workers: int):
    """(relabelled split, the model's scores of its findings, the labels) on one split."""
    from ..serving.prediction_file import Predictions
    from .compare import predict_split
    from .paired_files import dataset_labels

    relabelled = setup.apply(split_ds)
    (probabilities,) = predict_split([model], relabelled, batch_size, num_workers)
    ids = [str(i) for i in relabelled["image_id"]]
    predictions = Predictions(ids, setup.findings, setup.scores(probabilities), str(path), {})
    labels = dataset_labels(relabelled.select_columns(["image_id", "labels"]))
    return predictions, labels


def run_external_compare(
    output_dir: str | Path,
    *,
    models: Sequence[str],
    dataset: str | None,
    data_dir: str | None,
    split: str,
    options: dict[str, Any] | None,
    label_map: str | None,
    predictions: Sequence[str] = (),
    dataset_b: str | None = None,
    data_dir_b: str | None = None,
    split_b: str | None = None,
    max_eval_samples: int | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Two models on one dataset through ``label_map`` (paired), or ``models[0]`` (A) on
    ``dataset`` and ``models[-1]`` (B) on ``dataset_b`` (not paired)."""
    from ..data.loading import load_labelled_split
    from ..serving.predict import load_classifier

    if predictions or dataset is None or data_dir is None:
        raise ValueError(
            "--label_map and --dataset_b score models on datasets: give model folders and "
            "--dataset / --data_dir (prediction files carry their own findings)."
        )
    options = dict(options or {})
    if dataset_b is not None and data_dir_b is None:
        raise ValueError("--dataset_b needs --data_dir_b.")
    split_b = split_b or split
    unpaired = dataset_b is not None and (dataset_b, data_dir_b, split_b) != (
        dataset,
        data_dir,
        split,
    )
    if not 1 <= len(models) <= 2 or (len(models) == 1 and not unpaired):
        raise ValueError(
            "give two models (scored on --dataset), or one model with --dataset_b (scored on "
            "--dataset and on --dataset_b)."
        )
    loaded = {path: load_classifier(path) for path in dict.fromkeys(models)}
    split_a = load_labelled_split(dataset, data_dir, split, options, max_eval_samples)
    path_a, path_b = models[0], models[-1]
    setup_a = _setup(loaded[path_a], path_a, split_a, label_map, dataset, data_dir, split, options)
    if unpaired:
        split_b_ds = load_labelled_split(dataset_b, data_dir_b, split_b, options, max_eval_samples)
        setup_b = _setup(
            loaded[path_b], path_b, split_b_ds, label_map, dataset_b, data_dir_b, split_b, options
        )
    else:
        split_b_ds, dataset_b, data_dir_b = split_a, dataset, data_dir
        setup_b = _setup(
            loaded[path_b], path_b, split_a, label_map, dataset, data_dir, split, options
        )
    a, labels_a = _score(loaded[path_a], path_a, setup_a, split_a, batch_size, num_workers)
    b, labels_b = _score(loaded[path_b], path_b, setup_b, split_b_ds, batch_size, num_workers)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    where_a = f"{dataset} at {data_dir}, split {split}"
    where_b = f"{dataset_b} at {data_dir_b}, split {split_b}"
    if unpaired:
        shared = shared_images(a.ids, data_dir, b.ids, data_dir_b)
        why = unpaired_why(shared, len(a.ids), len(b.ids), path_a == path_b)
        return _unpaired(out, a, b, labels_a, labels_b, setup_a, setup_b, where_a, where_b,
                         n_resamples, seed, shared, why)  # fmt: skip
    return _paired(out, a, b, labels_a, setup_a, setup_b, where_a, n_resamples, seed)


def _paired(out, a, b, labels, setup_a, setup_b, where, n_resamples, seed) -> dict[str, Any]:
    """Both models on the same relabelled images: ``compare``'s paired comparison on the
    findings both score from the same dataset labels (named as A names them)."""
    from ..serving.prediction_file import Predictions
    from .compare_report import write_comparison
    from .paired_files import write_labels_csv, write_predictions_csv

    lm_a, lm_b = setup_a.label_map, setup_b.label_map
    if (lm_a.normal, list(lm_a.sources.values())) != (lm_b.normal, list(lm_b.sources.values())):
        raise ValueError(
            "The two models score different labels of the dataset: A "
            f"{ {f: s for f, s in lm_a.sources.items()} }, B {lm_b.sources}; a paired "
            "comparison needs the same targets for both (give --label_map FILE)."
        )
    b = Predictions(b.ids, list(a.names), b.probabilities, b.source, b.meta)
    write_predictions_csv(a, out / "predictions_a.csv")
    write_predictions_csv(b, out / "predictions_b.csv")
    write_labels_csv(labels.ids, labels.names, labels.targets, out / "labels.csv")
    result = write_comparison(
        out, a, b, labels.targets, n_resamples=n_resamples, seed=seed, data=where
    )
    result["label_map"] = setup_a.block
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    lines = ["", "## Label map", *label_map_lines(setup_a.block), ""]
    with open(out / "compare.md", "a") as f:
        f.write("\n".join(lines))
    return result


def _aurocs(predictions, labels, findings: list[str]):
    """(scores, targets, AUROC metrics) of one side on ``findings``."""
    from ..metrics.classification import auroc_metrics
    from ..serving.prediction_file import Predictions
    from .paired_files import align_labels

    columns = [predictions.names.index(f) for f in findings]
    scores = predictions.probabilities[:, columns]
    targets = align_labels(
        Predictions(predictions.ids, findings, scores, predictions.source), labels
    )
    return scores, targets, auroc_metrics(scores, targets, findings)


def _intervals(scores, targets, findings, both, n_resamples: int, seed: int):
    """Per-finding bootstrap intervals, and the mean's over the findings defined on both sides."""
    from .reports import bootstrap_auroc

    per_ci, _ = bootstrap_auroc(scores, targets, n_resamples, seed)
    idx = [findings.index(f) for f in both]
    mean_ci = (
        bootstrap_auroc(scores[:, idx], targets[:, idx], n_resamples, seed)[1] if idx else None
    )
    return dict(zip(findings, per_ci, strict=True)), mean_ci


def _unpaired(out, a, b, labels_a, labels_b, setup_a, setup_b, where_a, where_b, n_resamples,
              seed, shared: int = 0, why: str = UNPAIRED_WHY):  # fmt: skip
    """Two sets of images: each AUROC with its own interval, the difference as a number, no
    p-value (``why``; ``shared`` images in both). compare.json, compare.md and the scores."""
    from .paired_files import write_labels_csv, write_predictions_csv

    findings = [f for f in a.names if f in b.names]
    if not findings:
        raise ValueError(f"A scores {a.names} and B {b.names}: no finding in common to compare.")
    for name, p, labels in (("a", a, labels_a), ("b", b, labels_b)):
        write_predictions_csv(p, out / f"predictions_{name}.csv")
        write_labels_csv(labels.ids, labels.names, labels.targets, out / f"labels_{name}.csv")
    sa, ta, ma = _aurocs(a, labels_a, findings)
    sb, tb, mb = _aurocs(b, labels_b, findings)
    both = [f for f in findings if ma["auroc"][f] is not None and mb["auroc"][f] is not None]
    ci_a, mean_ci_a = _intervals(sa, ta, findings, both, n_resamples, seed)
    ci_b, mean_ci_b = _intervals(sb, tb, findings, both, n_resamples, seed)
    mean_a = float(np.mean([ma["auroc"][f] for f in both])) if both else None
    mean_b = float(np.mean([mb["auroc"][f] for f in both])) if both else None
    entries = {}
    for f in findings:
        auc_a, auc_b = ma["auroc"][f], mb["auroc"][f]
        entries[f] = {
            "auroc_a": auc_a, "ci95_a": ci_a[f], "auroc_b": auc_b, "ci95_b": ci_b[f],
            "difference": None if auc_a is None or auc_b is None else auc_a - auc_b,
            "p_value": None,
            "positives_a": ma["positives"][f], "negatives_a": ma["negatives"][f],
            "positives_b": mb["positives"][f], "negatives_b": mb["negatives"][f],
        }  # fmt: skip
    result = {
        "paired": False,
        "why": why,
        "shared_images": shared,
        "model_a": a.source,
        "model_b": b.source,
        "data_a": where_a,
        "data_b": where_b,
        "num_images_a": len(a.ids),
        "num_images_b": len(b.ids),
        "findings": entries,
        "undefined": [f for f in findings if f not in both],
        "mean": {
            "findings": both,
            "auroc_a": mean_a,
            "ci95_a": mean_ci_a,
            "auroc_b": mean_b,
            "ci95_b": mean_ci_b,
            "difference": None if mean_a is None else mean_a - mean_b,
            "p_value": None,
        },
        "bootstrap": {"resamples": n_resamples, "seed": seed, "paired": False},
        "label_map_a": setup_a.block,
        "label_map_b": setup_b.block,
    }
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    (out / "compare.md").write_text(_unpaired_markdown(result))
    return result


def _unpaired_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Not a paired comparison: A = {result['model_a']} on {result['data_a']} vs "
        f"B = {result['model_b']} on {result['data_b']}",
        "",
        f"A: {result['num_images_a']} images; B: {result['num_images_b']} other images.",
        "",
        f"**No p-value.** {result['why']}",
        "",
        "| Finding | AUROC A (95% CI) | AUROC B (95% CI) | A - B | p | Positives / negatives A "
        "| Positives / negatives B |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in result["findings"].items():
        lines.append(
            f"| {name} | {estimate(e['auroc_a'], e['ci95_a'])} | {estimate(e['auroc_b'], e['ci95_b'])} "
            f"| {signed(e['difference'])} | not computed (unpaired) | {e['positives_a']} / {e['negatives_a']} "
            f"| {e['positives_b']} / {e['negatives_b']} |"
        )
    m = result["mean"]
    if m["difference"] is not None:
        lines.append(
            f"| **Mean AUROC** ({len(m['findings'])} findings) | {estimate(m['auroc_a'], m['ci95_a'])} "
            f"| {estimate(m['auroc_b'], m['ci95_b'])} | {signed(m['difference'])} | not computed | | |"
        )
    lines += [
        "",
        f"Intervals: {result['bootstrap']['resamples']} bootstrap resamples of each set's own "
        "images (percentile), independently for A and B.",
    ]
    for side in ("a", "b"):
        lines += [
            "",
            f"## Label map of {side.upper()}",
            *label_map_lines(result[f"label_map_{side}"]),
        ]
    return "\n".join(lines) + "\n"


def print_unpaired(result: dict[str, Any], output_dir: str | Path) -> None:
    """The console lines of an unpaired comparison: both mean AUROCs with intervals, and why
    there is no p-value."""
    m = result["mean"]
    print(
        f"mean AUROC A {estimate(m['auroc_a'], m['ci95_a'])} on {result['data_a']}; "
        f"B {estimate(m['auroc_b'], m['ci95_b'])} on {result['data_b']} "
        f"({len(m['findings'])} findings)"
    )
    print(f"no p-value: {result['why']}")
    print(f"wrote compare.json, compare.md to {output_dir}")
