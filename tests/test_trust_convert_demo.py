"""Issue 11, cases 14 (convert: say what a bad source file is, check sizes before allocating,
shape errors in words) and 15 (demo: size and aspect limits for every format, DEMO-data notice)."""

import collections
import pickle
import zipfile
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer
from transformers import AutoModelForImageClassification

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.convert import convert_checkpoint

# --- case 14: convert ------------------------------------------------------------------------


def timm_classifier() -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=1, mlp_ratio=2.0,
        qkv_bias=True, global_pool="avg", norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_classes=3,
    )  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def test_text_file_is_called_text_not_a_pickle_risk(tmp_path):
    source = tmp_path / "vit-s_CXR_0.3M_mae.pth"
    source.write_text("<Error><Code>AccessDenied</Code></Error>\nplease log in\n")
    with pytest.raises(ValueError) as info:
        convert_checkpoint(source, tmp_path / "out")
    message = str(info.value)
    assert "not a PyTorch or safetensors checkpoint: looks like text" in message, message
    assert str(source) in message and "unpickling" not in message
    with pytest.raises(SystemExit, match="looks like text"):  # the CLI: a sentence, no traceback
        cli(["convert", str(source), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["weights.SAFETENSORS", "weights.pth", "weights"])
def test_safetensors_is_recognised_by_content_whatever_the_suffix(tmp_path, name):
    reference = timm_classifier()
    source = tmp_path / name
    save_file(state_of(reference), source)
    convert_checkpoint(source, tmp_path / "out", labels="A,B,C")
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x), atol=1e-4, rtol=0)


def test_zip_checkpoint_is_recognised_by_content(tmp_path):
    reference = timm_classifier()
    source = tmp_path / "weights.safetensors"  # a torch.save zip wearing the wrong suffix
    torch.save({"model": reference.state_dict()}, source)
    convert_checkpoint(source, tmp_path / "out", labels="A,B,C")
    assert (tmp_path / "out" / "model.safetensors").is_file()


class _Storage:
    """Stands in for a torch storage while writing a hand-made checkpoint pickle."""

    def __init__(self, numel: int) -> None:
        self.numel = numel


class _Tensor:
    def __init__(self, numel: int) -> None:
        self.storage = _Storage(numel)

    def __reduce__(self):
        size = self.storage.numel
        args = (self.storage, 0, (size,), (1,), False, collections.OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):  # what torch.save writes for a float32 storage
            return ("storage", torch.FloatStorage, "0", "cpu", obj.numel)
        return None


def hostile_pth(path, numel: int) -> None:
    """A real torch.save archive whose pickle claims ``numel`` float32 values for a tiny storage."""
    torch.save({"pos_embed": torch.zeros(4)}, path)
    with zipfile.ZipFile(path) as real:
        entries = [(info, real.read(info)) for info in real.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                buffer = __import__("io").BytesIO()
                _Pickler(buffer, protocol=2).dump({"pos_embed": _Tensor(numel)})
                data = buffer.getvalue()
            out.writestr(info.filename, data)


def hostile_legacy_pth(path, numel: int) -> None:
    """The pre-zip torch.save format (storages allocated as the pickle is read), same claim."""
    torch.save({"pos_embed": torch.zeros(4)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    honest = b"K\x04N"  # BININT1 4, NONE: the storage's element count in its persistent id
    assert data.count(honest) == 1
    path.write_bytes(data.replace(honest, b"\x8a\x05" + numel.to_bytes(5, "little") + b"N"))


MAKERS = {"zip": hostile_pth, "legacy": hostile_legacy_pth}


@pytest.mark.parametrize("layout", sorted(MAKERS))
def test_hand_made_checkpoints_load_when_honest(tmp_path, layout):
    """The fixtures are faithful torch files: with an honest count torch loads them."""
    MAKERS[layout](tmp_path / "honest.pth", 4)
    assert torch.load(tmp_path / "honest.pth", weights_only=True)["pos_embed"].shape == (4,)


@pytest.mark.parametrize("layout", sorted(MAKERS))
def test_pth_claiming_terabytes_is_refused_before_allocating(tmp_path, layout):
    source = tmp_path / "small.pth"
    MAKERS[layout](source, 300_000_000_000)  # 1.2 TB of float32
    assert source.stat().st_size < 10_000
    with pytest.raises(ValueError) as info:
        convert_checkpoint(source, tmp_path / "out")
    message = str(info.value)
    assert "1.2 TB" in message and "refused before allocating" in message, message
    assert str(source) in message


def test_safetensors_claiming_more_than_it_holds_is_refused(tmp_path):
    source = tmp_path / "cut.safetensors"
    save_file(state_of(timm_classifier()), source)
    source.write_bytes(source.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="truncated or corrupt file; refused before allocating"):
        convert_checkpoint(source, tmp_path / "out", labels="A,B,C")


def test_wrong_tensor_shape_is_a_sentence_naming_key_and_shapes(tmp_path):
    state = state_of(timm_classifier())
    state["blocks.1.mlp.fc1.weight"] = torch.zeros(100, 64)  # the architecture says (128, 64)
    save_file(state, tmp_path / "odd.safetensors")
    with pytest.raises(ValueError) as info:
        convert_checkpoint(tmp_path / "odd.safetensors", tmp_path / "out", labels="A,B,C")
    message = str(info.value)
    assert "blocks.1.mlp.fc1.weight: expected shape (128, 64), found (100, 64)" in message, message
    assert "size mismatch" not in message and "odd.safetensors" in message


def test_fused_qkv_of_the_wrong_width_names_the_source_key(tmp_path):
    state = state_of(timm_classifier())
    state["blocks.0.attn.qkv.weight"] = torch.zeros(3 * 60, 64)
    save_file(state, tmp_path / "qkv.safetensors")
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv\.weight \(its q_proj part\): "
                       r"expected shape \(64, 64\), found \(60, 64\)"):  # fmt: skip
        convert_checkpoint(tmp_path / "qkv.safetensors", tmp_path / "out", labels="A,B,C")


# --- case 15: demo ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_dirs(tmp_path_factory):
    from hf_cxr_mae import (
        CXRMAEConfig,
        CXRMAEForPreTraining,
        CXRViTForImageClassification,
        build_image_processor,
    )
    from hf_cxr_mae.hub import CardData, write_card

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
    from hf_cxr_mae.demo_app import Analyzer

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
    from hf_cxr_mae.demo_app import Analyzer, build_demo

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
