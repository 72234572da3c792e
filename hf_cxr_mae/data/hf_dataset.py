"""A ``datasets`` dataset (a Hub id or an object) with an image column and labels."""

from __future__ import annotations

from collections.abc import Sequence

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset
from datasets import Sequence as HFSequence

from .building import labels_feature
from .validation import DataValidationError


def from_hf_dataset(
    source: str | Dataset | DatasetDict,
    image_column: str = "image",
    labels_column: str = "labels",
    label_names: Sequence[str] | None = None,
    split: str | None = None,
) -> DatasetDict:
    """A Hub dataset id or a ``Dataset`` / ``DatasetDict`` whose rows hold an image and labels.

    ``labels_column`` may be a ``ClassLabel`` (single-label), a list of ``ClassLabel`` indices
    (positive findings) or a multi-hot list (then ``label_names`` gives the order).
    """
    if isinstance(source, str):
        source = load_dataset(source, split=split)
    dd = source if isinstance(source, DatasetDict) else DatasetDict(train=source)
    out = {}
    for name, ds in dd.items():
        if image_column not in ds.column_names or labels_column not in ds.column_names:
            raise DataValidationError(
                f"Split {name!r} needs columns {image_column!r} and {labels_column!r}; it has {ds.column_names}."
            )
        feature = ds.features[labels_column]
        ds = ds.rename_column(image_column, "image") if image_column != "image" else ds
        if isinstance(feature, ClassLabel):
            ds = ds.rename_column(labels_column, "label") if labels_column != "label" else ds
        else:
            inner = getattr(feature, "feature", None)
            if isinstance(feature, (HFSequence, list)) and isinstance(inner, ClassLabel):
                names = list(inner.names)

                def to_multi_hot(batch, names=names, col=labels_column):
                    return {
                        "labels": [
                            {n: float(i in pos) for i, n in enumerate(names)} for pos in batch[col]
                        ]
                    }
            else:
                if label_names is None:
                    raise ValueError(
                        f"{labels_column!r} is a multi-hot list: pass label_names to name its entries."
                    )
                names = list(label_names)

                def to_multi_hot(batch, names=names, col=labels_column):
                    for vec in batch[col]:
                        if len(vec) != len(names):
                            raise DataValidationError(
                                f"A {col!r} vector has {len(vec)} entries, expected {len(names)} ({names})."
                            )
                    return {
                        "labels": [
                            dict(zip(names, map(float, vec), strict=True)) for vec in batch[col]
                        ]
                    }

            features = ds.features.copy()
            features["labels"] = labels_feature(names)
            if labels_column != "labels":
                del features[labels_column]
            ds = ds.map(
                to_multi_hot,
                batched=True,
                features=features,
                remove_columns=[labels_column] if labels_column != "labels" else None,
            )
        out[name] = ds
    return DatasetDict(out)
