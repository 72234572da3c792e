"""Paired comparison of two classifiers on the same images (``hf-cxr-mae compare``).

Per finding: AUROC of model A and model B, the difference A - B with its 95% interval and
p-value from DeLong's test for correlated ROC curves (``metrics.delong``), and a paired bootstrap
interval as a check. Mean AUROC: the difference with a paired-bootstrap interval (DeLong's test
has no closed form for a mean over findings whose positives differ). Writes compare.json,
compare.md and compare.png (``compare_report``).

The two models are scored here (any classifier checkpoint the package loads: ViT or the
DenseNet-121 baseline, each with its own evaluation transform) or read from prediction files
(CSV with an image id/path column and one probability column per finding, or the JSON of
``hf-cxr-mae predict --json``). Predictions must be paired: the same images; a different order is
re-aligned by image id, different images are refused, naming the first one.

Serving-side code: it uses the data package and the models directly, never the training package.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from ..metrics.bootstrap import auroc_from_ranks, bootstrap_aurocs, percentile_interval
from ..metrics.delong import delong_test
from ..serving.prediction_file import Predictions, read_predictions
from .paired_files import (
    align_labels,
    dataset_labels,
    left_out_findings,
    pair_predictions,
    read_labels,
    trimmed_columns,
    write_labels_csv,
    write_predictions_csv,
)

logger = logging.getLogger("hf_cxr_mae")

# ---------------------------------------------------------------- statistics


def compare_scores(
    targets: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    names: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """The comparison of two paired score matrices ``(n, k)`` against targets ``(n, k)``:
    per finding DeLong (difference, interval, z, p, Holm-adjusted p) and the paired bootstrap
    interval; the mean AUROC over findings defined here, its difference with a paired-bootstrap
    percentile interval and a normal p-value from the bootstrap standard error."""
    targets = np.asarray(targets, dtype=np.float64)
    scores_a = np.asarray(scores_a, dtype=np.float64)
    scores_b = np.asarray(scores_b, dtype=np.float64)
    if not (targets.shape == scores_a.shape == scores_b.shape) or targets.shape[1] != len(names):
        raise ValueError(
            f"targets {targets.shape}, scores A {scores_a.shape} and B {scores_b.shape} must all "
            f"be (images, {len(names)} findings)."
        )
    k = len(names)
    # One call for both models: the same resampled images for A and B (a paired bootstrap).
    draws = bootstrap_aurocs(
        np.concatenate([targets, targets], 1),
        np.concatenate([scores_a, scores_b], 1),
        n_resamples,
        seed,
    )
    draws_a, draws_b = draws[:, :k], draws[:, k:]
    findings: dict[str, Any] = {}
    undefined = []
    for j, name in enumerate(names):
        y = targets[:, j]
        positives, negatives = int((y == 1).sum()), int((y == 0).sum())
        if positives == 0 or negatives == 0:
            undefined.append(name)
            findings[name] = {
                "auroc_a": None,
                "auroc_b": None,
                "difference": None,
                "ci95": None,
                "p_value": None,
                "positives": positives,
                "negatives": negatives,
            }
            continue
        differences = draws_a[:, j] - draws_b[:, j]
        if positives < 2 or negatives < 2:
            # No variance estimate from one image: AUROCs reported, nothing tested.
            pair = np.stack([scores_a[:, j], scores_b[:, j]])
            auc_a, auc_b = (float(v) for v in auroc_from_ranks(np.stack([y, y]), pair))
            findings[name] = {
                "auroc_a": auc_a,
                "auroc_b": auc_b,
                "difference": auc_a - auc_b,
                "ci95": None,
                "p_value": None,
                "bootstrap_ci95": None,
                "positives": positives,
                "negatives": negatives,
                "note": "fewer than 2 positive or negative images: not tested",
            }
            continue
        result = delong_test(y, scores_a[:, j], scores_b[:, j], level=level)
        findings[name] = {
            "auroc_a": result.auc_a,
            "auroc_b": result.auc_b,
            "difference": result.difference,
            "ci95": list(result.ci),
            "z": result.z,
            "p_value": result.p_value,
            "delong_se": result.variance**0.5,
            "bootstrap_ci95": percentile_interval(differences, level),
            "bootstrap_se": float(np.nanstd(differences, ddof=1)) if n_resamples > 1 else None,
            "positives": positives,
            "negatives": negatives,
        }
    _holm(findings)
    defined = [j for j, n in enumerate(names) if n not in undefined]
    mean: dict[str, Any] = {"auroc_a": None, "auroc_b": None, "difference": None, "ci95": None}
    if defined:
        auroc_a = float(np.mean([findings[names[j]]["auroc_a"] for j in defined]))
        auroc_b = float(np.mean([findings[names[j]]["auroc_b"] for j in defined]))
        with np.errstate(invalid="ignore"):
            # A resample's mean over the findings it defines (as the reports' intervals).
            mean_draws = np.nanmean(draws_a[:, defined], 1) - np.nanmean(draws_b[:, defined], 1)
        se = float(np.nanstd(mean_draws, ddof=1)) if n_resamples > 1 else float("nan")
        difference = auroc_a - auroc_b
        if se > 0:
            p_value = float(2 * norm.sf(abs(difference) / se))
        elif se == 0:  # every resample gives the same difference
            p_value = 1.0 if difference == 0 else 0.0
        else:  # no bootstrap
            p_value = None
        mean = {
            "auroc_a": auroc_a,
            "auroc_b": auroc_b,
            "difference": difference,
            "ci95": percentile_interval(mean_draws, level),
            "p_value": p_value,
            "bootstrap_se": se if se == se else None,
            "findings": [names[j] for j in defined],
            "method": (
                "paired bootstrap: percentile interval; p-value from the normal approximation "
                "with the bootstrap standard error"
            ),
        }
    return {
        "num_images": len(targets),
        "level": level,
        "findings": findings,
        "undefined": undefined,
        "mean": mean,
        "bootstrap": {"resamples": n_resamples, "seed": seed, "paired": True},
        "method": (
            "per finding: DeLong's test for correlated ROC curves (Sun & Xu fast midrank "
            "algorithm), paired bootstrap interval as a check; mean AUROC: paired bootstrap"
        ),
    }


def _holm(findings: dict[str, dict]) -> None:
    """Holm's step-down adjustment of the per-finding p-values (family-wise error rate)."""
    tested = sorted(
        (entry["p_value"], name) for name, entry in findings.items() if entry["p_value"] is not None
    )
    running = 0.0
    for rank, (p, name) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        findings[name]["p_holm"] = running


