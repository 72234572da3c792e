"""``load_cxr_dataset``: one entry point for every source, and pre-training mixtures."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Value, concatenate_datasets

from .chexpert import load_chexpert
from .covidx import load_covidx
from .csv_source import load_csv
from .hf_dataset import from_hf_dataset
from .imagefolder import load_imagefolder
from .mimic import load_mimic_cxr
from .nih14 import load_nih14

SOURCES: dict[str, Callable[..., DatasetDict]] = {
    "nih14": load_nih14,
    "chexpert": load_chexpert,
    "mimic_cxr": load_mimic_cxr,
    "covidx": load_covidx,
    "csv": load_csv,
    "imagefolder": load_imagefolder,
}


def load_cxr_dataset(
    name: str | Dataset | DatasetDict, data_dir: str | Path | None = None, **options: Any
) -> DatasetDict:
    """Load a chest X-ray source as a ``DatasetDict`` (train / validation / test where it has them).

    Rows hold ``image`` (``datasets.Image``), ``image_id``, ``patient_id``, ``view`` and either
    ``labels`` (multi-label struct, names in order: ``label_names(ds)``) or ``label``
    (``ClassLabel``), plus the patient metadata the source has: ``sex`` ("M" / "F"), ``age``
    (years) and a CSV's ``metadata_columns`` (``metadata.subgroup_columns`` lists them).
    ``name`` is one of ``SOURCES``, a Hub dataset id or a ``Dataset``.
    """
    if not isinstance(name, str) or name not in SOURCES:
        if isinstance(name, str) and data_dir is not None:
            raise ValueError(
                f"Unknown dataset {name!r}; choose one of {sorted(SOURCES)} or a Hub dataset id."
            )
        return from_hf_dataset(name, **options)
    if data_dir is None:
        raise ValueError(f"Dataset {name!r} needs data_dir (the folder holding its files).")
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"data_dir {data_dir} does not exist or is not a folder.")
    loader = SOURCES[name]
    valid = set(inspect.signature(loader).parameters) - {"data_dir"}
    if unknown := sorted(set(options) - valid):
        raise TypeError(
            f"Unknown option(s) {unknown} for dataset {name!r}; valid: {sorted(valid)}."
        )
    return loader(data_dir, **options)


def load_pretraining_dataset(sources: Sequence[tuple[str, str | Path, dict[str, Any]]]) -> Dataset:
    """Concatenate the training images of several sources, labels dropped (MAE needs none).

    Every split except ``test`` is used, so no test image is seen in pre-training; where the
    splits are explicit (``protocol="paper"`` or ``split_files``), only ``train`` is, as the
    paper pre-trains on NIH's ``train_official.txt`` alone. A ``source`` column records where
    each image came from. Patient metadata other than ``view`` is dropped: sources differ in
    what they have, and pre-training uses none.
    """
    parts = []
    for name, data_dir, options in sources:
        dd = load_cxr_dataset(name, data_dir, **options)
        explicit = options.get("protocol") == "paper" or options.get("split_files") is not None
        for split, ds in dd.items():
            if split == "test" or (explicit and split != "train"):
                continue
            kept = ("image", "image_id", "patient_id", "view")
            ds = ds.remove_columns([c for c in ds.column_names if c not in kept])
            ds = ds.add_column("source", [name] * len(ds), feature=Value("string"))
            parts.append(ds)
    if not parts:
        raise ValueError("No pre-training images: every source was empty.")
    return concatenate_datasets(parts)
