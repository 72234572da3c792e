"""The harmonised label space (``data.label_space``) and the label maps built from it
(``data.label_map``): which labels of NIH ChestX-ray14, CheXpert / MIMIC-CXR, COVIDx and class
folders are mapped onto a model's findings, what is left out and why, and how a dataset is
relabelled with the model's names."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from hf_cxr_mae.data.label_map import apply_label_map, resolve_label_map
from hf_cxr_mae.data.label_space import LEFT_OUT, SHARED, Finding, LeftOut, lookup
from hf_cxr_mae.data.labels import CHEXPERT5_LABELS, CHEXPERT14_LABELS, NIH14_LABELS
from hf_cxr_mae.data.splits import split_or_all

NIH_ON_CHEXPERT = {
    "Atelectasis": ["Atelectasis"],
    "Cardiomegaly": ["Cardiomegaly"],
    "Effusion": ["Pleural Effusion"],
    "Pneumonia": ["Pneumonia"],
    "Pneumothorax": ["Pneumothorax"],
    "Consolidation": ["Consolidation"],
    "Edema": ["Edema"],
}
NIH_LEFT_OUT = [
    "Infiltration", "Mass", "Nodule", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]  # fmt: skip
CHEXPERT_LEFT_OUT = [
    "No Finding", "Enlarged Cardiomediastinum", "Lung Opacity", "Lung Lesion", "Pleural Other",
    "Fracture", "Support Devices",
]  # fmt: skip


def test_every_label_of_nih_and_chexpert_is_either_shared_or_left_out_exactly_once():
    """The table must account for each source's exact label names: a label neither mapped nor
    listed as left out would vanish from an external report without a reason."""
    for kind, labels in (("nih14", NIH14_LABELS), ("chexpert", CHEXPERT14_LABELS)):
        shared = [getattr(f, kind) for f in SHARED if getattr(f, kind)]
        left = [e.label for e in LEFT_OUT if kind in e.kinds]
        assert sorted(shared + left) == sorted(labels), kind
    # No spelling names two entries: a lookup is never ambiguous.
    names = [n for f in SHARED for n in f.names()] + [e.label for e in LEFT_OUT]
    assert len(names) == len(set(names))
    assert [f.nih14 for f in SHARED if f.chexpert == "Pleural Effusion"] == ["Effusion"]
    assert isinstance(lookup("Pleural_Thickening", exact=True), LeftOut)
    assert isinstance(lookup("pleural effusion", exact=False), Finding)
    assert lookup("pleural effusion", exact=True) is None  # exact means each source's spelling


def test_auto_map_of_an_nih_model_on_chexpert_labels_is_exact():
    """An NIH model on CheXpert's 14 labels: the seven findings both define alike, and every
    other label of either side named with the table's reason (the doubtful ones included)."""
    lm = resolve_label_map("auto", CHEXPERT14_LABELS, NIH14_LABELS, "chexpert")
    assert lm.sources == NIH_ON_CHEXPERT
    assert lm.findings == [n for n in NIH14_LABELS if n in NIH_ON_CHEXPERT]  # the model's order
    assert list(lm.left_out_model) == NIH_LEFT_OUT
    assert list(lm.left_out_dataset) == CHEXPERT_LEFT_OUT
    assert "Lung Opacity" in lm.left_out_model["Infiltration"]
    assert (
        "Lung Lesion" in lm.left_out_model["Mass"] and "Lung Lesion" in lm.left_out_model["Nodule"]
    )
    assert "Pleural Other" in lm.left_out_model["Pleural_Thickening"]
    assert lm.normal == [] and lm.single_label is False
    # CheXpert's default label set (the competition's five): Pneumonia and Pneumothorax are
    # findings of the table, but not labels of this dataset.
    five = resolve_label_map("auto", CHEXPERT5_LABELS, NIH14_LABELS, "chexpert")
    assert five.sources == {k: v for k, v in NIH_ON_CHEXPERT.items() if k not in ("Pneumonia", "Pneumothorax")}  # fmt: skip
    assert five.left_out_model["Pneumonia"].startswith("Not among the dataset's labels")


def test_auto_map_the_other_way_and_on_the_models_own_labels():
    """A CheXpert model on NIH data maps Pleural Effusion to Effusion; a model on its own
    source's labels maps every label to itself, the table's left-out ones too."""
    lm = resolve_label_map("auto", NIH14_LABELS, CHEXPERT5_LABELS, "nih14")
    assert lm.sources == {
        "Atelectasis": ["Atelectasis"], "Cardiomegaly": ["Cardiomegaly"],
        "Consolidation": ["Consolidation"], "Edema": ["Edema"], "Pleural Effusion": ["Effusion"],
    }  # fmt: skip
    own = resolve_label_map("auto", NIH14_LABELS, NIH14_LABELS, "nih14")
    assert own.sources == {n: [n] for n in NIH14_LABELS}
    assert own.left_out_model == {} and own.left_out_dataset == {}


