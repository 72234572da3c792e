"""``load_cxr_dataset``, the one entry point for every source: an unknown source, option or
uncertainty policy and a missing folder are named."""

import pytest

from hf_cxr_mae.data import load_cxr_dataset


def test_unknown_source_and_option():
    with pytest.raises(ValueError, match="Unknown dataset 'nih15'"):
        load_cxr_dataset("nih15", ".")
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['uncertainty'\].*valid"):
        load_cxr_dataset("nih14", ".", uncertainty="ones")


def test_bad_policy_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="Unknown uncertainty policy 'maybe'"):
        load_cxr_dataset("chexpert", tmp_path, uncertainty="maybe")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cxr_dataset("nih14", tmp_path / "nowhere")
