"""The examples run end to end: the quickstart pre-trains, fine-tunes and loads its models with
plain transformers."""

import importlib.util

from conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def test_quickstart_example_runs_end_to_end(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("quickstart", EXAMPLES / "quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    quickstart.main(["--output_dir", str(tmp_path), "--steps", "3"])
    out = capsys.readouterr().out
    assert "AutoModel loads it as ViTMAEModel" in out and "pipeline scores" in out
    assert (tmp_path / "mae" / "config.json").is_file()
    assert (tmp_path / "classifier" / "preprocessor_config.json").is_file()
