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
def _imported_names(path: Path) -> frozenset[str]:
    """Dotted ``redi...`` names a file imports: modules, and ``module.name`` candidates."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolved against the file's own package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] == PACKAGE:
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names)
    return frozenset(found)


def _package_of(path: Path) -> str:
    """``redi.eval`` for a file inside redi/eval/ (relative imports); '' outside the package."""
    parts = path.resolve().parent.parts
    if PACKAGE not in parts:
        return ""
    return ".".join(parts[len(parts) - 1 - parts[::-1].index(PACKAGE):])


def _module_file(base: Path, dotted: str) -> Path | None:
    """The file of a dotted module (``redi/a/b.py`` or ``redi/a/b/__init__.py``), if any."""
    path = base.joinpath(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def direct_imports(path: Path, root: Path) -> set[str]:
    """Package files (relative to ``root``) a file imports itself, with the
    ``__init__.py`` of every package on their way (Python runs those too)."""
    found: set[str] = set()
    for name in _imported_names(path):
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # the packages on the way, then the module
            module = _module_file(root, ".".join(parts[:depth]))
            if module:
                found.add(module.relative_to(root).as_posix())
    return found


@cache
def module_inputs(script: str, root: str = ".") -> tuple[str, ...]:
    """Paths (relative to ``root``) of the package modules ``script`` depends on."""
    base = Path(root)
    todo = [base / script]
    seen: set[str] = set()
    while todo:
        for rel in direct_imports(todo.pop(), base) - seen:
            seen.add(rel)
            todo.append(base / rel)
    return tuple(sorted(seen))
