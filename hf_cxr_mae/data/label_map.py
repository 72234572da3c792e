"""Mapping a dataset's labels onto a model's findings (``--label_map auto|FILE``) and relabelling
the dataset with the model's names, for scoring a model on data of another source.

``auto`` reads the harmonised table (``label_space``); a FILE (JSON or YAML) maps each of the
dataset's labels to a model finding, to ``"No Finding"`` (a normal class of class-folder data:
the negatives) or to null (left out), for a hospital's own names. Only the findings mapped are
scored; everything left out is listed with the reason. Multi-label data keep their targets as the
loader made them (its uncertainty policy included); single-label classes become one finding's
positives (its class) or every finding's negatives (the normal class), and images of a class
mapped to nothing are left out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from ..constants import IGNORE_LABEL
from .building import labels_feature
from .label_space import DATASET_KINDS, Finding, LeftOut, is_normal, lookup
from .label_stats import label_names

NORMAL = "No Finding"  # the value that marks a normal class in a FILE
AUTO = "auto"


@dataclass
class LabelMap:
    """How a dataset's labels become a model's targets. ``sources``: model finding -> the
    dataset labels that are its positives; ``normal``: classes read as negatives of every
    finding (single-label data); ``left_out_model`` / ``left_out_dataset``: name -> why."""

    method: str
    dataset_kind: str
    single_label: bool
    findings: list[str]
    sources: dict[str, list[str]]
    why: dict[str, str]
    normal: list[str] = field(default_factory=list)
    left_out_model: dict[str, str] = field(default_factory=dict)
    left_out_dataset: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_kind(dataset: str | None) -> str:
    """The table column a ``load_cxr_dataset`` source reads its names from ("any": every one)."""
    return DATASET_KINDS.get(dataset or "", "any")


def read_label_map(path: str | Path) -> dict[str, str | None]:
    """A label-map FILE: a JSON or YAML mapping of dataset label -> model finding, ``"No
    Finding"`` or null. Errors name the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"--label_map {path}: no such file (give 'auto' or a JSON / YAML file mapping each "
            "dataset label to a model finding)."
        )
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"--label_map {path} is not valid JSON / YAML: {err}") from err
    if not isinstance(data, dict) or not data:
        raise ValueError(
            f"--label_map {path} must hold a mapping {{dataset label: model finding}}, got "
            f"{type(data).__name__ if data else 'nothing'}."
        )
    bad = {k: v for k, v in data.items() if not isinstance(k, str) or not isinstance(v, str | None)}
    if bad:
        raise ValueError(
            f"--label_map {path}: each entry maps a label name to a finding name or null; "
            f"not: {bad}."
        )
    return data


def _why(entry: Finding | LeftOut | None, what: str) -> str:
    if isinstance(entry, LeftOut):
        return entry.why
    if isinstance(entry, Finding):
        return f"{what} (harmonised: {entry.name})."
    return f"{what}: not in the harmonised table; give --label_map FILE to map it."


def _auto_pairs(
    dataset_labels: list[str], model_findings: list[str], kind: str, single_label: bool
) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """(dataset label -> model finding, normal classes, left-out dataset labels -> why) from
    the table. Refuses two labels of one side that the table reads as one finding."""
    exact = kind in ("nih14", "chexpert", "covidx")
    model_entry: dict[str, str] = {}
    for finding in model_findings:
        entry = lookup(finding, exact=False)
        if isinstance(entry, Finding):
            if entry.name in model_entry:
                raise ValueError(
                    f"The model's findings {model_entry[entry.name]!r} and {finding!r} both mean "
                    f"{entry.name} in the harmonised table: give --label_map FILE to say which "
                    "one to score."
                )
            model_entry[entry.name] = finding
    pairs: dict[str, str] = {}
    normal: list[str] = []
    left: dict[str, str] = {}
    taken: dict[str, str] = {}
    for label in dataset_labels:
        if single_label and is_normal(label, kind):
            normal.append(label)
            continue
        entry = lookup(label, exact=exact)
        if label in model_findings:  # one name on both sides: the same label (its own source)
            target = label
        elif isinstance(entry, Finding) and entry.name in model_entry:
            target = model_entry[entry.name]
        else:
            left[label] = (
                f"The model has no output for {entry.name}."
                if isinstance(entry, Finding)
                else _why(entry, "No model finding corresponds")
            )
            continue
        if not single_label and target in taken:
            raise ValueError(
                f"The dataset's labels {taken[target]!r} and {label!r} both mean the model's "
                f"{target!r} in the harmonised table: give --label_map FILE to say which one."
            )
        taken[target] = label
        pairs[label] = target
    return pairs, normal, left


def _file_pairs(
    given: dict[str, str | None],
    path: str,
    dataset_labels: list[str],
    model_findings: list[str],
    single_label: bool,
) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """The FILE's mapping, checked: every dataset label named, only the dataset's labels and the
    model's findings, one column per finding (multi-label). Refusals name the names at fault."""
    problems = []
    if unknown := [k for k in given if k not in dataset_labels]:
        problems.append(f"unknown dataset label(s) {unknown} (the dataset's: {dataset_labels})")
    allowed = [*model_findings, *([NORMAL] if single_label else [])]
    if wrong := sorted({v for v in given.values() if v is not None and v not in allowed}):
        problems.append(
            f"unknown model finding(s) {wrong} (the model's: {model_findings}"
            + (f"; '{NORMAL}' marks the normal class" if single_label else "")
            + ")"
        )
    if missing := [label for label in dataset_labels if label not in given]:
        problems.append(
            f"no entry for the dataset label(s) {missing}: map each to a model finding"
            + (f", to '{NORMAL}' (the normal class)" if single_label else "")
            + " or to null (left out)"
        )
    if not single_label:
        by_finding: dict[str, list[str]] = {}
        for label, finding in given.items():
            if finding is not None:
                by_finding.setdefault(finding, []).append(label)
        for finding, labels in by_finding.items():
            if len(labels) > 1:
                problems.append(f"{labels} all map to {finding!r}: one column per finding")
    if problems:
        raise ValueError(f"--label_map {path} does not fit: " + "; ".join(problems) + ".")
    pairs = {k: v for k, v in given.items() if v is not None and v != NORMAL}
    normal = [k for k, v in given.items() if v == NORMAL and single_label]
    left = {k: f"Left out by {path} (null)." for k, v in given.items() if v is None}
    return pairs, normal, left


