"""``hf-cxr-mae predict`` and ``reconstruct`` on files: PNG and DICOM (also without suffix),
heatmaps, unreadable files named, junk skipped, a file named twice predicted once, an encoder
without head refused, and the four reconstruction panels."""

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_not_blank, random_png
from PIL import Image

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.data import NIH14_LABELS


def test_predict_png_dicom_heatmaps_and_bad_files(nih_models, shared_data, tmp_path, capsys):
    png = shared_data / "nih-cxr14-sample" / "images" / "00000075_000.png"
    wide = tmp_path / "wide.png"
    Image.open(png).convert("L").crop((0, 60, 512, 420)).save(wide)  # 512 x 360, not square
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    dicom = shared_data / "dicom" / "siim-cr-chest-pa-monochrome2.dcm"
    with pytest.raises(SystemExit) as exit_info:
        cli(
            [
                "predict",
                "--model",
                str(nih_models["ft"]),
                str(png),
                str(dicom),
                str(wide),
                str(broken),
                "--json",
                "--heatmap",
                str(tmp_path / "hm"),
                "--heatmap_top",
                "2",
            ]
        )
    assert exit_info.value.code == 2  # some images failed, the rest were predicted
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [p["path"] for p in out["predictions"]] == [str(png), str(dicom), str(wide)]
    for row in out["predictions"]:
        assert list(row["probabilities"]) == NIH14_LABELS
        assert all(0 <= v <= 1 for v in row["probabilities"].values())
        assert len(row["heatmaps"]) == 2
    assert out["failures"][0]["path"] == str(broken) and "broken.png" in captured.err
    # The PNG's numbers are the saved model's sigmoids (plain transformers; predict runs bf16).
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_cxr_mae.data.images import read_xray

    model = AutoModelForImageClassification.from_pretrained(nih_models["ft"]).eval()
    inputs = AutoImageProcessor.from_pretrained(nih_models["ft"])(
        read_xray(png), return_tensors="pt"
    )
    with torch.no_grad():
        expected = torch.sigmoid(model(**inputs).logits)[0].tolist()
    shown = [out["predictions"][0]["probabilities"][n] for n in NIH14_LABELS]
    np.testing.assert_allclose(shown, expected, atol=5e-3, rtol=0)
    assert max(expected) - min(expected) > 0.2  # far apart: a mix-up could not hide in 5e-3
    for row, source in zip(out["predictions"], [png, dicom, wide], strict=True):
        with Image.open(row["heatmaps"][0]) as heat:
            w, h = heat.size
        src_w, src_h = (1024, 1024) if source == dicom else Image.open(source).size
        assert abs(w / h - src_w / src_h) < 0.01
    assert_not_blank(out["predictions"][2]["heatmaps"][0])


def test_predict_refuses_an_encoder_without_head(nih_models, shared_data):
    png = shared_data / "nih-cxr14-sample" / "images" / "00000075_000.png"
    # A message from the CLI (SystemExit), not a traceback.
    with pytest.raises(SystemExit, match=r"predict: .*without a classification head.*Fine-tune"):
        cli(["predict", "--model", str(nih_models["mae"]), str(png)])


def test_reconstruct_writes_four_panels(nih_models, shared_data, tmp_path):
    images = sorted((shared_data / "nih-cxr14-sample" / "images").glob("*.png"))[:2]
    out = tmp_path / "rec.png"
    cli(
        [
            "reconstruct",
            "--model",
            str(nih_models["mae"]),
            *map(str, images),
            "--mask-ratio",
            "0.9",
            "--out",
            str(out),
        ]
    )
    with Image.open(out) as figure:
        w, h = figure.size
    panel = 64 * 4  # the tiny model's 64 px, shown at 4x
    assert w == 4 * panel + 3 * 2 and h == 14 + 2 * (panel + 2)
    assert_not_blank(out)
    # Refusals are one line (SystemExit), not a traceback.
    with pytest.raises(SystemExit, match=r"reconstruct: --mask-ratio must be in \(0, 1\), got 1.0"):
        cli(
            [
                "reconstruct",
                "--model",
                str(nih_models["mae"]),
                str(images[0]),
                "--mask-ratio",
                "1.0",
            ]
        )
    with pytest.raises(SystemExit, match=r"reconstruct: .* is not a full MAE"):
        cli(["reconstruct", "--model", str(nih_models["ft"]), str(images[0])])


