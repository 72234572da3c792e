"""The harmonised label space: which findings of NIH ChestX-ray14, CheXpert / MIMIC-CXR, COVIDx
and common class-folder layouts mean the same thing, and which have no counterpart (and why).

One table, read by ``label_map`` (``--label_map auto``) to score a model trained on one source on
data of another. The rule is conservative: two labels are mapped only where their definitions
agree, so that a positive in one set is a positive in the other and a negative a negative. A
label whose nearest counterpart is broader or narrower (Infiltration / Lung Opacity, Mass and
Nodule / Lung Lesion, Pleural_Thickening / Pleural Other) is left out, with the reason, rather
than scored against targets that mean something else.

Label names are each source's exact spelling (``NIH14_LABELS``, ``CHEXPERT14_LABELS``, the COVIDx
classes); class folders and CSV columns, named by people, are matched case-blind with ``_`` and
``-`` read as spaces (``normalise``). MIMIC-CXR's label files use CheXpert's labeler and names
(its NegBio file too), so one column serves both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The table's columns, and the dataset sources (``load_cxr_dataset`` names) each one serves.
KINDS = ("nih14", "chexpert", "covidx", "folder")
DATASET_KINDS = {
    "nih14": "nih14",
    "chexpert": "chexpert",
    "mimic_cxr": "chexpert",
    "covidx": "covidx",
    "imagefolder": "folder",
    "csv": "any",  # a hospital's own column names: matched like folder names
}


@dataclass(frozen=True)
class Finding:
    """One harmonised finding: its name in each source (None: no such label there) and why the
    names are taken to mean the same."""

    name: str
    nih14: str | None
    chexpert: str | None
    covidx: str | None
    folders: tuple[str, ...]
    why: str

    def names(self) -> tuple[str, ...]:
        """Every spelling of this finding the table knows."""
        given = (self.nih14, self.chexpert, self.covidx, *self.folders)
        return tuple(dict.fromkeys(n for n in given if n))


@dataclass(frozen=True)
class LeftOut:
    """A label with no counterpart in the other sources, the sources that have it, and why."""

    label: str
    kinds: tuple[str, ...]
    why: str


SHARED: tuple[Finding, ...] = (
    Finding(
        "Atelectasis", "Atelectasis", "Atelectasis", None, ("Atelectasis",),
        "Collapse of lung tissue: the same term in both report labelers.",
    ),
    Finding(
        "Cardiomegaly", "Cardiomegaly", "Cardiomegaly", None, ("Cardiomegaly",),
        "An enlarged heart: the same term in both (CheXpert also counts it under Enlarged "
        "Cardiomediastinum, which is left out).",
    ),
    Finding(
        "Pleural effusion", "Effusion", "Pleural Effusion", None,
        ("Effusion", "Pleural Effusion"),
        "NIH's 'Effusion' is the pleural effusion of the reports under a short name; CheXpert "
        "names it in full.",
    ),
    Finding(
        "Pneumonia", "Pneumonia", "Pneumonia", "pneumonia",
        ("Pneumonia", "Viral Pneumonia", "Bacterial Pneumonia"),
        "Pneumonia as the report names it (NIH, CheXpert) or as the image's class (COVIDx "
        "'pneumonia': pneumonia other than COVID-19; class folders such as Kermany's "
        "PNEUMONIA / NORMAL, 'Viral Pneumonia'): a positive is a pneumonia in every one. "
        "COVID-19 is not mapped (see left out).",
    ),
    Finding(
        "Pneumothorax", "Pneumothorax", "Pneumothorax", None, ("Pneumothorax",),
        "Air in the pleural space: the same term in both.",
    ),
    Finding(
        "Consolidation", "Consolidation", "Consolidation", None, ("Consolidation",),
        "Air spaces filled (fluid, pus, cells): the same term in both.",
    ),
    Finding(
        "Edema", "Edema", "Edema", None, ("Edema",),
        "Pulmonary edema: the same term in both.",
    ),
)  # fmt: skip

_OPACITY = (
    "CheXpert's Lung Opacity is any opacity of the lung, the parent of Edema, Consolidation, "
    "Pneumonia, Lung Lesion and Atelectasis in its label hierarchy; NIH's Infiltration is "
    "narrower, so an image negative for Infiltration can be positive for Lung Opacity: the "
    "definitions do not agree."
)
_LESION = (
    "CheXpert's Lung Lesion joins masses, nodules and other lesions in one label; NIH separates "
    "Mass from Nodule (by size: a mass over 3 cm, by radiology's convention). Neither NIH label "
    "alone is Lung Lesion, and a model has no output for their union."
)
_PLEURAL = (
    "Doubtful, so left out: CheXpert's Pleural Other takes pleural thickening together with "
    "pleural fibrosis, calcification and plaques, so its positives need not show thickening."
)

LEFT_OUT: tuple[LeftOut, ...] = (
    LeftOut("Infiltration", ("nih14",), _OPACITY),
    LeftOut("Lung Opacity", ("chexpert",), _OPACITY),
    LeftOut(
        "Lung_Opacity", ("folder",),
        "The COVID-19 Radiography Database's class of lung opacity other than COVID-19: as broad "
        "as CheXpert's Lung Opacity; no counterpart.",
    ),
    LeftOut("Mass", ("nih14",), _LESION),
    LeftOut("Nodule", ("nih14",), _LESION),
    LeftOut("Lung Lesion", ("chexpert",), _LESION),
    LeftOut("Pleural_Thickening", ("nih14",), _PLEURAL),
    LeftOut("Pleural Other", ("chexpert",), _PLEURAL),
    LeftOut("Emphysema", ("nih14",), "No label in CheXpert / MIMIC-CXR."),
    LeftOut(
        "Fibrosis", ("nih14",),
        "Lung fibrosis has no label in CheXpert / MIMIC-CXR (Pleural Other counts pleural "
        "fibrosis only).",
    ),
    LeftOut("Hernia", ("nih14",), "No label in CheXpert / MIMIC-CXR (NIH's is mostly hiatal)."),
    LeftOut(
        "Enlarged Cardiomediastinum", ("chexpert",),
        "An enlarged cardiac silhouette or a widened mediastinum; NIH has only Cardiomegaly, "
        "the cardiac part, which is mapped on its own.",
    ),
    LeftOut("Fracture", ("chexpert",), "No label in NIH ChestX-ray14."),
    LeftOut("Support Devices", ("chexpert",), "No label in NIH ChestX-ray14 (not a pathology)."),
    LeftOut(
        "No Finding", ("chexpert",),
        "Not a finding: CheXpert's No Finding means no pathology among its other 13 labels "
        "(support devices allowed), NIH's none of its 14; an image normal in one can carry a "
        "finding the other does not label (an NIH 'No Finding' image may show a fracture). "
        "Each shared finding takes its negatives from its own column instead.",
    ),
    LeftOut(
        "COVID-19", ("covidx", "folder"),
        "No counterpart: the class is defined by a positive SARS-CoV-2 test, not by the "
        "radiograph, and not every COVID-19 image shows pneumonia, so its images are neither "
        "positives nor negatives of Pneumonia and are left out (a --label_map FILE with "
        "'COVID-19': 'Pneumonia' scores them as pneumonia, if that is what is meant).",
    ),
    LeftOut("COVID", ("folder",), "As COVIDx's COVID-19: a test result, no counterpart."),
    LeftOut(
        "positive", ("covidx",),
        "COVIDx CXR-3 and later: a positive SARS-CoV-2 test; no counterpart.",
    ),
    LeftOut(
        "negative", ("covidx",),
        "COVIDx CXR-3 and later: a negative SARS-CoV-2 test, which includes other pneumonia, so "
        "it is no normal class; no counterpart.",
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Normal:
    """What 'no finding' is called in a source and what it means for the targets."""

    names: tuple[str, ...]
    meaning: str


NO_FINDING: dict[str, Normal] = {
    "nih14": Normal(
        ("No Finding",),
        "'No Finding' in Finding Labels: none of NIH's 14 findings was mined from the report, "
        "so every target is 0. Not a column, and not a model output.",
    ),
    "chexpert": Normal(
        ("No Finding",),
        "A column of its own, left out (see the left-out labels). A finding's negatives are its own column's "
        "0 and blank (not mentioned, read as 0 by the loader); uncertain (-1) follows the "
        "loader's uncertainty policy.",
    ),
    "covidx": Normal(
        ("normal",),
        "Neither COVID-19 nor other pneumonia: the negatives of Pneumonia.",
    ),
    "folder": Normal(
        ("NORMAL", "Normal", "No Finding", "No_Finding"),
        "The normal class folder: negatives of every finding the other class folders map to. "
        "An image of another class is neither positive nor negative for a finding its class "
        "does not map to.",
    ),
}

# What a data source is, beside its names, that bears on an external evaluation.
SOURCE_NOTES: dict[str, str] = {
    "covidx": (
        "COVIDx takes its normal and pneumonia images largely from the RSNA Pneumonia Detection "
        "Challenge, whose images are NIH ChestX-ray14's: a model trained on NIH ChestX-ray14 may "
        "have seen them, so this set is not independent of it."
    ),
    "mimic_cxr": (
        "MIMIC-CXR's labels come from CheXpert's labeler (or NegBio) with CheXpert's names: "
        "read through the CheXpert column of the table."
    ),
}


def normalise(name: str) -> str:
    """A name as people's spellings are compared: case-blind, ``_`` and ``-`` as spaces."""
    return re.sub(r"[\s_\-]+", " ", name).strip().casefold()


