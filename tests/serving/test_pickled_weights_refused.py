"""Models load from safetensors only (DESIGN.md, "Safe loading"): a model folder whose weights
exist only as ``pytorch_model.bin`` (a pickle) is refused, in a sentence naming the file, by
every command that loads a model, instead of being unpickled."""

import numpy as np
import pytest
import torch
from helpers import save_classifier, tiny_classifier
from PIL import Image

from hf_cxr_mae.cli import main as cli
from hf_cxr_mae.serving.predict import load_classifier

LABELS = ["Cardiomegaly", "Effusion"]
REFUSED = r"holds its weights only as pytorch_model\.bin .*loads safetensors only"


@pytest.fixture(scope="module")
def pickled_model(tmp_path_factory):
    """A classifier folder as an old training run leaves it: config, processor, a pickle."""
    model = tiny_classifier(LABELS)
    folder = save_classifier(model, tmp_path_factory.mktemp("pickled"))
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "xray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(path)
    return path


def test_load_classifier_refuses_pickled_weights(pickled_model):
    with pytest.raises(ValueError, match=REFUSED) as info:
        load_classifier(str(pickled_model))
    assert str(pickled_model) in str(info.value)


def test_predict_refuses_pickled_weights(pickled_model, image):
    with pytest.raises(SystemExit, match=f"predict: .*{REFUSED}"):
        cli(["predict", "--model", str(pickled_model), str(image)])


def test_export_refuses_pickled_weights(pickled_model, tmp_path):
    out = tmp_path / "exported"
    with pytest.raises(SystemExit, match=f"export: .*{REFUSED}"):
        cli(["export", str(pickled_model), str(out)])
    assert not out.exists()


def test_evaluate_refuses_pickled_weights(pickled_model, tmp_path):
    out = tmp_path / "report"
    with pytest.raises(SystemExit, match=f"evaluate: .*{REFUSED}"):
        cli(["evaluate", "--model_name_or_path", str(pickled_model), "--output_dir", str(out)])
    assert not (out / "metrics.json").exists()


def test_compare_refuses_pickled_weights_before_reading_data(pickled_model, tmp_path):
    """Refused before the dataset is read: the data folder here does not even exist."""
    out = tmp_path / "compare"
    with pytest.raises(SystemExit, match=f"compare: .*{REFUSED}"):
        cli(["compare", str(pickled_model), str(pickled_model), "--dataset", "imagefolder",
             "--data_dir", str(tmp_path / "absent"), "--output_dir", str(out)])  # fmt: skip
    assert not out.exists()


def test_reconstruct_refuses_a_pickled_mae(image, tmp_path):
    from hf_cxr_mae import CXRMAEConfig, CXRMAEForPreTraining

    folder = tmp_path / "mae"
    mae = CXRMAEForPreTraining(CXRMAEConfig.from_preset("vit-test-patch8-dec32d1b"))
    mae.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(mae.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(SystemExit, match=REFUSED):
        cli(["reconstruct", "--model", str(folder), str(image), "--out", str(tmp_path / "r.png")])
    assert not (tmp_path / "r.png").exists()


@pytest.mark.parametrize("cut", ["empty", "truncated"])
def test_damaged_safetensors_are_named_not_a_traceback(tmp_path, cut):
    """An empty or truncated model.safetensors (a copy cut short) gave safetensors' bare
    SafetensorError traceback in predict, export, evaluate and compare; every loader goes
    through require_safetensors, which now names the file as damaged."""
    folder = save_classifier(tiny_classifier(["Atelectasis", "Effusion"]), tmp_path / "model")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"" if cut == "empty" else data[: len(data) - 1000])
    expected = (
        f"{weights}: a safetensors file truncated to 0 bytes."
        if cut == "empty"
        else f"{weights}: tensor "
    )
    with pytest.raises(ValueError) as refused:
        load_classifier(str(folder))
    assert str(refused.value).startswith(expected)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    export = ["export", str(folder), str(tmp_path / "out")]
    for command in (["predict", "--model", str(folder), str(image)], export):
        with pytest.raises(SystemExit) as stopped:
            cli(command)
        assert str(stopped.value.code).startswith(f"{command[0]}: {expected}")