def test_reconstruct_masks_at_the_mae_s_own_ratio_by_default(nih_models, shared_data, monkeypatch):
    import hf_cxr_mae.figures as figures
    from hf_cxr_mae.serving.predict import reconstruct_figure

    image = sorted((shared_data / "nih-cxr14-sample" / "images").glob("*.png"))[0]
    own = json.loads((nih_models["mae"] / "config.json").read_text())["mask_ratio"]
    seen = []
    monkeypatch.setattr(
        figures, "reconstruction_grid", lambda model, *a, **k: seen.append(model.config.mask_ratio)
    )
    reconstruct_figure(str(nih_models["mae"]), [image])
    reconstruct_figure(str(nih_models["mae"]), [image], 0.55)
    assert seen == [own, 0.55]


def test_a_file_named_twice_is_predicted_once(tmp_path):
    from PIL import Image

    from hf_cxr_mae.serving.predict import collect_images

    for name in "abc":
        Image.new("L", (8, 8)).save(tmp_path / f"{name}.png")
    named = collect_images([tmp_path, tmp_path / "b.png", tmp_path / "." / "a.png"])
    assert [p.name for p in named] == ["a.png", "b.png", "c.png"]


def _part10_dicom(path: Path, pixels: np.ndarray) -> Path:
    """An 8-bit MONOCHROME2 DICOM file (preamble, 'DICM', file meta), made with pydicom."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_predict_reads_a_dicom_without_suffix_and_skips_junk_but_names_the_rest(tmp_path, caplog):
    from hf_cxr_mae.data.images import read_xray
    from hf_cxr_mae.serving.predict import collect_images

    pixels = np.random.default_rng(1).integers(0, 256, (12, 10), dtype=np.uint8)
    dicom = _part10_dicom(tmp_path / "IM0001", pixels)  # as PACS exports name them
    np.testing.assert_array_equal(np.asarray(read_xray(dicom)), pixels)
    with dicom.open("rb") as f:  # a file object too (an upload)
        np.testing.assert_array_equal(np.asarray(read_xray(f)), pixels)
    # The demo sizes it from its header (megapixel check before decoding), as a .dcm.
    from hf_cxr_mae.serving.demo import header_size

    assert header_size(dicom) == (10, 12)
    random_png(tmp_path / "a.png", 0)
    random_png(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.png", 0)
    (tmp_path / "._a.png").write_bytes(b"\0\5\26\7")  # AppleDouble: not an image
    Image.new("L", (8, 8)).save(tmp_path / "scan.tif")
    with caplog.at_level(logging.WARNING, logger="hf_cxr_mae"):
        found = collect_images([tmp_path])
    assert found == sorted([tmp_path / "a.png", dicom])
    assert "scan.tif" in caplog.text and "IM0001" not in caplog.text


def test_a_model_naming_two_outputs_alike_is_refused_at_load(tmp_path):
    """A config.json whose id2label gives one name to two outputs used to load: results are
    keyed by name, so the CSV's two columns both held the later output's probability and the
    JSON dropped a finding. predict (library and CLI) and the demo refuse it, naming both."""
    from helpers import save_classifier, tiny_classifier

    from hf_cxr_mae.serving.demo import Analyzer
    from hf_cxr_mae.serving.predict import load_model

    labels = ["Atelectasis", "Effusion", "Mass", "Effusion"]
    folder = save_classifier(tiny_classifier(labels), tmp_path / "model")
    expected = f"{folder}: config.json's id2label names several outputs alike ('Effusion' at 1, 3)"
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_model(str(folder))
    with pytest.raises(ValueError, match=re.escape(expected)):
        Analyzer(str(folder))
    image, output = random_png(tmp_path / "x.png", seed=0), tmp_path / "out.csv"
    with pytest.raises(SystemExit) as refused:
        cli(["predict", "--model", str(folder), str(image), "--output", str(output)])
    assert str(refused.value.code).startswith(f"predict: {expected}")
    assert not output.exists()
