"""Running the download jobs against the stand-in Hub, and a raw corpus row."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def hub_env(hf_home: Path, endpoint: str = "http://127.0.0.1:9", offline: bool = True,
            token: str | None = None, work: Path = ROOT) -> dict[str, str]:
    """The environment of a job: our cache, our endpoint, no inherited Hub settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(hf_home), HF_ENDPOINT=endpoint, PYTHONPATH=str(work),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="5")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if token:
        env["HF_TOKEN"] = token
    return env


def run(cmd: list[str] | str, env: dict[str, str], cwd: Path = ROOT,
        timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, shell=isinstance(cmd, str))