def _index(exact: bool) -> dict[str, Finding | LeftOut]:
    key = (lambda n: n) if exact else normalise
    index: dict[str, Finding | LeftOut] = {}
    for finding in SHARED:
        for name in finding.names():
            index[key(name)] = finding
    for entry in LEFT_OUT:
        index.setdefault(key(entry.label), entry)
    return index


_EXACT = _index(exact=True)
_LOOSE = _index(exact=False)
_NORMAL_EXACT = {kind: set(normal.names) for kind, normal in NO_FINDING.items()}
_NORMAL_LOOSE = {normalise(n) for normal in NO_FINDING.values() for n in normal.names}


def lookup(name: str, exact: bool) -> Finding | LeftOut | None:
    """The table's entry for a label name: a shared ``Finding``, a ``LeftOut`` label, or None
    when the table does not know it. ``exact``: the sources' own spellings only."""
    if exact:
        return _EXACT.get(name)
    return _EXACT.get(name) or _LOOSE.get(normalise(name))


def is_normal(name: str, kind: str) -> bool:
    """Whether a class name is the normal class of a source of ``kind`` (``KINDS`` or "any")."""
    if kind in _NORMAL_EXACT and kind != "folder":
        return name in _NORMAL_EXACT[kind]
    return normalise(name) in _NORMAL_LOOSE