def resolve_label_map(
    spec: str,
    dataset_labels: list[str],
    model_findings: list[str],
    dataset: str | None = None,
    single_label: bool = False,
) -> LabelMap:
    """The mapping of a dataset's labels onto a model's findings: ``spec`` is ``"auto"`` (the
    harmonised table) or a FILE. ``dataset``: the ``load_cxr_dataset`` source (which names to
    expect); ``single_label``: class labels (a folder, COVIDx). Raises ValueError when nothing
    is shared, or the FILE names unknown labels or findings or leaves labels out."""
    kind = dataset_kind(dataset)
    if spec == AUTO:
        pairs, normal, left = _auto_pairs(dataset_labels, model_findings, kind, single_label)
    else:
        given = read_label_map(spec)
        pairs, normal, left = _file_pairs(
            given, str(spec), dataset_labels, model_findings, single_label
        )
    findings = [f for f in model_findings if f in pairs.values()]
    sources = {f: [label for label, to in pairs.items() if to == f] for f in findings}
    why = {}
    for f in findings:
        entry = lookup(f, exact=False)
        if spec != AUTO:
            why[f] = f"Mapped by {spec}."
        elif isinstance(entry, Finding):
            why[f] = entry.why
        else:
            why[f] = "The same label name in the model and the dataset."
    left_model = {}
    for f in model_findings:
        if f in findings:
            continue
        entry = lookup(f, exact=False)
        if spec != AUTO:
            left_model[f] = f"No dataset label maps to it in {spec}."
        elif isinstance(entry, LeftOut):
            left_model[f] = entry.why
        elif is_normal(f, "folder"):
            left_model[f] = "A normal class, not a finding: nothing to score it against."
        elif isinstance(entry, Finding):
            left_model[f] = f"Not among the dataset's labels ({', '.join(dataset_labels)})."
        else:
            left_model[f] = _why(entry, "No label of the dataset corresponds")
    if not findings:
        raise ValueError(
            f"No finding of the model ({model_findings}) is shared with the dataset's labels "
            f"({dataset_labels}) under --label_map {spec}: "
            + "; ".join(f"{k}: {v}" for k, v in {**left, **left_model}.items())
            + " Give --label_map FILE to map a hospital's own names."
        )
    if single_label and not normal:
        raise ValueError(
            f"The dataset's classes {dataset_labels} have no normal class (e.g. NORMAL), so the "
            f"findings {findings} would have no negatives: a class folder gives a finding's "
            f"positives and the normal folder its negatives. Map a class to '{NORMAL}' with "
            "--label_map FILE."
        )
    return LabelMap(
        method=str(spec),
        dataset_kind=kind,
        single_label=single_label,
        findings=findings,
        sources=sources,
        why=why,
        normal=normal,
        left_out_model=left_model,
        left_out_dataset=left,
    )


def label_map_for(spec: str, dataset: Dataset, model_findings: list[str], source: str | None):
    """``resolve_label_map`` for a built dataset split (its label names and kind)."""
    return resolve_label_map(
        spec, label_names(dataset), model_findings, source, "label" in dataset.column_names
    )


def apply_label_map(dataset: Dataset, label_map: LabelMap) -> tuple[Dataset, dict[str, int]]:
    """The dataset with a multi-label ``labels`` struct in the model's scored findings (1, 0, or
    ``IGNORE_LABEL``), and the number of images left out per class (single-label classes mapped
    to nothing). No image is read."""
    names = label_names(dataset)
    findings = label_map.findings
    if label_map.single_label:
        classes = np.asarray(
            dataset.select_columns(["label"]).with_format("arrow")[:]["label"].to_pylist()
        )
        row_of_class = {}
        for c, name in enumerate(names):
            if name in label_map.normal:
                row_of_class[c] = [0.0] * len(findings)
            else:
                hit = [f for f in findings if name in label_map.sources[f]]
                if hit:
                    row_of_class[c] = [1.0 if f in hit else IGNORE_LABEL for f in findings]
        keep = np.flatnonzero([c in row_of_class for c in classes])
        dropped = {
            names[c]: int((classes == c).sum())
            for c in range(len(names))
            if c not in row_of_class and (classes == c).any()
        }
        targets = [row_of_class[c] for c in classes[keep]]
        dataset = dataset.select(keep.tolist()).remove_columns("label")
    else:
        table = dataset.select_columns(["labels"]).with_format("arrow")[:]["labels"]
        columns = {n: table.combine_chunks().field(n).to_numpy(zero_copy_only=False) for n in names}
        targets = np.stack([columns[label_map.sources[f][0]] for f in findings], axis=1).astype(
            np.float64
        )
        targets = np.where(np.isnan(targets), IGNORE_LABEL, targets).tolist()
        dropped = {}
        dataset = dataset.remove_columns("labels")
    labels = [dict(zip(findings, row, strict=True)) for row in targets]
    dataset = dataset.add_column("labels", labels, feature=labels_feature(findings))
    return dataset, dropped
