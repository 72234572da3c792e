"""``load_cxr_dataset``: one entry point for every source, and pre-training mixtures."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Image, Value, concatenate_datasets

from .chexpert import load_chexpert
from .covidx import load_covidx
from .csv_source import load_csv
from .hf_dataset import from_hf_dataset
from .imagefolder import load_imagefolder
from .mimic import load_mimic_cxr
from .nih14 import load_nih14
from .splits import split_or_all
from .validation import DataValidationError

SOURCES: dict[str, Callable[..., DatasetDict]] = {
    "nih14": load_nih14,
    "chexpert": load_chexpert,
    "mimic_cxr": load_mimic_cxr,
    "covidx": load_covidx,
    "csv": load_csv,
    "imagefolder": load_imagefolder,
}


def loader_options(name: str) -> set[str]:
    """The options a source's loader takes (its keyword parameters, ``data_dir`` aside)."""
    return set(inspect.signature(SOURCES[name]).parameters) - {"data_dir"}


def loader_default(name: str, option: str) -> Any:
    """The default of ``option`` in source ``name``'s loader: what the loader applies when the
    option is not given. None for an unknown source, an option it does not take or one without
    a default."""
    if name not in SOURCES:
        return None
    parameter = inspect.signature(SOURCES[name]).parameters.get(option)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


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
    valid = loader_options(name)
    if unknown := sorted(set(options) - valid):
        raise TypeError(
            f"Unknown option(s) {unknown} for dataset {name!r}; valid: {sorted(valid)}."
        )
    return loader(data_dir, **options)


def load_labelled(name: str, data_dir: str | Path, options: dict[str, Any]) -> DatasetDict:
    """A labelled dataset: ``load_cxr_dataset`` with only the options its loader takes; an
    image folder without class folders is an error, not an unlabelled set."""
    taken = dict(options)
    if name in SOURCES:
        taken = {k: v for k, v in options.items() if k in loader_options(name)}
    if name == "imagefolder":
        taken["labelled"] = True
    return load_cxr_dataset(name, data_dir, **taken)


def load_labelled_split(
    name: str, data_dir: str | Path, split: str, options: dict[str, Any], limit: int | None = None
) -> Dataset:
    """One split of a labelled dataset (``all``: every image, see ``split_or_all``), its first
    ``limit`` rows; an absent or empty split is refused."""
    chosen = split_or_all(load_labelled(name, data_dir, options), split)
    if limit:
        chosen = chosen.select(range(min(limit, len(chosen))))
    if len(chosen) == 0:
        raise ValueError(f"The {split} split of {name} at {data_dir} is empty.")
    return chosen


def _image_paths(ds: Dataset, data_dir: str | Path) -> list[str]:
    """The resolved files of a split's images (a DICOM, decoded to bytes at loading, by its
    ``image_id`` under ``data_dir``)."""
    values = ds.cast_column("image", Image(decode=False))["image"]
    return [
        os.path.realpath(v["path"] if v and v.get("path") else os.path.join(data_dir, image_id))
        for v, image_id in zip(values, ds["image_id"], strict=True)
    ]


def _check_sources_disjoint(
    kept_by: dict[str, list[str]], held_out_by: dict[str, list[str]]
) -> None:
    """Refuse a pre-training mixture that holds one file twice (the same folder given twice, or
    one folder inside another) or that trains on a file another source holds out (a test image
    of NIH given again through a folder source), naming an example and the count."""
    twice = {p: s for p, s in kept_by.items() if len(s) > 1}
    leaked = {p: held_out_by[p] + kept_by[p] for p in kept_by if p in held_out_by}
    problems = []
    if twice:
        path, labels = next(iter(twice.items()))
        problems.append(
            f"{len(twice)} images are in more than one source, e.g. {path} in "
            f"{' and '.join(labels)}: the same data given twice?"
        )
    if leaked:
        path, labels = next(iter(leaked.items()))
        problems.append(
            f"{len(leaked)} images held out (test, or not train under explicit splits) by one "
            f"source are training images of another, e.g. {path}: held out by {labels[0]}, "
            f"trained on in {labels[-1]}"
        )
    if problems:
        raise DataValidationError("Pre-training sources overlap: " + "; ".join(problems) + ".")


def load_pretraining_dataset(sources: Sequence[tuple[str, str | Path, dict[str, Any]]]) -> Dataset:
    """Concatenate the training images of several sources, labels dropped (MAE needs none).

    Every split except ``test`` is used, so no test image is seen in pre-training; where the
    splits are explicit (``protocol="paper"`` or ``split_files``), only ``train`` is, as the
    paper pre-trains on NIH's ``train_official.txt`` alone. A ``source`` column records where
    each image came from. Patient metadata other than ``view`` is dropped: sources differ in
    what they have, and pre-training uses none.
    """
    parts, kept_by, held_out_by = [], {}, {}
    for number, (name, data_dir, options) in enumerate(sources, 1):
        dd = load_cxr_dataset(name, data_dir, **options)
        label = f"source {number} ({name}, {data_dir})"
        explicit = options.get("protocol") == "paper" or options.get("split_files") is not None
        for split, ds in dd.items():
            held_out = split == "test" or (explicit and split != "train")
            for path in _image_paths(ds, str(data_dir)):
                (held_out_by if held_out else kept_by).setdefault(path, []).append(label)
            if held_out:
                continue
            kept = ("image", "image_id", "patient_id", "view")
            ds = ds.remove_columns([c for c in ds.column_names if c not in kept])
            ds = ds.add_column("source", [name] * len(ds), feature=Value("string"))
            parts.append(ds)
    _check_sources_disjoint(kept_by, held_out_by)
    if not parts:
        raise ValueError("No pre-training images: every source was empty.")
    return concatenate_datasets(parts)