@pytest.mark.parametrize(
    ("source", "classes", "positive", "normal", "left"),
    [
        ("imagefolder", ["COVID-19", "NORMAL", "PNEUMONIA"], "PNEUMONIA", "NORMAL", "COVID-19"),
        ("imagefolder", ["Lung_Opacity", "Normal", "Viral Pneumonia"], "Viral Pneumonia", "Normal", "Lung_Opacity"),
        ("covidx", ["COVID-19", "normal", "pneumonia"], "pneumonia", "normal", "COVID-19"),
    ],
)  # fmt: skip
def test_class_folders_map_one_class_to_positives_and_the_normal_class_to_negatives(
    source, classes, positive, normal, left
):
    """Single-label layouts (Kermany's PNEUMONIA/NORMAL, the COVID-19 Radiography Database,
    COVIDx): the pneumonia class is Pneumonia's positives, the normal class its negatives, and
    COVID-19 / lung opacity are left out with the reason."""
    lm = resolve_label_map("auto", classes, NIH14_LABELS, source, single_label=True)
    assert lm.sources == {"Pneumonia": [positive]}
    assert lm.normal == [normal]
    assert list(lm.left_out_dataset) == [left]
    assert "no counterpart" in lm.left_out_dataset[left].lower()


def test_a_folder_without_a_normal_class_is_refused():
    """Without a normal folder a finding has no negatives: refused, not scored as undefined."""
    with pytest.raises(ValueError, match=r"no normal class .*'No Finding'"):
        resolve_label_map("auto", ["COVID-19", "PNEUMONIA"], NIH14_LABELS, "imagefolder", True)


def test_a_label_map_file_is_checked_against_both_label_sets(tmp_path):
    """A hospital's own names: a FILE that names an unknown label or finding, or leaves a
    dataset label out, is refused naming every name at fault; a complete one is used as is."""
    classes = ["normal_cxr", "pna", "tb"]
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"pna": "Pneumonia", "Normal": "No Finding", "tb": "Tuberculosis"}))
    with pytest.raises(ValueError) as err:
        resolve_label_map(str(wrong), classes, NIH14_LABELS, "imagefolder", True)
    message = str(err.value)
    assert "unknown dataset label(s) ['Normal']" in message
    assert "unknown model finding(s) ['Tuberculosis']" in message
    assert "no entry for the dataset label(s) ['normal_cxr']" in message
    partial = tmp_path / "partial.yaml"
    partial.write_text("pna: Pneumonia\n")
    with pytest.raises(ValueError, match=r"no entry for the dataset label\(s\) \['normal_cxr', 'tb'\]"):  # fmt: skip
        resolve_label_map(str(partial), classes, NIH14_LABELS, "imagefolder", True)
    good = tmp_path / "good.yaml"
    good.write_text("pna: Pneumonia\nnormal_cxr: No Finding\ntb: null\n")
    lm = resolve_label_map(str(good), classes, NIH14_LABELS, "imagefolder", True)
    assert (lm.sources, lm.normal) == ({"Pneumonia": ["pna"]}, ["normal_cxr"])
    assert list(lm.left_out_dataset) == ["tb"]
    # Multi-label: two columns for one finding cannot be one target.
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"Effusion": "Effusion", "Pleural Effusion": "Effusion"}))
    with pytest.raises(ValueError, match=r"\['Effusion', 'Pleural Effusion'\] all map to 'Effusion'"):  # fmt: skip
        resolve_label_map(str(both), ["Effusion", "Pleural Effusion"], NIH14_LABELS, "csv")


def _multi_label(names: list[str], rows: list[list[float]]) -> Dataset:
    features = Features(
        {"image_id": Value("string"), "labels": {n: Value("float32") for n in names}}
    )
    return Dataset.from_dict(
        {
            "image_id": [f"img{i}.png" for i in range(len(rows))],
            "labels": [dict(zip(names, r, strict=True)) for r in rows],
        },
        features=features,
    )


def test_relabelling_keeps_the_loaders_targets_and_uncertain_cells():
    """Multi-label data: each scored finding takes its dataset column as the loader made it
    (1, 0, or -1 left out under the ``ignore`` policy), under the model's name, in its order."""
    names = ["No Finding", "Pleural Effusion", "Edema", "Lung Opacity"]
    rows = [[0, 1, -1, 1], [1, 0, 0, 0], [0, -1, 1, 1]]
    lm = resolve_label_map("auto", names, NIH14_LABELS, "chexpert")
    out, dropped = apply_label_map(_multi_label(names, rows), lm)
    assert dropped == {}
    assert list(out.features["labels"]) == ["Effusion", "Edema"]
    assert out["labels"] == [
        {"Effusion": 1.0, "Edema": -1.0},
        {"Effusion": 0.0, "Edema": 0.0},
        {"Effusion": -1.0, "Edema": 1.0},
    ]
    assert out["image_id"] == ["img0.png", "img1.png", "img2.png"]


