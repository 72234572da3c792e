"""The other files of a paired comparison (``compare``, external validation): label CSVs and
dataset labels, pairing two models' predictions image by image (a different order re-aligned by
id, different images refused naming the first), and writing predictions and labels back so a
comparison can be re-run from files. Predict's own results file is read in
``serving.prediction_file``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import IGNORE_LABEL
from ..serving.prediction_file import (
    Predictions,
    check_is_file,
    check_unique,
    image_column,
    read_csv,
)

logger = logging.getLogger("hf_cxr_mae")


@dataclass
class Labels:
    """Labels of images: an id per image, one column per finding, where they came from."""

    ids: list[str]
    names: list[str]
    targets: np.ndarray  # (n, k): 1, 0 or -1 (ignored)
    source: str


def trimmed_columns(columns: Sequence[Any], source: str | Path) -> list[str]:
    """Column names with surrounding whitespace removed (``Effusion `` is ``Effusion``: a stray
    space must not drop a finding from a comparison); refused when two become the same."""
    trimmed = [str(c).strip() for c in columns]
    seen: dict[str, Any] = {}
    for raw, name in zip(columns, trimmed, strict=True):
        if name in seen:
            raise ValueError(
                f"{source}: columns {str(seen[name])!r} and {str(raw)!r} are the same name "
                f"{name!r} once surrounding spaces are removed."
            )
        seen[name] = raw
    return trimmed


def left_out_findings(
    compared: Sequence[str], columns: dict[str, Sequence[str]], findings: Sequence[str]
) -> dict[str, list[str]]:
    """Each of ``findings`` not ``compared``, with the sources (of ``columns``: source -> its
    columns) that lack it: the files to blame."""
    return {
        name: [source for source, names in columns.items() if name not in names]
        for name in dict.fromkeys(findings)
        if name not in compared
    }


def read_labels(path: str | Path, names: Sequence[str] | None = None) -> Labels:
    """A labels CSV: an image column of ``ID_COLUMNS`` and one column per finding holding
    1, 0, -1 (ignored) or blank (ignored). Column names are compared trimmed (see
    ``trimmed_columns``)."""
    import pandas as pd

    path = Path(path)
    check_is_file(path, "Labels file")
    frame = read_csv(path)
    frame.columns = trimmed_columns(frame.columns, path)
    id_column = image_column(list(frame.columns), path)
    columns = list(names) if names is not None else [c for c in frame.columns if c != id_column]
    if missing := [c for c in columns if c not in frame.columns]:
        raise ValueError(f"{path} has no column for finding(s) {missing}.")
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    targets = values.fillna(IGNORE_LABEL).to_numpy(dtype=np.float64)
    bad = ~np.isin(targets, [0.0, 1.0, IGNORE_LABEL])
    raw_bad = values.isna().to_numpy() & frame[columns].notna().to_numpy()
    if bad.any() or raw_bad.any():
        i, j = np.argwhere(bad | raw_bad)[0]
        raise ValueError(
            f"{path} row {i + 2}, column {columns[j]!r}: label {frame[columns[j]].iloc[i]!r} "
            "is not 1, 0 or -1."
        )
    ids = frame[id_column].astype(str).tolist()
    check_unique(ids, str(path))
    return Labels(ids, [str(c) for c in columns], targets, str(path))


def _parts(image: str) -> tuple[str, ...]:
    """An id's path components (``\\`` as ``/``, ``.`` and doubled ``/`` dropped); a leading
    ``""`` marks an absolute path."""
    parts = image.replace("\\", "/").split("/")
    return tuple(p for i, p in enumerate(parts) if p != "." and (p or i == 0))


def _keys(
    ids: Sequence[str], others: Sequence[str], source: str, other_source: str
) -> tuple[list[str], list[str]]:
    """Keys to match two id lists by: equal keys name the same image. The ids themselves when
    every one of one list is among the other; else an id matches the one id of ``others`` that
    it ends (or that ends it) component by component, as an absolute path from ``predict``
    against a dataset's ``image_id`` relative to its folder, and every match must put the same
    folder in front (one folder the relative ids are relative to). Never by file name alone:
    ``site1/x0.png`` and ``site2/x0.png`` are two images. Raises ValueError naming the ids when
    an id could be two images, or when the matches need different folders."""
    if set(ids) <= set(others) or set(others) <= set(ids):
        return list(ids), list(others)
    how = (
        "Image ids must name each image in full in both: the same paths (e.g. run predict on "
        "the same paths for both models), or paths relative to one folder (a dataset's "
        "image_id) against the full paths under that folder."
    )
    split = [_parts(o) for o in others]
    by_name: dict[str, list[int]] = {}
    for j, parts in enumerate(split):
        by_name.setdefault(parts[-1] if parts else "", []).append(j)
    match: dict[int, int] = {}
    matched_by: dict[int, int] = {}
    roots: dict[tuple[str, tuple[str, ...]], tuple[int, int]] = {}
    for i, image in enumerate(ids):
        parts = _parts(image)
        found = [
            j
            for j in by_name.get(parts[-1] if parts else "", [])
            if parts[-len(split[j]) :] == split[j] or split[j][-len(parts) :] == parts
        ]
        if len(found) > 1:
            raise ValueError(
                f"Image {image!r} of {source} matches {len(found)} images of {other_source} "
                f"({others[found[0]]!r}, {others[found[1]]!r}): they are different images. {how}"
            )
        if not found:
            continue
        j = found[0]
        if j in matched_by:
            raise ValueError(
                f"Image {others[j]!r} of {other_source} matches both {ids[matched_by[j]]!r} and "
                f"{image!r} of {source}: they are different images. {how}"
            )
        match[i], matched_by[j] = j, i
        # The folder in front of the shorter id, and on which side it is.
        extra = len(parts) - len(split[j])
        if extra > 0:
            root = ("a", parts[:extra])
        elif extra < 0:
            root = ("b", split[j][:-extra])
        else:
            root = ("", ())
        roots.setdefault(root, (i, j))
    if len(roots) > 1:
        (i1, j1), (i2, j2) = list(roots.values())[:2]
        raise ValueError(
            f"The image ids of {source} and {other_source} match under different folders: "
            f"{ids[i1]!r} ~ {others[j1]!r} but {ids[i2]!r} ~ {others[j2]!r}. {how}"
        )
    keys, other_keys = list(ids), list(others)
    for i, j in match.items():
        keys[i] = others[j]
    if roots and next(iter(roots)) != ("", ()):
        ((i, j),) = roots.values()
        logger.warning(
            "Image ids of %s and %s matched by their common ending (e.g. %r ~ %r).",
            source, other_source, ids[i], others[j],
        )  # fmt: skip
    return keys, other_keys


def pair_predictions(a: Predictions, b: Predictions) -> tuple[Predictions, bool]:
    """``b`` in ``a``'s image order. Raises ValueError naming the first image that only one of
    them scored. Returns the aligned ``b`` and whether it had to be re-ordered."""
    keys_a, keys_b = _keys(a.ids, b.ids, f"A ({a.source})", f"B ({b.source})")
    if keys_a == keys_b:
        return b, False
    only_a = [i for i, k in zip(a.ids, keys_a, strict=True) if k not in set(keys_b)]
    only_b = [i for i, k in zip(b.ids, keys_b, strict=True) if k not in set(keys_a)]
    if only_a or only_b:
        first = (
            f"image {only_a[0]!r} is in A ({a.source}) but not in B ({b.source})"
            if only_a
            else f"image {only_b[0]!r} is in B ({b.source}) but not in A ({a.source})"
        )
        raise ValueError(
            f"The two models' predictions are not paired: {first} ({len(only_a)} image(s) only "
            f"in A, {len(only_b)} only in B). A paired comparison needs both models scored on "
            "the same images."
        )
    position = {k: i for i, k in enumerate(keys_b)}
    order = [position[k] for k in keys_a]
    first = next(i for i, j in enumerate(order) if i != j)
    logger.warning(
        "The predictions of B (%s) list the same images in another order (first difference: "
        "row %d is %r in A, %r in B): re-aligned by image id.",
        b.source,
        first + 1,
        a.ids[first],
        b.ids[first],
    )
    aligned = Predictions(list(a.ids), b.names, b.probabilities[order], b.source, b.meta)
    return aligned, True


def align_labels(predictions: Predictions, labels: Labels) -> np.ndarray:
    """The targets ``(n, k)`` of the predicted images, in their order and the predictions'
    finding order. Every predicted image needs a label (else ValueError naming it); labelled
    images without a prediction are left out with a warning."""
    if missing := [n for n in predictions.names if n not in labels.names]:
        raise ValueError(
            f"{predictions.source} has findings {missing} that the labels ({labels.source}) lack."
        )
    keys_p, keys_l = _keys(predictions.ids, labels.ids, predictions.source, labels.source)
    position = {k: i for i, k in enumerate(keys_l)}
    for image, key in zip(predictions.ids, keys_p, strict=True):
        if key not in position:
            raise ValueError(
                f"Image {image!r} of {predictions.source} has no label in {labels.source}."
            )
    if len(labels.ids) > len(predictions.ids):
        logger.warning(
            "%d labelled images of %s have no prediction: comparing on the %d predicted ones.",
            len(labels.ids) - len(predictions.ids),
            labels.source,
            len(predictions.ids),
        )
    rows = [position[k] for k in keys_p]
    columns = [labels.names.index(n) for n in predictions.names]
    return labels.targets[np.ix_(rows, columns)]


def dataset_labels(split) -> Labels:
    """Labels of a dataset split (multi-label ``labels`` struct, or one-hot ``label`` classes)."""
    from ..data import label_names

    all_names = label_names(split)
    ids = [str(i) for i in split["image_id"]]
    if "label" in split.column_names:
        classes = np.asarray(split["label"], dtype=int)
        targets = np.eye(len(all_names))[classes]
    else:
        rows = split["labels"]
        targets = np.array([[row[n] for n in all_names] for row in rows], dtype=np.float64)
        targets = np.where(np.isnan(targets), IGNORE_LABEL, targets)
    return Labels(ids, list(all_names), targets, "the dataset")


def write_predictions_csv(predictions: Predictions, path: Path) -> Path:
    import pandas as pd

    frame = pd.DataFrame(predictions.probabilities, columns=predictions.names)
    frame.insert(0, "image_id", predictions.ids)
    frame.to_csv(path, index=False, float_format="%.8g")
    return path


def write_labels_csv(
    ids: Sequence[str], names: Sequence[str], targets: np.ndarray, path: Path
) -> Path:
    import pandas as pd

    frame = pd.DataFrame(targets.astype(int), columns=list(names))
    frame.insert(0, "image_id", list(ids))
    frame.to_csv(path, index=False)
    return path
