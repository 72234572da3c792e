"""The recipe scripts run as plain files: ``python recipes/X.py`` puts ``recipes/`` first on
``sys.path``, so a script named like a library would shadow it for the whole run."""

import importlib.util
import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
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
