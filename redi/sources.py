"""Snakemake glue: which package files a script runs (declared as rule inputs).

Snakemake does not track modules imported by a script, so every rule declares
the ``redi/*.py`` files its entry script imports (transitively) as inputs; they
are compared by checksum, so editing one module reruns exactly the jobs that
import it (and a ``touch`` or ``git checkout`` reruns nothing).
"""

from __future__ import annotations
import ast
import shutil
from functools import cache
from pathlib import Path





PACKAGE = "redi"


CHECKOUT = Path(__file__).resolve().parents[1]


# what a copy of the workflow needs to run (results/ and .snakemake/ are made there)
WORKFLOW_FILES = ("Snakefile", "config.yaml", "rules", "scripts", "redi", "envs", "slurm",
                  "configs", "report")


def copy_workflow(dest: str | Path, root: Path = CHECKOUT) -> Path:
    """The workflow's files into ``dest`` (a scratch run folder; an existing copy is
    refreshed, its results kept)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


@cache  # every rule's scripts share most modules: parse each file once per Snakefile parse
def _imported_modules(path: Path) -> frozenset[str]:
    """Top-level ``redi.<module>`` names imported anywhere in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if node.level == 1 and parts[0]:  # from .x import y (inside the package)
                found.add(parts[0])
            elif parts[0] == PACKAGE:
                if len(parts) > 1:
                    found.add(parts[1])
                else:  # from redi import x, y
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update(alias.name for alias in node.names)  # from . import x
    return frozenset(found)


@cache
def module_inputs(script: str, root: str = ".") -> tuple[str, ...]:
    """Paths (relative to ``root``) of the package modules ``script`` depends on."""
    base = Path(root)
    todo = [base / script]
    seen: set[str] = set()
    while todo:
        for name in _imported_modules(todo.pop()):
            module = base / PACKAGE / f"{name}.py"
            if name not in seen and module.exists():
                seen.add(name)
                todo.append(module)
    init = f"{PACKAGE}/__init__.py"
    return (init, *sorted(f"{PACKAGE}/{name}.py" for name in seen))
