"""Resume state of a training run: its fingerprint, and finding a usable state.

The latest checkpoint of a running job keeps ``resume/`` (accelerate's optimizer,
scheduler and RNG state per rank + ``trainer_state.json``: step, log rows,
checkpoints, elapsed time, fingerprint and process layout). A rerun continues from
it when the fingerprint (params, input files, training code) AND the process
layout (world size, distributed type: per-rank state cannot be re-sharded) match;
otherwise the run starts afresh, and a layout mismatch is logged with its reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from redi.io import read_json

log = logging.getLogger(__name__)

# code whose change invalidates a resume state (besides params and inputs)
CODE_MODULES = ("training", "train_data", "step", "optim", "resume", "batching", "logprobs",
                "losses", "prompts", "attention", "models")
_HASH_LIMIT = 64 * 2**20  # bigger input files are fingerprinted by size + mtime
STATE_FILE = "trainer_state.json"


def _digest(path: Path) -> Any:
    if path.is_dir():
        return {
            p.relative_to(path).as_posix(): _digest(p)
            for p in sorted(path.rglob("*"))
            if p.is_file()
        }
    stat = path.stat()
    if stat.st_size > _HASH_LIMIT:
        return [stat.st_size, stat.st_mtime_ns]
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(params: dict[str, Any], inputs: list[str | os.PathLike]) -> str:
    """What a resume state must match: params, input files and the training code."""
    code_dir = Path(__file__).parent
    blob = {
        "params": params,
        "inputs": {str(p): _digest(Path(p)) for p in inputs},
        "code": {m: _digest(code_dir / f"{m}.py") for m in CODE_MODULES},
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def find_resume_state(ckpt_dir: Path, fingerprint: str, layout: dict[str, Any],
                      run: str | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The latest resume folder of this run (same fingerprint) that ``layout`` can load."""
    if not ckpt_dir.is_dir():
        return None
    for state_file in sorted(ckpt_dir.glob(f"step-*/resume/{STATE_FILE}"), reverse=True):
        state = read_json(state_file)
        if state.get("fingerprint") != fingerprint:
            continue
        written = {k: state.get(k) for k in layout}
        if written != layout:
            log.warning("%s: resume state %s was written by %s, this run is %s: "
                        "starting the run afresh", run, state_file.parent, written, layout)
            return None
        return state_file.parent, state
    return None