# ---------------------------------------------------------------- scoring models


def predict_split(
    models: Sequence[Any],
    split,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | None = None,
) -> list[np.ndarray]:
    """Probabilities ``(n, k)`` of each model on every image of a dataset split, each model with
    its own evaluation transform (resize, centre crop, normalisation); every image is read once.
    fp32, no test-time augmentation (as ``evaluate`` without ``--tta``)."""
    import torch

    from ..data.transforms import create_transform, example_image, undecoded_images
    from ..processing import data_settings
    from ..serving.inference import fast_classifier
    from ..serving.predict import probabilities_of

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = [data_settings(m) for m in models]
    transforms = [create_transform(s, "eval") for s in settings]
    runs = [fast_classifier(m.to(device).eval(), dtype=torch.float32) for m in models]
    problem_types = [m.config.problem_type for m in models]
    split = undecoded_images(split)
    if "image" in split.column_names:
        split = split.select_columns(["image", "image_id"])

    def collate(rows: list[int]) -> list[torch.Tensor]:
        batch = split[rows[0] : rows[-1] + 1]
        images = [example_image(batch, i) for i in range(len(rows))]
        return [
            torch.stack([t(image) for image in images]).expand(-1, s.num_channels, -1, -1)
            for t, s in zip(transforms, settings, strict=True)
        ]

    starts = [
        list(range(i, min(i + batch_size, len(split)))) for i in range(0, len(split), batch_size)
    ]
    loader = torch.utils.data.DataLoader(
        starts, batch_size=None, collate_fn=collate, num_workers=num_workers
    )
    outputs: list[list[np.ndarray]] = [[] for _ in models]
    for pixels in loader:
        for out, run, x, problem_type in zip(outputs, runs, pixels, problem_types, strict=True):
            logits = run(x)
            probs = probabilities_of(logits, problem_type)
            out.append(probs.cpu().numpy().astype(np.float64))
    return [np.concatenate(o) for o in outputs]


def model_predictions(
    model_paths: Sequence[str],
    split,
    batch_size: int = 16,
    num_workers: int = 0,
) -> list[Predictions]:
    """Each model's probabilities on a split, after checking its findings are the split's."""
    from ..data import label_names
    from ..serving.predict import load_classifier

    names = list(label_names(split))
    models = []
    for path in model_paths:
        model = load_classifier(path)
        model_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if model_names != names:
            raise ValueError(f"{path} predicts {model_names}; the dataset's findings are {names}.")
        models.append(model)
    ids = [str(i) for i in split["image_id"]]
    probabilities = predict_split(models, split, batch_size, num_workers)
    return [
        Predictions(ids, names, p, str(path), {"model_type": m.config.model_type})
        for path, p, m in zip(model_paths, probabilities, models, strict=True)
    ]


