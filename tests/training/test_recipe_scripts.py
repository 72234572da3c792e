"""The recipe scripts run as plain files: no script is named like an installed module (``python
recipes/X.py`` puts ``recipes/`` first on ``sys.path``), none needs path tricks, and each prints
its help."""

import importlib.util
import sys

import pytest
from conftest import REPO_ROOT

RECIPES = REPO_ROOT / "recipes"


SCRIPTS = sorted(RECIPES.glob("*.py"))


def test_no_recipe_is_named_like_an_installed_module():
    assert SCRIPTS
    shadowed = [
        script.name
        for script in SCRIPTS
        if script.stem in sys.stdlib_module_names or importlib.util.find_spec(script.stem)
    ]
    assert not shadowed, f"{shadowed} would shadow the module of that name"


def test_recipes_import_the_installed_package_without_path_tricks():
    tricks = [script.name for script in SCRIPTS if "sys.path" in script.read_text()]
    assert not tricks, tricks


@pytest.mark.parametrize("recipe_name", ["pretrain", "finetune", "linprobe", "evaluate_model"])
def test_every_recipe_prints_its_help(recipe_name, capsys):
    """argparse formats help with %: a bare '95%' in a help string crashed `--help`."""
    from recipe_utils import recipe

    with pytest.raises(SystemExit) as exit_info:
        recipe(recipe_name).main(["--help"])
    assert exit_info.value.code == 0
    assert "--output_dir" in capsys.readouterr().out


@pytest.mark.parametrize("recipe_name", ["finetune", "evaluate_model"])
def test_a_bad_argument_ends_the_script_in_one_line(recipe_name, tmp_path):
    """Run as a script (what ``accelerate launch`` does), a refused argument or option is one
    line naming it and the script, not a traceback."""
    import os
    import subprocess

    argv = [sys.executable, f"recipes/{recipe_name}.py", "--dataset", "nih14", "--data_dir",
            str(tmp_path), "--option", "image_dir=images", "--output_dir", str(tmp_path / "o")]  # fmt: skip
    done = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"{recipe_name}.py: --option was removed: pass each dataset option as a flag, --image_dir images"
    )