def test_relabelling_class_folders_leaves_out_unmapped_classes():
    """Single-label data: the mapped class is 1, the normal class 0, images of a class mapped
    to nothing are left out and counted; a class mapped to another finding is neither (-1)."""
    classes = ["COVID-19", "EFFUSION", "NORMAL", "PNEUMONIA"]
    labels = [0, 3, 2, 1, 3, 0, 2]
    ds = Dataset.from_dict(
        {"image_id": [f"i{i}" for i in range(len(labels))], "label": labels},
        features=Features({"image_id": Value("string"), "label": ClassLabel(names=classes)}),
    )
    lm = resolve_label_map("auto", classes, NIH14_LABELS, "imagefolder", True)
    out, dropped = apply_label_map(ds, lm)
    assert dropped == {"COVID-19": 2}
    assert "label" not in out.column_names and out["image_id"] == ["i1", "i2", "i3", "i4", "i6"]
    got = np.array([[row["Effusion"], row["Pneumonia"]] for row in out["labels"]])
    np.testing.assert_array_equal(got, [[-1, 1], [0, 0], [1, -1], [-1, 1], [0, 0]])


def test_split_all_is_every_image_in_id_order():
    """``--split all``: every split of a dataset without one of its own, in image-id order."""
    data = DatasetDict(
        train=Dataset.from_dict({"image_id": ["c", "a"]}),
        validation=Dataset.from_dict({"image_id": ["b"]}),
    )
    assert split_or_all(data, "all")["image_id"] == ["a", "b", "c"]
    assert split_or_all(data, "validation")["image_id"] == ["b"]
    with pytest.raises(ValueError, match=r"Split 'test' not in the dataset.*'all'"):
        split_or_all(data, "test")


@pytest.mark.parametrize(
    ("name", "kind", "normal"),
    [("normal", "folder", True), ("NORMAL", "folder", True), ("no finding", "folder", True),
     ("No-Finding", "folder", True), ("no_finding", "any", True), ("Normal ", "folder", True),
     ("normal", "nih14", False), ("No Finding", "nih14", True), ("no finding", "chexpert", False),
     ("NORMAL", "covidx", False), ("normal", "covidx", True), ("abnormal", "folder", False)],
)  # fmt: skip
def test_a_folder_normal_class_is_matched_loosely_a_source_label_exactly(name, kind, normal):
    """Class folders are named by hand (NORMAL, no-finding): any spelling of a normal name
    counts there; a source with a fixed vocabulary (nih14, chexpert, covidx) counts only its own
    spelling, so 'normal' under nih14 is a class like any other."""
    from hf_cxr_mae.data.label_space import is_normal

    assert is_normal(name, kind) is normal


@pytest.mark.parametrize("name", ["Pleural-Effusion", "pleural_effusion", "Pleural Effusion",
                                  "PLEURAL  EFFUSION", "pleural- effusion"])  # fmt: skip
def test_hyphens_underscores_and_case_are_one_spelling(name):
    """A loose lookup treats '-', '_' and runs of spaces alike and ignores case: every spelling
    of CheXpert's Pleural Effusion is the one shared finding (NIH's Effusion)."""
    from hf_cxr_mae.data.label_space import normalise

    found = lookup(name, exact=False)
    assert isinstance(found, Finding)
    assert (found.nih14, found.chexpert) == ("Effusion", "Pleural Effusion")
    assert normalise(name) == "pleural effusion"


def test_a_multi_label_map_file_must_name_every_dataset_label(tmp_path):
    """Multi-label too: a dataset column the FILE forgets is refused (mapped, or null to leave
    it out on purpose), not silently dropped from the external evaluation."""
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"Effusion": "Effusion", "Mass": "Mass"}))
    with pytest.raises(ValueError) as err:
        resolve_label_map(str(partial), ["Effusion", "Mass", "Nodule"], NIH14_LABELS, "csv")
    assert str(err.value) == (
        f"--label_map {partial} does not fit: no entry for the dataset label(s) ['Nodule']: map "
        "each to a model finding or to null (left out)."
    )
    partial.write_text(json.dumps({"Effusion": "Effusion", "Mass": "Mass", "Nodule": None}))
    lm = resolve_label_map(str(partial), ["Effusion", "Mass", "Nodule"], NIH14_LABELS, "csv")
    assert lm.sources == {"Effusion": ["Effusion"], "Mass": ["Mass"]}
    assert list(lm.left_out_dataset) == ["Nodule"]
