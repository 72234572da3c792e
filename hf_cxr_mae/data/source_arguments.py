"""``SourceArguments``: the one dataset spec (``--dataset``, ``--data_dir`` and every loader
option) that the recipes and the ``hf-cxr-mae`` commands reading a dataset parse, and
``check_choices``, the check of ``Literal`` fields that config files bypass."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

# Fields named apart from their loader keyword: the recipes' parser also holds
# TrainingArguments, whose ``--seed`` and ``--label_names`` mean something else.
RENAMED = {"split_seed": "seed", "csv_label_names": "label_names"}
# Fields that say where the data is, not how to read it.
LOCATION = ("dataset", "data_dir")
# The names of ``loading.SOURCES`` (a test keeps them equal), for help texts that must not
# import the loaders (``--help`` loads no datasets).
SOURCE_NAMES = ("nih14", "chexpert", "mimic_cxr", "covidx", "csv", "imagefolder")


def removed_option_message(pair: str) -> str:
    """What ``--option KEY=VALUE`` (before every loader option had a flag) says: the flag to
    pass instead, under the field's name (``seed`` -> ``--split_seed``)."""
    key, _, value = pair.partition("=")
    flag = {loader: name for name, loader in RENAMED.items()}.get(key, key)
    return f"--option was removed: pass each dataset option as a flag, --{flag} {value}"


