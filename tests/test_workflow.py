"""redi.workflow.module_inputs: the package files a script imports, transitively."""

from __future__ import annotations

from redi.workflow import module_inputs
from tests.conftest import ROOT


def test_real_scripts():
    assert module_inputs("scripts/make_figure.py", str(ROOT)) == (
        "redi/__init__.py", "redi/cli.py", "redi/io.py", "redi/plotting.py")
    # the training entry point reaches the losses through redi.training
    train = module_inputs("scripts/train_stage2.py", str(ROOT))
    assert {"redi/training.py", "redi/losses.py", "redi/logprobs.py"} <= set(train)
    assert "redi/plotting.py" not in train


def test_import_forms_and_transitivity(tmp_path):
    pkg = tmp_path / "redi"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\nfrom .c import thing\n")
    (pkg / "b.py").write_text("import redi.d as d\n")
    (pkg / "c.py").write_text("thing = 1\n")
    (pkg / "d.py").write_text("from redi import e\n")
    (pkg / "e.py").write_text("import os\n")
    (pkg / "unused.py").write_text("")
    (tmp_path / "run.py").write_text("def main():\n    from redi.a import x\n")
    assert module_inputs("run.py", str(tmp_path)) == (
        "redi/__init__.py", "redi/a.py", "redi/b.py", "redi/c.py", "redi/d.py", "redi/e.py")
