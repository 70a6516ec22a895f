"""The package's shape: stage subpackages with empty ``__init__.py``, no import cycle,
and a one-way workflow layer (stages never import the planning code)."""

from __future__ import annotations

from pathlib import Path

from redi.sources import PACKAGE, direct_imports
from tests.conftest import ROOT

STAGES = ("data", "model", "train", "eval", "report")
SHARED = {"__init__", "cli", "distributed", "grading", "hub", "io", "provenance", "sources"}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module file -> the package modules it imports (package ``__init__`` files left out:
    importing a subpackage's module runs its empty ``__init__`` only)."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    return {f.relative_to(root).as_posix():
            {m for m in direct_imports(f, root) if not m.endswith("__init__.py")}
            for f in files if f.name != "__init__.py"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_package():
    graph = import_graph(ROOT)
    assert len(graph) > 40
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_find_cycle_sees_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / PACKAGE / "workflow"
    pkg.mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text("def check():\n    from redi.workflow import plan\n")
    (pkg / "plan.py").write_text("from redi.workflow import config\n")
    (pkg / "free.py").write_text("from redi.workflow import config\n")
    cycle = find_cycle(import_graph(tmp_path))
    assert cycle is not None
    assert set(cycle) == {"redi/workflow/config.py", "redi/workflow/plan.py"}


def test_subpackage_inits_are_empty():
    """A rule declares the modules its script imports: an ``__init__`` importing its
    siblings would make every rule depend on the whole subpackage."""
    inits = sorted((ROOT / PACKAGE).glob("*/__init__.py"))
    assert {p.parent.name for p in inits} == {*STAGES, "workflow"}
    assert all(p.read_text() == "" for p in inits)


def test_modules_live_in_a_stage_or_are_shared():
    top = {p.stem for p in (ROOT / PACKAGE).glob("*.py")}
    assert top == SHARED


def test_stages_never_import_the_workflow_layer():
    graph = import_graph(ROOT)
    for module, imports in graph.items():
        if module.split("/")[1] in (*STAGES, *(f"{s}.py" for s in SHARED)):
            assert not {m for m in imports if m.startswith(f"{PACKAGE}/workflow/")}, module
