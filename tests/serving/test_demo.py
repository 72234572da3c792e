"""The Gradio demo's analysis (``hf_cxr_mae.serving.demo``): size and aspect limits for every format
checked before decoding, flagged findings marked, and a model trained on DEMO data says so next
to its probabilities."""

import numpy as np
import pytest
from PIL import Image

from hf_cxr_mae.serving.predict import predict_files


@pytest.fixture(scope="module")
def classifier_dirs(tmp_path_factory):
    from hf_cxr_mae import (
        CXRMAEConfig,
        CXRMAEForPreTraining,
        CXRViTForImageClassification,
        build_image_processor,
    )
    from hf_cxr_mae.model_card import CardData, write_card

    root = tmp_path_factory.mktemp("models")
    mae = CXRMAEForPreTraining(CXRMAEConfig.from_preset("vit-test-patch8-dec32d1b"))
    classifier = CXRViTForImageClassification.from_checkpoint(mae, id2label=["A", "B"])
    dirs = {}
    for name, datasets in [("demo", ["demo"]), ("real", ["nih14"]), ("nocard", None)]:
        folder = root / name
        classifier.save_pretrained(folder)
        build_image_processor(classifier.config).save_pretrained(folder)
        if datasets is not None:
            write_card(
                folder,
                CardData(
                    kind="classifier",
                    config=classifier.config,
                    model_name=name,
                    datasets=datasets,
                ),
            )
        dirs[name] = folder
    return dirs


@pytest.fixture(scope="module")
def analyzer(classifier_dirs):
    from hf_cxr_mae.serving.demo import Analyzer

    return Analyzer(str(classifier_dirs["real"]))


def test_extreme_aspect_png_is_refused_at_once(analyzer, tmp_path):
    import time

    path = tmp_path / "line.png"
    Image.new("L", (120_000, 1)).save(path, optimize=True)
    assert path.stat().st_size < 2_000
    start = time.perf_counter()
    scores, heat, recon, status = analyzer.analyze(str(path))
    assert time.perf_counter() - start < 2
    assert scores is None and heat is None and recon is None
    assert "line.png" in status and "120000x1" in status and "aspect" in status, status


def write_dicom(path, rows: int, columns: int, with_pixels: bool = True) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1", generate_uid()
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if with_pixels:
        pixels = np.random.default_rng(0).integers(0, 256, (rows, columns), np.uint8)
        ds.PixelData = pixels.tobytes()
    else:  # a header that claims a huge image: only the header may be read
        ds.PixelData = b"\0\0"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def test_huge_dicom_is_refused_from_its_header(analyzer, tmp_path):
    path = tmp_path / "huge.dcm"
    write_dicom(path, 9000, 9000, with_pixels=False)
    scores, _, _, status = analyzer.analyze(str(path))
    assert scores is None and "9000x9000" in status and "megapixels" in status, status


def test_extreme_aspect_dicom_is_refused(analyzer, tmp_path):
    path = tmp_path / "strip.dcm"
    write_dicom(path, 2, 1000)
    scores, _, _, status = analyzer.analyze(str(path))
    assert scores is None and "1000x2" in status and "aspect" in status, status


def test_normal_dicom_and_png_are_analysed(analyzer, tmp_path):
    write_dicom(tmp_path / "ok.dcm", 96, 80)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 90), np.uint8)).save(
        tmp_path / "ok.png"
    )
    for name, size in [("ok.dcm", "80x96"), ("ok.png", "90x70")]:
        scores, heat, _, status = analyzer.analyze(str(tmp_path / name))
        assert scores is not None and set(scores) == {"A", "B"} and heat is not None, status
        assert f"Image {size}" in status and "DEMO" not in status


def test_demo_trained_model_says_so_next_to_the_probabilities(classifier_dirs, tmp_path):
    from hf_cxr_mae.serving.demo import Analyzer, build_demo

    Image.fromarray(np.full((64, 64), 120, np.uint8)).save(tmp_path / "x.png")
    demo = Analyzer(str(classifier_dirs["demo"]))
    assert demo.demo_data
    _, _, _, status = demo.analyze(str(tmp_path / "x.png"))
    assert "DEMO" in status and "synthetic" in status, status
    for name in ("real", "nocard"):
        assert not Analyzer(str(classifier_dirs[name])).demo_data, name
    import gradio as gr

    page = build_demo(str(classifier_dirs["demo"]))
    notes = [
        block.value
        for block in page.blocks.values()
        if isinstance(block, gr.Markdown) and "DEMO" in str(block.value)
    ]
    assert notes and "synthetic" in str(notes[0])
    # It sits in the column of the probabilities, right after them.
    findings = next(b for b in page.blocks.values() if isinstance(b, gr.Label))
    column = findings.parent
    children = column.children
    assert any(isinstance(c, gr.Markdown) and "DEMO" in str(c.value) for c in children)


def test_demo_marks_the_flagged_findings(flagged_classifier_dir, pngs_with_a_broken_one):
    from hf_cxr_mae.processing import flagged_findings
    from hf_cxr_mae.serving.demo import FLAG, Analyzer

    analyzer = Analyzer(str(flagged_classifier_dir))
    (result,), _ = predict_files(analyzer.model, pngs_with_a_broken_one[:1], fast=True)
    probs = result.probabilities
    # A just reaches its operating point, B just misses it (C has none).
    analyzer.model.config.operating_points = {
        "thresholds": {"A": probs["A"] - 0.01, "B": probs["B"] + 0.01, "C": None}
    }
    scores, heat, _, status = analyzer.analyze(str(pngs_with_a_broken_one[0]))
    flagged = flagged_findings(analyzer.model.config, probs)
    assert flagged == {"A": True, "B": False}
    shown = {name.removesuffix(f" {FLAG}"): name.endswith(FLAG) for name in scores}
    assert shown == {"A": True, "B": False, "C": False}
    assert "flagged (at or above the model's stored operating point)" in status
    assert heat is not None


def test_reconstruction_masks_at_the_mae_s_own_ratio(classifier_dirs, tmp_path, monkeypatch):
    # One rule for the mask ratio of a reconstruction: the MAE's own config value, which the
    # page's slider starts at; a ratio asked for once does not become the default.
    import hf_cxr_mae.figures as figures
    from hf_cxr_mae import CXRMAEConfig, CXRMAEForPreTraining
    from hf_cxr_mae.serving.demo import Analyzer

    mae = CXRMAEForPreTraining(CXRMAEConfig.from_preset("vit-test-patch8-dec32d1b", mask_ratio=0.6))
    mae.save_pretrained(tmp_path / "mae")
    seen = []
    monkeypatch.setattr(
        figures, "reconstruction_grid", lambda model, *a, **k: seen.append(model.config.mask_ratio)
    )
    analyzer = Analyzer(str(classifier_dirs["real"]), str(tmp_path / "mae"))
    assert analyzer.mask_ratio == 0.6
    image = Image.new("L", (64, 64), 128)
    analyzer.reconstruction(image, 0.8)
    analyzer.reconstruction(image)
    assert seen == [0.8, 0.6]
