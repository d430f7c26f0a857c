"""The layers of src/vestige, read from its own imports (docs/architecture.md): each layer imports
only the layers below it, the ground floor and the owners nothing but the ground floor, and only
the tasks and the front door import inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "vestige"
# bottom to top; a component is the first name below `vestige` (a package or a module)
LAYERS = (
    ("ground floor", {"errors", "step", "config", "io", "seeding", "distributed", "precision"}),
    ("owners", {"data", "models", "selectivity", "rundir", "tracking"}),
    ("training and reading runs", {"train", "results"}),
    ("analyses", {"analysis"}),
    ("reports", {"report"}),
    ("launchers", {"launch"}),
    ("tasks", {"tasks"}),
    ("front door", {"run", "preflight", "choices", "__init__"}),
)
LEVEL = {component: level for level, (_, names) in enumerate(LAYERS) for component in names}
FUNCTION_LEVEL_ALLOWED = {"tasks", "run", "preflight", "__init__"}
# floors whose components may import each other: the ground floor, the front door
SHARED_FLOORS = (LEVEL["errors"], LEVEL["run"])


def component(module: str) -> str:
    return module.split(".")[1]


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found.append((".".join(parts), path))
    return found


def vestige_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported vestige module, imported inside a function?) for every import of the file."""
    tree = ast.parse(path.read_text())
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside |= {id(child) for child in ast.walk(node) if child is not node}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(name, id(node) in inside) for name in names if name.startswith("vestige.")]
    return found


MODULES = modules()


def test_every_component_has_a_layer():
    assert {component(module) for module, _ in MODULES} <= set(LEVEL)


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_imports_run_downward_only(module, path):
    here = component(module)
    for imported, _ in vestige_imports(path):
        there = component(imported)
        if there == here or LEVEL[there] == LEVEL[here] in SHARED_FLOORS:
            continue
        assert LEVEL[there] < LEVEL[here], f"{module} imports {imported}, a layer up or level"
        if LEVEL[here] == LEVEL["rundir"]:  # an owner: nothing but the ground floor
            assert LEVEL[there] == 0, f"{module} imports {imported}: only the ground floor"
        if here == "train":
            assert there != "selectivity", f"{module} imports {imported}: the loop is blind to it"


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_only_tasks_and_the_front_door_import_inside_functions(module, path):
    if component(module) in FUNCTION_LEVEL_ALLOWED:
        return
    late = [name for name, in_function in vestige_imports(path) if in_function]
    assert not late, f"{module} imports {late} inside a function"
