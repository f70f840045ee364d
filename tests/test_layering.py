"""The package's shape: who may import whom, and no import cycles (TYPE_CHECKING imports count).

Read from the source with `ast`, so it checks every import a module names, at module
level, inside functions and under `if TYPE_CHECKING:` alike.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dpgviz"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """dpgviz modules `path` imports (a `from pkg import name` counts pkg.name when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dpgviz"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dpgviz") and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    # A package's __init__ importing its own submodules is how packages work, not a cycle of jobs.
    edges = {m: {d for d in deps if not (d.startswith(m + ".") or m.startswith(d + "."))} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("layer", ["dpgviz.core", "dpgviz.engine", "dpgviz.store"])
def test_lower_layers_import_no_gui_export_or_cli(graph: dict[str, set[str]], layer: str) -> None:
    forbidden = ("dpgviz.gui", "dpgviz.export", "dpgviz.cli", "dpgviz.bench")
    bad = {
        m: sorted(d for d in deps if d.startswith(forbidden))
        for m, deps in graph.items()
        if (m == layer or m.startswith(layer + "."))
    }
    assert not {m: d for m, d in bad.items() if d}


def test_benchmarks_live_only_in_the_bench_package() -> None:
    stray = [p for p in PACKAGE.rglob("*bench*.py") if "bench" not in p.relative_to(PACKAGE).parts[:-1]]
    assert not stray


def test_only_the_app_imports_the_window_and_it_imports_the_workspace(graph: dict[str, set[str]]) -> None:
    assert "dpgviz.gui.workspace" in graph["dpgviz.gui.app"]
    importers = {m for m, deps in graph.items() if "dpgviz.gui.app" in deps}
    assert importers <= {"dpgviz.cli", "dpgviz.bench.gui", "dpgviz.bench.scrub"}, importers  # entry points


def test_the_workspace_never_imports_dearpygui_or_torch() -> None:
    source = (PACKAGE / "gui" / "workspace.py").read_text(encoding="utf-8")
    names = {
        a.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import)
        for a in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not names & {"dearpygui", "torch"}
    engine = {
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dpgviz.engine")
    }
    assert not engine
