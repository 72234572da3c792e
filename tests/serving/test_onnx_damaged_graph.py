"""An exported folder whose ``onnx/model.onnx`` is empty, cut short or not a graph at all (a copy
interrupted, a full disk during the export) is refused in a sentence naming the file and saying
to export again, by the runtime and by ``predict``, instead of an ONNX Runtime traceback."""

import re
import shutil

import numpy as np
import pytest
from helpers import save_classifier, tiny_classifier
from PIL import Image

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.serving.export import export_onnx
from hf_cxr_mae.serving.onnx_runtime import OnnxClassifier


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    source = save_classifier(tiny_classifier(["A", "B"]), tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("exported")
    export_onnx(source, out)
    return out


DAMAGE = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "not a graph": lambda data: b"<html>502 Bad Gateway</html>\n",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_graph_is_named_with_the_fix(exported, tmp_path, damage):
    folder = tmp_path / "export"
    shutil.copytree(exported, folder)
    graph = folder / "onnx" / "model.onnx"
    OnnxClassifier(folder)  # whole, it loads
    graph.write_bytes(DAMAGE[damage](graph.read_bytes()))
    size = graph.stat().st_size
    what = "is empty" if damage == "empty" else f"\\({size} bytes\\) is not a loadable ONNX graph"
    expected = f"{re.escape(str(graph))} {what}: truncated or corrupt .*Export it again"
    with pytest.raises(ValueError, match=expected):
        OnnxClassifier(folder)
    image = tmp_path / "xray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(image)
    with pytest.raises(SystemExit, match=f"predict: {expected}"):
        cli(["predict", "--model", str(folder), str(image)])
