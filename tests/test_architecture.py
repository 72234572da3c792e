"""The import rules of the package, read from the source with ``ast``.

* Only the ``training`` package and the CLI import ``hf_cxr_mae.training``: serving (predict, the
  demo, reports, inference) and the models, processing and data never go through training.
* ``hf_cxr_mae.data`` imports no model module: ``modeling`` and ``attention`` hold torch model
  code. ``configuration`` is allowed: it holds plain ``PretrainedConfig`` subclasses (no torch
  module, no weights), which is what the data room needs to read a model's image settings; the
  test below checks that it stays free of torch.
* The library never imports the ``recipes`` scripts.
* Folders are layers: ``serving`` (predict, prediction files, inference, ONNX, export, demo)
  imports neither ``evaluation`` nor ``training``; ``evaluation`` (reports, compare, external
  validation) may use serving; the package's top-level modules, ``data`` and ``metrics`` import
  neither of the two (only ``training`` and the CLI sit above them).
* Modules that moved into a folder keep their old import path, with a DeprecationWarning.
* ONNX serving stays light: ``onnx_runtime`` imports neither torch nor transformers (not even in
  a function), of the package only the X-ray reader and the numpy probabilities, and neither the
  package's nor ``data``'s ``__init__`` imports a submodule when it runs (their names load
  lazily); ``tests/serving/test_onnx_runtime.py`` checks the result in a fresh interpreter.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hf_cxr_mae"
MODEL_MODULES = {"hf_cxr_mae.modeling", "hf_cxr_mae.attention"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (top level or inside functions), as absolute names;
    ``from . import x`` counts as importing ``package.x``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def modules() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def hits(imported: set[str], prefix: str) -> set[str]:
    return {i for i in imported if i == prefix or i.startswith(prefix + ".")}


def test_the_walker_sees_relative_and_nested_imports():
    """The checks below would pass vacuously if the walker missed imports."""
    found = modules()
    assert "hf_cxr_mae.configuration" in found["hf_cxr_mae.modeling"]
    assert hits(found["hf_cxr_mae.cli.evaluate"], "hf_cxr_mae.training")  # a function-level import
    assert len(found) > 20


def test_only_training_and_the_cli_import_training():
    bad = {
        name: sorted(hits(imported, "hf_cxr_mae.training"))
        for name, imported in modules().items()
        if not (name == "hf_cxr_mae.training" or name.startswith("hf_cxr_mae.training."))
        and not (name == "hf_cxr_mae.cli" or name.startswith("hf_cxr_mae.cli."))
        and hits(imported, "hf_cxr_mae.training")
    }
    assert not bad, f"outside training and the CLI, these import hf_cxr_mae.training: {bad}"


def test_data_imports_no_model_module():
    bad = {
        name: sorted(set().union(*(hits(imported, m) for m in MODEL_MODULES)))
        for name, imported in modules().items()
        if name.startswith("hf_cxr_mae.data") and any(hits(imported, m) for m in MODEL_MODULES)
    }
    assert not bad, f"the data package imports model modules: {bad}"


def test_configuration_holds_no_torch_code():
    """Why data may import configuration: it is config classes only, no torch."""
    imported = modules()["hf_cxr_mae.configuration"]
    assert not hits(imported, "torch") and not MODEL_MODULES & imported


def test_the_library_never_imports_recipes():
    bad = {name: sorted(hits(i, "recipes")) for name, i in modules().items() if hits(i, "recipes")}
    assert not bad, f"the library imports the recipes: {bad}"


def test_onnx_serving_imports_neither_torch_nor_transformers():
    imported = modules()["hf_cxr_mae.serving.onnx_runtime"]
    assert not hits(imported, "torch") and not hits(imported, "transformers"), sorted(imported)
    light = (
        "hf_cxr_mae.data.images",
        "hf_cxr_mae.metrics.classification",
        "hf_cxr_mae.extras",
        "hf_cxr_mae.serving.model_checks",
    )
    ours = {i for i in hits(imported, "hf_cxr_mae") if not i.startswith(light)}
    assert not ours, f"onnx_runtime imports {sorted(ours)}; only {light} are light"
    for init in (PACKAGE / "__init__.py", PACKAGE / "data" / "__init__.py", PACKAGE / "serving" / "__init__.py"):
        eager = [  # top-level imports of a package __init__, outside ``if TYPE_CHECKING:``
            ast.unparse(node)
            for node in ast.parse(init.read_text()).body
            if isinstance(node, ast.ImportFrom)
            and (node.level or (node.module or "").startswith("hf_cxr_mae"))
            and not (node.module or "").endswith("_lazy")
        ]
        assert not eager, f"{init} imports submodules when it runs: {eager}"


def _outside(name: str, *packages: str) -> bool:
    return not any(name == p or name.startswith(p + ".") for p in packages)


def test_serving_imports_neither_evaluation_nor_training():
    bad = {
        name: sorted(hits(imported, "hf_cxr_mae.evaluation") | hits(imported, "hf_cxr_mae.training"))
        for name, imported in modules().items()
        if name.startswith("hf_cxr_mae.serving")
        and (hits(imported, "hf_cxr_mae.evaluation") or hits(imported, "hf_cxr_mae.training"))
    }
    assert not bad, f"serving modules import evaluation or training: {bad}"


def test_only_the_layers_above_import_serving_and_evaluation():
    above = ("hf_cxr_mae.serving", "hf_cxr_mae.evaluation", "hf_cxr_mae.training", "hf_cxr_mae.cli")
    found = modules()
    bad = {
        name: sorted(hits(imported, "hf_cxr_mae.serving") | hits(imported, "hf_cxr_mae.evaluation"))
        for name, imported in found.items()
        if _outside(name, *above)
        and (hits(imported, "hf_cxr_mae.serving") or hits(imported, "hf_cxr_mae.evaluation"))
    }
    assert not bad, f"models, data, metrics or top-level modules import serving/evaluation: {bad}"
    # The rule has teeth: the layers above do import them.
    assert hits(found["hf_cxr_mae.evaluation.compare"], "hf_cxr_mae.serving")


def test_moved_modules_import_from_their_old_path_with_a_warning():
    import importlib
    import sys
    import warnings

    import hf_cxr_mae

    assert hf_cxr_mae._MOVED, "no moved modules listed"
    for old, new in hf_cxr_mae._MOVED.items():
        old_name, new_name = f"hf_cxr_mae.{old}", f"hf_cxr_mae.{new}"
        assert (PACKAGE / (new.replace(".", "/") + ".py")).is_file(), new_name
        sys.modules.pop(old_name, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old_name)
        assert module is importlib.import_module(new_name), old_name
        moved = [w for w in caught if issubclass(w.category, DeprecationWarning)]
        assert moved and new_name in str(moved[0].message), (old_name, [str(w.message) for w in caught])


def test_no_module_is_over_400_lines():
    """Small rooms: a module past 400 lines holds more than one thing (split it by what it holds)."""
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert len(sizes) > 20
    big = {name: n for name, n in sizes.items() if n > 400}
    assert not big, f"modules over 400 lines: {big}"
