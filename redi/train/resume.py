"""Resume state of a training run: its fingerprint, and finding a usable state.

The latest checkpoint of a running job keeps ``resume/`` (accelerate's optimizer,
scheduler and RNG state per rank + ``trainer_state.json``: step, log rows,
checkpoints, elapsed time, fingerprint and process layout). A rerun continues from
it when the fingerprint (params, input files, training code) AND the process
layout (world size, distributed type: per-rank state cannot be re-sharded) match;
otherwise the run starts afresh, and a layout mismatch is logged with its reason.

A state that cannot be used (unreadable or malformed JSON, a file missing or not
matching the size and sha256 recorded when it was saved) is skipped with a warning
naming the file and the error: the run resumes from an older state, or starts
afresh when there is none (it never stops at a damaged state).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from redi.io import JobFileError, read_json, sha256_file, verify_files
from redi.model.checkpoints import STATE_FILE
from redi.sources import CHECKOUT, PACKAGE, module_inputs

log = logging.getLogger(__name__)

# the training engine: it and every package module it imports (found from the imports,
# as the rules' code inputs are) make the code whose change invalidates a resume state
TRAINING_MODULE = f"{PACKAGE}/train/training.py"
_HASH_LIMIT = 64 * 2**20  # bigger input files are fingerprinted by size + mtime
STATE_KEYS = ("step", "rows", "checkpoints", "elapsed_s", "files")


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
    return sha256_file(path)


_CHECKOUT = CHECKOUT


def training_code(checkout: Path = _CHECKOUT) -> tuple[str, ...]:
    """The package files of the training engine, relative to the checkout."""
    return (TRAINING_MODULE, *module_inputs(TRAINING_MODULE, str(checkout)))


def fingerprint(params: dict[str, Any], inputs: list[str | os.PathLike],
                checkout: Path = _CHECKOUT) -> str:
    """What a resume state must match: params, input files and the training code."""
    blob = {
        "params": params,
        "inputs": {str(p): _digest(Path(p)) for p in inputs},
        "code": {m: _digest(checkout / m) for m in training_code(checkout)},
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def find_resume_state(ckpt_dir: Path, fingerprint: str, layout: dict[str, Any],
                      run: str | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The latest resume folder of this run (same fingerprint) that ``layout`` can load
    and whose files match their record; damaged ones are skipped with a warning."""
    if not ckpt_dir.is_dir():
        return None
    skipped = False
    for resume_dir in sorted(ckpt_dir.glob("step-*/resume"), reverse=True):
        try:
            state = _read_state(resume_dir / STATE_FILE)
            if state.get("fingerprint") != fingerprint:
                continue
            if not _same_layout(resume_dir, state, layout, run):
                return None
            _check_state(resume_dir, state)
        except JobFileError as err:
            log.warning("%s: resume state %s is unusable, trying an older one: %s", run,
                        resume_dir, err)
            skipped = True
            continue
        return resume_dir, state
    if skipped:
        log.warning("%s: no usable resume state in %s: starting the run afresh", run, ckpt_dir)
    return None


def _same_layout(resume_dir: Path, state: dict[str, Any], layout: dict[str, Any],
                 run: str | None) -> bool:
    written = {k: state.get(k) for k in layout}
    if written != layout:
        log.warning("%s: resume state %s was written by %s, this run is %s: "
                    "starting the run afresh", run, resume_dir, written, layout)
    return written == layout


def _read_state(path: Path) -> dict[str, Any]:
    state = read_json(path)  # JobFileError naming the file
    if not isinstance(state, dict):
        raise JobFileError(f"reading '{path}' failed: a JSON {type(state).__name__}, "
                           "not a resume state")
    return state


def _check_state(resume_dir: Path, state: dict[str, Any]) -> None:
    """Every key the trainer reads, and every recorded file of the step folder."""
    path = resume_dir / STATE_FILE
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise JobFileError(f"reading '{path}' failed: no {', '.join(missing)}")
    if not isinstance(state["files"], dict):
        raise JobFileError(f"reading '{path}' failed: 'files' is no file record")
    verify_files(resume_dir.parent, state["files"], path)
