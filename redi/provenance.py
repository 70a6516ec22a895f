"""What produced a result: package versions, the code's git commit, the device.

Recorded in every training manifest, so a number can be traced to the code and
software that made it months later.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "deepspeed", "datasets",
            "safetensors", "math-verify", "mathruler", "vllm")
ROOT = Path(__file__).resolve().parents[1]


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None where it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@functools.cache
def code_version() -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it (None: not git)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def device_description() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(0),
                "count": torch.cuda.device_count(), "cuda": torch.version.cuda}
    return {"type": "cpu", "name": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}


def provenance() -> dict[str, Any]:
    return {"packages": package_versions(), "code": code_version(),
            "device": device_description(), "python": platform.python_version(),
            "host": platform.node()}