def run_compare(
    output_dir: str | Path,
    *,
    models: Sequence[str] = (),
    predictions: Sequence[str] = (),
    labels_file: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    options: dict[str, Any] | None = None,
    max_eval_samples: int | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    n_resamples: int = 1000,
    seed: int = 0,
    label_map: str | None = None,
    dataset_b: str | None = None,
    data_dir_b: str | None = None,
    split_b: str | None = None,
) -> dict[str, Any]:
    """The ``compare`` command: two models scored on a dataset split, or two prediction files
    with labels from a labels CSV or a dataset split. With ``label_map`` (data of another
    source) or ``dataset_b`` (B on other images: not paired), see ``external_compare``."""
    if label_map is not None or dataset_b is not None:
        from .external_compare import run_external_compare

        return run_external_compare(
            output_dir, models=models, predictions=predictions, dataset=dataset,
            data_dir=data_dir, split=split, options=options, label_map=label_map,
            dataset_b=dataset_b, data_dir_b=data_dir_b, split_b=split_b,
            max_eval_samples=max_eval_samples, batch_size=batch_size, num_workers=num_workers,
            n_resamples=n_resamples, seed=seed,
        )  # fmt: skip
    if len(models) + len(predictions) != 2 or (models and predictions):
        raise ValueError("give two models, or --predictions_a and --predictions_b.")
    from ..safe_weights import require_safetensors
    from .compare_report import write_comparison  # it imports this module

    for model in models:  # before the dataset is read: a pickled model is refused at once
        require_safetensors(model)
    data_split = None
    if dataset is not None:
        from ..data.loading import load_labelled_split

        if data_dir is None:
            raise ValueError("--dataset needs --data_dir.")
        data_split = load_labelled_split(dataset, data_dir, split, options or {}, max_eval_samples)
    where = f"{dataset} at {data_dir}, split {split}" if dataset else labels_file
    if models:
        if data_split is None:
            raise ValueError("Scoring two models needs --dataset and --data_dir (and --split).")
        a, b = model_predictions(models, data_split, batch_size, num_workers)
        labels = dataset_labels(data_split)
        targets = labels.targets
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        # The scores themselves, so the comparison can be re-run from files.
        write_predictions_csv(a, out / "predictions_a.csv")
        write_predictions_csv(b, out / "predictions_b.csv")
        write_labels_csv(labels.ids, labels.names, labels.targets, out / "labels.csv")
        return write_comparison(
            output_dir, a, b, targets, n_resamples=n_resamples, seed=seed, data=where
        )
    a, b = (read_predictions(p) for p in predictions)
    for p in (a, b):  # as the labels' columns: a stray space must not drop a finding
        p.names = trimmed_columns(p.names, p.source)
    b, realigned = pair_predictions(a, b)
    if labels_file is not None:
        labels = read_labels(labels_file, _finding_columns(labels_file, a.names, b.names))
        label_columns = _header(labels_file)
    elif data_split is not None:
        labels = dataset_labels(
            data_split.select_columns([c for c in data_split.column_names if c != "image"])
        )
        label_columns = labels.names
    else:
        raise ValueError("Prediction files need labels: --labels FILE or --dataset / --data_dir.")
    # Only the findings that both files and the labels have (a CSV may carry other columns).
    names = [n for n in a.names if n in b.names and n in labels.names]
    if not names:
        raise ValueError(
            f"No finding is in both prediction files and the labels: A {a.names}, B {b.names}, "
            f"labels {labels.names}."
        )
    files = {a.source: a.names, b.source: b.names, f"the labels ({where})": label_columns}
    left_out = left_out_findings(names, files, [*a.names, *b.names])
    for lacking in dict.fromkeys(tuple(v) for v in left_out.values()):
        logger.warning(
            "Left out of the comparison, no column in %s: %s",
            " nor ".join(lacking),
            [n for n, v in left_out.items() if tuple(v) == lacking],
        )
    a = _only(a, names)
    b = _only(b, names)
    targets = align_labels(a, labels)
    return write_comparison(
        output_dir,
        a,
        b,
        targets,
        n_resamples=n_resamples,
        seed=seed,
        realigned=realigned,
        data=where,
        left_out=left_out,
    )


def _header(path: str) -> list[str]:
    """A CSV's column names, trimmed (``trimmed_columns``); none for a missing file."""
    import pandas as pd

    if not Path(path).is_file():
        return []  # read_labels names the missing file
    return trimmed_columns(pd.read_csv(path, nrows=0).columns, path)


def _finding_columns(path: str, *findings: Sequence[str]) -> list[str] | None:
    """The columns of a labels CSV that every prediction file scores: the others (patient sex,
    age, notes) are no labels. None when there is none: every column is read, and the error
    then names the mismatch."""
    columns = _header(path)
    return [c for c in columns if all(c in names for names in findings)] or None


def _only(p: Predictions, names: Sequence[str]) -> Predictions:
    columns = [p.names.index(n) for n in names]
    return Predictions(p.ids, list(names), p.probabilities[:, columns], p.source, p.meta)