def _choices(hint: Any) -> tuple[Any, ...]:
    """The values of a ``Literal`` type (also inside ``X | None``); empty for other types."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(c for arg in typing.get_args(hint) for c in _choices(arg))
    return ()


def check_choices(args: Any) -> None:
    """Refuse a value outside its ``Literal`` field's choices: HfArgumentParser checks flags,
    but not the values of a YAML / JSON config (``parse_recipe_args``) or of the constructor.
    A list (``findings: [Atelectasis, ...]``) is left to the loader."""
    hints = typing.get_type_hints(type(args))
    for f in fields(args):
        choices, value = _choices(hints.get(f.name)), getattr(args, f.name)
        if choices and isinstance(value, str) and value not in choices:
            raise ValueError(
                f"--{f.name} must be one of {', '.join(map(repr, choices))}, got {value!r}."
            )


def _one_item_lists(args: Any) -> None:
    """A config file's ``views: PA`` or ``dataset: nih14`` (a string where a list is expected)
    as the one-item list it means: used as given, a string is a list of its letters."""
    hints = typing.get_type_hints(type(args))
    for f in fields(args):
        value = getattr(args, f.name)
        if isinstance(value, str) and "list[" in str(hints.get(f.name)):
            setattr(args, f.name, [value])


def _takers(option: str) -> list[str]:
    from .loading import SOURCES, loader_options  # here: the CLI's --help needs no datasets

    return sorted(n for n in SOURCES if RENAMED.get(option, option) in loader_options(n))


@dataclass
class SourceArguments:
    """Where the data is and how its loader reads it (``load_cxr_dataset``); an option left
    None keeps the loader's default."""

    dataset: list[str] | None = field(
        default=None,
        metadata={
            "help": f"Source name(s): {', '.join(SOURCE_NAMES)} (several for pre-training). "
            "None: the built-in DEMO data."
        },
    )
    data_dir: list[str] | None = field(default=None, metadata={"help": "One folder per --dataset."})
    image_dir: str | None = field(
        default=None, metadata={"help": "nih14: subfolder holding the images."}
    )
    label_file: str | None = field(default=None, metadata={"help": "nih14: the label CSV."})
    train_list: str | None = field(default=None, metadata={"help": "nih14: the train_val list."})
    test_list: str | None = field(default=None, metadata={"help": "nih14: the test list."})
    uncertainty: Literal["ones", "zeros", "ignore", "paper"] | None = field(
        default=None, metadata={"help": "chexpert/mimic/csv: ones, zeros, ignore or paper."}
    )
    findings: Literal["competition", "all"] | None = field(
        default=None, metadata={"help": "chexpert/mimic: 'competition' (5) or 'all' (14)."}
    )
    frontal_only: bool | None = field(
        default=None, metadata={"help": "chexpert: frontal views only."}
    )
    train_file: str | None = field(default=None, metadata={"help": "chexpert: the train CSV."})
    test_file: str | None = field(
        default=None, metadata={"help": "chexpert: the CSV of the test split (valid.csv)."}
    )
    views: list[str] | None = field(
        default=None, metadata={"help": "nih14/mimic: keep these view positions."}
    )
    validation_size: float | None = field(
        default=None, metadata={"help": "Patient-disjoint validation fraction or count."}
    )
    split_seed: int | None = field(
        default=None, metadata={"help": "Seed of the carved validation split (default 0)."}
    )
    protocol: Literal["release", "paper"] | None = field(
        default=None,
        metadata={
            "help": "nih14: 'release' (official test list, validation carved from train_val) or "
            "'paper' (the paper's train/val/test split files, shipped with the package)."
        },
    )
    split_files: str | None = field(
        default=None,
        metadata={
            "help": "Explicit split lists, one file per split: 'train=a.txt,validation=b.txt,"
            "test=c.txt' (a mapping in a config file). Overrides the source's own split."
        },
    )
    csv_file: str | None = field(
        default=None, metadata={"help": "csv: the label file inside data_dir."}
    )
    image_column: str | None = field(default=None, metadata={"help": "csv: the image-path column."})
    label_column: str | None = field(
        default=None, metadata={"help": "csv: one delimited label column."}
    )
    label_columns: list[str] | None = field(
        default=None, metadata={"help": "csv: one column per finding."}
    )
    csv_label_names: list[str] | None = field(
        default=None, metadata={"help": "csv: the findings of --label_column, in order."}
    )
    no_finding: str | None = field(
        default=None, metadata={"help": "csv: the label of a normal image ('No Finding')."}
    )
    patient_column: str | None = field(default=None, metadata={"help": "csv: the patient column."})
    view_column: str | None = field(default=None, metadata={"help": "csv: the view column."})
    split_column: str | None = field(
        default=None, metadata={"help": "csv: a column naming each row's split."}
    )
    label_separator: str | None = field(
        default=None,
        metadata={
            "help": "nih14/csv: the separator between the findings of one label cell (default "
            "'|'); findings written with another (';', ',') are refused, naming the rows."
        },
    )
    label_delimiter: str | None = field(
        default=None, metadata={"help": "csv: the old name of --label_separator."}
    )
    metadata_columns: list[str] | None = field(
        default=None,
        metadata={
            "help": "csv: columns kept for subgroup analysis; Sex/Gender and Age (or "
            "'sex=COLUMN', 'age=COLUMN') become the normalised sex and age columns."
        },
    )
    labeler: Literal["chexpert", "negbio"] | None = field(
        default=None, metadata={"help": "mimic_cxr: chexpert or negbio."}
    )
    prefix: str | None = field(
        default=None, metadata={"help": "mimic_cxr: the file name prefix (mimic-cxr-2.0.0)."}
    )
    patients_file: str | None = field(
        default=None, metadata={"help": "mimic_cxr: the MIMIC-IV patients file (sex, age)."}
    )
    class_names: list[str] | None = field(default=None, metadata={"help": "covidx: class order."})
    labelled: bool | None = field(
        default=None,
        metadata={"help": "imagefolder: class folders (true) or unlabelled images (false)."},
    )
    check_images: Literal["exists", "open", "decode"] | None = field(
        default=None, metadata={"help": "exists, open or decode (finds truncated files)."}
    )
    on_bad: Literal["raise", "skip"] | None = field(
        default=None, metadata={"help": "raise (default) or skip bad rows, reporting them."}
    )

    def __post_init__(self) -> None:
        _one_item_lists(self)
        if self.dataset and (not self.data_dir or len(self.data_dir) != len(self.dataset)):
            raise ValueError(
                f"Give one --data_dir per --dataset: got datasets {self.dataset} and data_dir {self.data_dir}."
            )
        if self.split_files is not None and len(self.dataset or []) != 1:
            raise ValueError(
                f"--split_files names the splits of one --dataset; got datasets {self.dataset}."
            )
        if self.label_delimiter is not None:  # the old name, kept working
            if self.label_separator not in (None, self.label_delimiter):
                raise ValueError(
                    f"--label_delimiter {self.label_delimiter!r} and --label_separator "
                    f"{self.label_separator!r} disagree; pass only --label_separator."
                )
            self.label_separator, self.label_delimiter = self.label_delimiter, None
        check_choices(self)
        for option in self.source_options():
            self._check_taken(option)

    def _check_taken(self, option: str) -> None:
        """Refuse an option no given dataset takes: it would be dropped without a word."""
        from .loading import SOURCES

        datasets = self.dataset or []
        takers = _takers(option)
        if not any(d in takers or d not in SOURCES for d in datasets):  # a Hub id takes any
            raise ValueError(
                f"--{option} is an option of --dataset {' / '.join(takers)}; got datasets {datasets}."
            )

    def source_options(self) -> dict[str, Any]:
        """Every loader option given (by field name), the location aside."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(SourceArguments)
            if f.name not in LOCATION and getattr(self, f.name) is not None
        }

    def options(self, name: str | None = None) -> dict[str, Any]:
        """The keyword arguments of source ``name``'s loader: the options it takes (all of
        them for a Hub dataset or no ``name``)."""
        from .loading import SOURCES, loader_options

        taken = loader_options(name) if name in SOURCES else None
        out = {RENAMED.get(k, k): v for k, v in self.source_options().items()}
        return out if taken is None else {k: v for k, v in out.items() if k in taken}

    def sources(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(name, data_dir, options)`` per ``--dataset``, each with the options its loader takes."""
        from .loading import SOURCES

        out = []
        for name, data_dir in zip(self.dataset or [], self.data_dir or [], strict=True):
            if name not in SOURCES:
                raise ValueError(f"Unknown --dataset {name!r}; choose from {sorted(SOURCES)}.")
            out.append((name, str(data_dir), self.options(name)))
        return out

    def describe(self) -> str:
        """The data as error messages name it: ``nih14 at /data/nih`` or ``the DEMO data``."""
        if not self.dataset:
            return "the DEMO data"
        return ", ".join(f"{n} at {d}" for n, d in zip(self.dataset, self.data_dir, strict=True))
