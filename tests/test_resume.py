"""The resume fingerprint: which code a resume state depends on."""

from __future__ import annotations

import shutil

from redi.sources import module_inputs
from redi.train import resume
from tests.conftest import ROOT


def test_the_resume_fingerprint_covers_every_module_training_imports(tmp_path):
    code = set(resume.training_code())
    assert code == {"redi/train/training.py", *module_inputs("redi/train/training.py", str(ROOT))}
    assert {"redi/model/checkpoints.py", "redi/io.py", "redi/model/models.py", "redi/train/losses.py"} <= code
    # an edit to any of them (here: one the old hand-kept list missed) changes it
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "redi", checkout / "redi")
    before = resume.fingerprint({"lr": 1}, [], checkout)
    with (checkout / "redi" / "model" / "checkpoints.py").open("a") as module:
        module.write("\n# edited\n")
    assert resume.fingerprint({"lr": 1}, [], checkout) != before
    assert resume.fingerprint({"lr": 1}, [], ROOT) == resume.fingerprint({"lr": 1}, [])
