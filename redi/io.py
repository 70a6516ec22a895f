"""Atomic output writing and per-job logging."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class BenchmarkFileError(ValueError):
    """A benchmark file (math or out-of-domain) breaks its schema; the message names the
    file, the item and the rule. Here, below every loader, so that each can raise it."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    Works for files and directories. On error the temporary is removed, so a
    reader never sees a half-written output.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / "out"
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_parquet(path: str | os.PathLike, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(path: str | os.PathLike, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def setup_logging(log_path: str | os.PathLike | None, name: str = "redi") -> logging.Logger:
    """Log to the job's log file (if given) and to stderr.

    Under a multi-process launcher (``RANK`` set by torchrun/accelerate) rank 0
    writes ``log_path`` and rank k > 0 writes ``log_path.rank<k>``: ranks never
    truncate or interleave each other's file.
    """
    rank = int(os.environ.get("RANK", "0") or 0)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    tag = f" [rank {rank}]" if "RANK" in os.environ else ""
    fmt = logging.Formatter(f"%(asctime)s %(levelname)s{tag} %(name)s: %(message)s")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if log_path:
        path = Path(log_path) if rank == 0 else Path(f"{log_path}.rank{rank}")
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(path, mode="w")
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)
    return logging.getLogger(name)
