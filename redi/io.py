"""Atomic output writing and per-job logging."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


class BenchmarkFileError(ValueError):
    """A benchmark file (math or out-of-domain) breaks its schema; the message names the
    file, the item and the rule. Here, below every loader, so that each can raise it."""


class JobFileError(OSError):
    """Reading or writing one of a job's files failed: the message names the file and
    what happened (the original error is its ``__cause__``). An ``OSError``, so that
    callers that already handle I/O failures handle it too."""


def free_space(path: str | os.PathLike) -> str:
    """Free space of the file system holding ``path`` (its nearest existing folder)."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free on its file system"
    except OSError:
        return "free space unknown"


def _why(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return f"{type(err).__name__}: {err}"


@contextlib.contextmanager
def naming_file(path: str | os.PathLike, action: str = "writing",
                errors: tuple[type[BaseException], ...] = (OSError,)) -> Iterator[None]:
    """Re-raise ``errors`` raised in the block as ``JobFileError`` naming ``path``; a
    write failure also states the free space (a full disk is the usual cause).

    ``torch.save`` reports a failed write (e.g. a full disk) as a ``RuntimeError``
    that names neither file nor cause (``basic_ios::clear: iostream error``): blocks
    that call it pass ``RuntimeError`` in ``errors``.
    """
    try:
        yield
    except JobFileError:
        raise
    except errors as err:
        where = f"; {free_space(path)}" if action == "writing" else ""
        raise JobFileError(f"{action} '{path}' failed: {_why(err)}{where}") from err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    Works for files and directories. On error the temporary is removed, so a
    reader never sees a half-written output.
    """
    target = Path(path)
    with naming_file(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / "out"
    try:
        # an OSError of the caller's write (ENOSPC, EACCES) is reported naming the target
        with naming_file(target):
            yield tmp
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


class FileIntegrityError(JobFileError):
    """A recorded file (a checkpoint's) is missing or differs from its record."""


# (absolute path, size, mtime_ns) -> sha256 of files hashed by this process: a job
# hashes each file once, however often it loads it; a rewritten file changes the key
_HASHED: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """The file's sha256 (hex), read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def file_records(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under ``folder`` by relative POSIX name. Meant for
    files just written (read back from the page cache); hashed on several threads
    (hashlib releases the GIL), so a checkpoint of many shards costs about its largest."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    with naming_file(root, "recording"), ThreadPoolExecutor(min(8, len(files) or 1)) as pool:
        digests = list(pool.map(sha256_file, files))
    return {f.relative_to(root).as_posix(): {"size": f.stat().st_size, "sha256": d}
            for f, d in zip(files, digests, strict=True)}


def _file_problem(path: Path, want: dict[str, Any]) -> str | None:
    """How ``path`` differs from its record, or None. The size is checked every time,
    the hash once per process and file version (``_HASHED``)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "is missing"
    except OSError as err:
        return f"cannot be read ({_why(err)})"
    if stat.st_size != want["size"]:
        return f"has {stat.st_size} bytes, expected {want['size']} (truncated or replaced)"
    key = (str(path.absolute()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        try:
            _HASHED[key] = sha256_file(path)
        except OSError as err:
            return f"cannot be read ({_why(err)})"
    if _HASHED[key] != want["sha256"]:
        return (f"has sha256 {_HASHED[key]}, expected {want['sha256']} "
                "(same size, different content: corrupted)")
    return None


def verify_files(folder: str | os.PathLike, files: dict[str, dict[str, Any]],
                 source: str | os.PathLike) -> None:
    """Check every file of ``files`` (``file_records``' form, recorded in ``source``)
    under ``folder``; ``FileIntegrityError`` names each file that differs and how."""
    root = Path(folder)
    if not root.is_dir():
        raise FileIntegrityError(f"checkpoint folder '{root}' is missing (recorded in {source})")
    problems = [f"'{root / name}' {problem}" for name, want in sorted(files.items())
                if (problem := _file_problem(root / name, want)) is not None]
    if problems:
        raise FileIntegrityError(f"checkpoint '{root}' does not match its record in {source}: "
                                 + "; ".join(problems))


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
    """The JSON in ``path``; unreadable or malformed: ``JobFileError`` naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise JobFileError(f"reading '{path}' failed: not valid JSON ({err})") from err
    except (OSError, UnicodeDecodeError) as err:
        raise JobFileError(f"reading '{path}' failed: {_why(err)}") from err


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
