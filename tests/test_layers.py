"""The package's layers, written as data, and a test that no module imports a higher layer.

A module may import its own layer and every layer below it, never one above. Every ``import`` and
``from ... import`` statement of every module is read with :mod:`ast` -- including imports inside
functions (lazy imports are still dependencies) and under ``if TYPE_CHECKING:`` (an annotation that
names a higher layer's class is a dependency of the design too). CONTRIBUTING.md shows the same
table; keep the two in step.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "coremtl_lite"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: lowest first; each entry is a top-level module or subpackage of coremtl_lite
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # plain building blocks that import no other part of the package except each other
    ("core", ("protocols", "config", "runtime", "shading", "theory", "metrics", "assignments")),
    # the datasets: the sample dict and task_info contract; know nothing of models or training
    ("data", ("data",)),
    # what one training step is made of; a Task binds a task's loss (losses) to its meter (metrics)
    ("components", ("tasks", "losses", "models", "methods")),
    # the one training loop; never names a method
    ("train", ("train",)),
    # whole runs: recipes, train-and-evaluate, checkpoint evaluation, the HTML report
    ("experiments", ("experiments", "evaluate", "report")),
    # analysis of trained models and the benchmark suites, and their plots
    ("analysis", ("diagnostics", "bench", "viz")),
    # what a user drives: the command line and the notebook widgets
    ("interface", ("cli", "widgets")),
]

LEVEL = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def _unit(module: str) -> str | None:
    """The layer unit of a dotted module name (``coremtl_lite.data.scenes`` -> ``data``), None outside."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import statement of ``path`` (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            if mod == PACKAGE:  # ``from coremtl_lite import data``: the names are modules
                out += [(node.lineno, f"{PACKAGE}.{alias.name}") for alias in node.names]
    return out


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_every_module_is_in_a_layer():
    units = {_unit(_module_name(p)) for p in _modules()} - {""}
    missing = sorted(u for u in units if u not in LEVEL)
    assert not missing, (
        f"modules or subpackages of {PACKAGE} in no layer: {missing}; add each to LAYERS in "
        "tests/test_layers.py and to the table in CONTRIBUTING.md"
    )


def test_no_module_imports_a_higher_layer():
    errors = []
    for path in _modules():
        own = _unit(_module_name(path))
        if own == "":  # the package's __init__ re-exports the public API of the lowest layers only
            own = "config"
        for line, mod in _imports(path):
            target = _unit(mod)
            if target in (None, "") or target not in LEVEL or own not in LEVEL:
                continue
            if LEVEL[target] > LEVEL[own]:
                errors.append(
                    f"{path.relative_to(ROOT.parent)}:{line}: `{mod}` ({LAYERS[LEVEL[target]][0]}) is "
                    f"imported by the lower layer {LAYERS[LEVEL[own]][0]}"
                )
    assert not errors, "a lower layer imports a higher one:\n" + "\n".join(errors)


def test_the_checker_sees_a_violation(tmp_path):
    """The parser resolves absolute, relative and lazy imports (so the test above can fail)."""
    pkg = tmp_path / PACKAGE / "data"
    pkg.mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    src = (
        "from coremtl_lite.train import Trainer\nfrom ..models import heads\n"
        "def f():\n    import coremtl_lite.cli\n    from coremtl_lite import widgets\n"
    )
    (pkg / "bad.py").write_text(src)
    global ROOT
    saved, ROOT = ROOT, tmp_path / PACKAGE
    try:
        found = [m for _, m in _imports(pkg / "bad.py")]
    finally:
        ROOT = saved
    assert found == [
        "coremtl_lite.train",
        "coremtl_lite.models",
        "coremtl_lite.cli",
        PACKAGE,
        "coremtl_lite.widgets",
    ]
    assert [LEVEL[_unit(m)] > LEVEL["data"] for m in found if _unit(m)] == [True, True, True, True]
