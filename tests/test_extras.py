"""What a plain ``pip install -e .`` brings, and the one-line message of a command that needs
an extra: the README's main job must not depend on anything only an extra installs."""

from __future__ import annotations

import sys
from importlib.metadata import requires
from pathlib import Path

import pytest
from helpers import save_classifier, tiny_classifier
from packaging.requirements import Requirement

from hf_cxr_mae import cli
from hf_cxr_mae.extras import EXTRA_OF, MissingExtra, require


def _names(extra: str | None) -> set[str]:
    """The packages the installed hf-cxr-mae requires: core (``None``) or those of an extra."""
    found = set()
    for line in requires("hf-cxr-mae") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if (marker is None) if extra is None else (marker and marker.evaluate({"extra": extra})):
            found.add(requirement.name)
    return found


def test_what_every_run_reaches_is_a_core_dependency():
    """Fine-tuning writes its report figures (matplotlib) and every loader reads DICOM (pydicom,
    with the JPEG decoders): a plain install that lacked them crashed the README's main job after
    training, while CI installed the dev extra and stayed green."""
    core = _names(None)
    assert {"matplotlib", "pydicom", "pylibjpeg", "pylibjpeg-libjpeg"} <= core


def test_each_extra_named_in_messages_installs_that_module():
    """The message says ``pip install 'hf-cxr-mae[EXTRA]'``: that extra must bring the module."""
    for module, extra in EXTRA_OF.items():
        assert module in _names(extra), (module, extra)
        assert module in _names("dev"), f"the tests need {module}"


def _block(monkeypatch, *modules: str) -> None:
    """Make ``import module`` fail as if it were not installed."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    return save_classifier(tiny_classifier(["A", "B"]), tmp_path_factory.mktemp("model"))


@pytest.mark.parametrize("missing", ["onnx", "onnxscript", "onnxruntime"])
def test_export_without_the_onnx_extra_is_one_line(classifier_dir, tmp_path, monkeypatch, missing):
    """Each of the three is needed; the message comes before the model is loaded or anything is
    written."""
    _block(monkeypatch, missing)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["export", str(classifier_dir), str(tmp_path / "out")])
    assert str(exit_.value.code) == (
        f"export: Exporting to ONNX needs {missing}, which is not installed: "
        "pip install 'hf-cxr-mae[onnx]'"
    )
    assert not (tmp_path / "out").exists()


def test_onnx_serving_without_onnxruntime_names_the_extra(monkeypatch, tmp_path):
    from hf_cxr_mae.serving.onnx_runtime import session

    _block(monkeypatch, "onnxruntime")
    with pytest.raises(MissingExtra, match=r"pip install 'hf-cxr-mae\[onnx\]'"):
        session(tmp_path / "model.onnx")


def test_demo_without_gradio_is_one_line(classifier_dir, monkeypatch):
    _block(monkeypatch, "gradio")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--model", str(classifier_dir)])
    assert str(exit_.value.code) == (
        "demo: The demo needs gradio, which is not installed: pip install 'hf-cxr-mae[demo]'"
    )


def test_a_broken_import_inside_an_installed_extra_is_not_called_missing(monkeypatch):
    """An extra that is installed but fails on one of its own imports must show that failure,
    not send the user to reinstall what they have."""
    _block(monkeypatch, "onnxruntime.capi")
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.delitem(sys.modules, "onnxruntime.capi._pybind_state", raising=False)
    with pytest.raises(ImportError) as err:
        require("onnxruntime", "Running an ONNX export")
    assert not isinstance(err.value, MissingExtra)
