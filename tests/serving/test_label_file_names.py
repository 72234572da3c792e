"""File names built from a model's finding names: those come from the model's config.json
(``id2label``, i.e. from whoever published it on the Hub), so a hostile or careless name must
never write outside the folder the user chose, fail on the file system, or overwrite another
finding's file."""

import hashlib
from pathlib import Path

import numpy as np
from helpers import tiny_classifier
from PIL import Image

from hf_cxr_mae.file_names import MAX_STEM, safe_file_stems
from hf_cxr_mae.serving.gradcam import write_heatmaps
from hf_cxr_mae.serving.predict import predict_files

HOSTILE = [
    "x/../../../escaped",
    "..",
    "/tmp/absolute",
    "C:\\Windows\\evil",
    "nul\x00byte",
    "L" * 300,
    "Mass",
    "mass",
    "a b",
    "a_b",
]


def tag(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def test_each_name_gets_one_distinct_safe_component():
    """Separators, dots, NUL and length are neutralised, and names that would end up equal
    (by sanitising, or by case on macOS / Windows) are told apart by a hash of the name."""
    stems = safe_file_stems(HOSTILE)
    assert stems == {
        "x/../../../escaped": "x_.._.._.._escaped",
        "..": "finding",
        "/tmp/absolute": "tmp_absolute",
        "C:\\Windows\\evil": "C_Windows_evil",
        "nul\x00byte": "nul_byte",
        "L" * 300: "L" * MAX_STEM,
        "Mass": f"Mass-{tag('Mass')}",
        "mass": f"mass-{tag('mass')}",
        "a b": f"a_b-{tag('a b')}",
        "a_b": f"a_b-{tag('a_b')}",
    }
    # Ordinary names are kept as they were written before (spaces as underscores).
    assert safe_file_stems(["Pleural Thickening", "Effusion"]) == {
        "Pleural Thickening": "Pleural_Thickening",
        "Effusion": "Effusion",
    }


def test_heatmaps_of_hostile_finding_names_stay_in_the_output_folder(tmp_path):
    """Every heatmap lands directly in --heatmap's folder, one file per finding, even when a
    folder there would let ``x/../../..`` climb out (as it did: the name was joined as is)."""
    model = tiny_classifier(HOSTILE)
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(image)
    out = tmp_path / "a" / "b" / "heat"
    (out / "img_x").mkdir(parents=True)  # img_x/../../../escaped.png would be tmp_path/a
    results, failures = predict_files(model, [image], fast=False)
    assert failures == []
    written = write_heatmaps(model, results[0], out, top=len(HOSTILE))
    stems = safe_file_stems(HOSTILE)
    assert sorted(written) == sorted(str(out / f"img_{stems[n]}.png") for n in HOSTILE)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert files == sorted([image, *(Path(p) for p in written)])
    assert len({p.lower() for p in written}) == len(HOSTILE)  # distinct without case too


def test_no_stem_is_hidden_an_option_or_ends_in_a_dot():
    """A leading '.' would make a hidden file, a leading '-' a command-line option, a trailing
    '.' a name Windows silently changes: all are stripped, the rest kept as is."""
    names = [".hidden", "-rf", "a.", "._-x-_.", "..."]
    stems = safe_file_stems(names)
    assert stems == {".hidden": "hidden", "-rf": "rf", "a.": "a", "._-x-_.": "x", "...": "finding"}
    assert not any(s.startswith((".", "-")) or s.endswith(".") for s in stems.values())
