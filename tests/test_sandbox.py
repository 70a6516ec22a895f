"""The sandbox for generated code, attacked for real: hostile programs cannot harm the
job, the machine or each other, leave nothing behind, see nothing of the host, and
cannot fake a pass; a correct program passes.

Each hostile body sits in a function whose check passes if the body returns
normally, so a wrong score can only come from the sandbox stopping the attack.
Every test runs real programs in bubblewrap. A machine that cannot sandbox fails
here at collection with the reason (grading refuses to run there too, as the
test_refusal* and *_without_user_namespaces tests show), rather than skipping.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from redi.eval import sandbox
from redi.eval.sandbox import Limits, SandboxUnavailable

CAPS = sandbox.capabilities()

ROOT = Path(__file__).resolve().parents[1]


def fast(**kw) -> Limits:
    return Limits(timeout_s=1.5, startup_slack_s=0.5, **kw)


def program(body: str) -> str:
    """A HumanEval-shaped program that passes iff ``body`` returns normally."""
    return ("def f(x):\n" + textwrap.indent(textwrap.dedent(body), "    ")
            + "    return x + 1\n\n\ndef check(candidate):\n    assert candidate(1) == 2\n\n\n"
            + "check(f)\n")


def run(body: str, **kw) -> sandbox.SandboxResult:
    return sandbox.run_program(program(body), fast(**kw))


def marker() -> str:
    return f"redi-sbx-{secrets.token_hex(6)}"


def left_on_host(name: str) -> list[str]:
    """Host paths named ``name`` in the world-writable places a program could use."""
    places = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/run", tempfile.gettempdir())
    return [f"{p}/{name}" for p in places if os.path.lexists(f"{p}/{name}")]


def sandbox_processes() -> list[int]:
    """Host processes still alive as a per-run sandbox uid (bwrap leaves its exited init
    to the host's init to reap: a zombie holds no memory, file or CPU, so it is ignored)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
                state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            slot = sandbox.SLOT_UID_BASE <= uid < sandbox.SLOT_UID_BASE + sandbox.MAX_SLOTS
            if slot and state != "Z":
                pids.append(int(entry))
    return pids


# --------------------------------------------------------------------- basics


def test_capabilities_are_detected_once_and_isolate():
    assert sandbox.capabilities() is CAPS
    assert {"mount", "pid", "ipc", "net"} <= set(CAPS.namespaces)
    assert CAPS.network_isolated
    assert CAPS.per_run_uid is (os.geteuid() == 0)


def test_correct_program_passes():
    result = run("print('hello')\n")
    assert (result.passed, result.status, result.detail) == (True, "passed", "")
    assert result.stdout == "hello\n" and result.returncode == 0


def test_wrong_program_fails_with_its_traceback():
    src = "def f(x):\n    return x\n\nassert f(1) == 2, 'wrong answer'\n"
    result = sandbox.run_program(src, fast())
    assert (result.passed, result.status) == (False, "failed")
    assert result.detail == "AssertionError: wrong answer"
    assert 'File "program.py", line 4' in result.stderr_tail


def test_rlimits_are_applied_in_the_child():
    limits = fast(memory_mb=512, max_processes=16, max_file_mb=2, max_open_files=64)
    src = ("import resource\nprint([resource.getrlimit(getattr(resource, 'RLIMIT_' + n)) for n "
           "in ('AS', 'CPU', 'NPROC', 'FSIZE', 'NOFILE', 'CORE')])\n")
    mib = 1024 * 1024
    expected = [(512 * mib,) * 2, (limits.cpu_s,) * 2, (16, 16), (2 * mib,) * 2, (64, 64), (0, 0)]
    assert sandbox.run_program(src, limits).stdout.splitlines()[0] == str(expected)


def test_infinite_loop_is_killed_on_time_and_leaves_no_process():
    limits = fast()
    start = time.monotonic()
    result = sandbox.run_program(program("while True:\n    pass\n"), limits)
    assert (result.passed, result.status) == (False, "timed out")
    assert limits.wall_s <= time.monotonic() - start < limits.wall_s + 1.5
    assert sandbox_processes() == []


def test_fork_bomb_and_setsid_escapees_die_with_the_run():
    body = """
    import os, time
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            os.setsid()
            time.sleep(30)
            os._exit(0)
    """
    result = run(body, max_processes=16)
    assert (result.status, result.detail) == (
        "failed", "BlockingIOError: [Errno 11] Resource temporarily unavailable")
    assert sandbox_processes() == []


def test_allocating_10_gb_fails():
    result = run("block = bytearray(10 * 1024**3)\n")
    assert (result.status, result.detail) == ("failed", "MemoryError")


def test_a_crash_is_killed_not_failed():
    result = run("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    assert (result.passed, result.status, result.detail) == (False, "killed", "SIGSEGV")


def test_early_exits_are_not_passes():
    exit0 = sandbox.run_program("import os\nos._exit(0)\n", fast())
    assert (exit0.status, exit0.returncode) == ("failed", 0)
    assert exit0.detail == "exited with code 0 before the end of the program"
    sys_exit = sandbox.run_program("import sys\nsys.exit(0)\n", fast())
    assert (sys_exit.status, sys_exit.detail) == ("failed", "SystemExit: 0")


def test_output_is_truncated():
    src = "import sys\nsys.stdout.write('x' * 5_000_000)\nsys.stderr.write('e' * 9000 + 'END')\n"
    result = sandbox.run_program(src, fast(max_output_bytes=4096))
    assert result.passed and result.output_truncated
    assert result.stdout == "x" * 4096
    assert result.stderr_tail == "e" * 4093 + "END"


@pytest.mark.parametrize(("field", "value"), [("timeout_s", 0), ("memory_mb", -1),
                                              ("disk_mb", 0), ("max_output_bytes", "8")])
def test_bad_limits_are_rejected(field, value):
    with pytest.raises(ValueError, match=f"sandbox limit {field} must be a positive number"):
        Limits(**{field: value})


# ------------------------------------------------- 1. cleanup cannot fail


def test_a_folder_thousands_of_levels_deep_is_no_problem():
    name = marker()
    body = f"""
    import os
    os.mkdir({name!r}); os.chdir({name!r})
    for _ in range(5000):
        os.mkdir('d'); os.chdir('d')
    os.chmod('.', 0)  # and unreadable at the bottom
    """
    result = run(body)
    assert result.passed  # nothing of it was on the host's disk: nothing to remove
    assert left_on_host(name) == []


def test_a_failure_of_the_machinery_is_an_error_verdict(monkeypatch):
    def broken(*_a, **_k):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(sandbox, "_spawn_and_collect", broken)
    result = sandbox.run_program("pass\n", fast())
    assert (result.passed, result.status) == (False, "error")
    assert result.detail == "sandbox failure: RecursionError: maximum recursion depth exceeded"


# ------------------------------------------- 2. nothing a sample writes outlives it


def test_files_in_world_writable_places_do_not_outlive_the_run():
    name = marker()
    body = f"""
    import os
    wrote = []
    for d in ('/tmp', '/var/tmp', '/dev/shm', '/run/lock', '/run', '.'):
        try:
            with open(os.path.join(d, {name!r}), 'w') as fh:
                fh.write('x')
            wrote.append(d)
        except OSError:
            pass
    print(wrote)
    """
    result = run(body)
    assert result.passed and result.stdout == "['/tmp', '/dev/shm', '.']\n"  # one tmpfs
    assert left_on_host(name) == []


def test_posix_shared_memory_does_not_outlive_the_run():
    name = marker()
    body = f"""
    from multiprocessing import shared_memory
    block = shared_memory.SharedMemory(name={name!r}, create=True, size=4 * 1024 * 1024)
    block.buf[:4] = b'kept'
    """
    assert run(body).passed
    assert left_on_host(name) == []


def test_each_run_has_its_own_ipc_namespace_and_no_sysv_access():
    host = os.readlink("/proc/self/ns/ipc")
    src = ("import os, time\nprint(os.readlink('/proc/self/ns/ipc'))\n"
           "print(open('/proc/sysvipc/shm').read().count('\\n'))\ntime.sleep(0.5)\n")
    # at the same time (a freed namespace's inode number can be reused later)
    first, second = (r.stdout.splitlines() for r in sandbox.run_many([src, src], fast(), 2))
    assert first[0] != host and second[0] != host and first[0] != second[0]
    assert first[1] == second[1] == "1"  # the header line only: no segments
    # the only way to SysV shm from Python is ctypes: refused
    result = run("import ctypes\nctypes.CDLL(None).shmget(0, 1 << 20, 0o1666)\n")
    assert result.status == "failed" and "ctypes.dlopen is not allowed" in result.detail


def test_disk_budget_is_total_not_per_file():
    body = """
    import os
    chunk = b'x' * (4 * 1024 * 1024)
    for i in range(8):  # 8 files of 4 MiB, alternating between /tmp and /dev/shm
        with open(f"{('/tmp', '/dev/shm')[i % 2]}/f{i}", 'wb') as fh:
            fh.write(chunk)
    """
    result = run(body, disk_mb=16, max_file_mb=8)
    assert (result.status, result.detail) == ("failed", "OSError: [Errno 28] No space left on device")
    assert run(body, disk_mb=40, max_file_mb=8).passed  # 32 MiB fit in 40


# ----------------------------------------- 3. concurrent samples do not interfere


def test_concurrent_samples_are_isolated():
    name = marker()
    writer = f"""
import os, time
open('/tmp/{name}', 'w').write('secret')
for _ in range(10):
    if os.fork() == 0:
        time.sleep(5)
        os._exit(0)
time.sleep(1.0)
print(os.getuid(), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
"""
    reader = f"""
import os, time
time.sleep(0.4)
for _ in range(12):  # the writer's 10 children must not count against this run's 16
    if os.fork() == 0:
        time.sleep(1)
        os._exit(0)
print(os.getuid(), os.path.exists('/tmp/{name}'), os.listdir('/tmp'))
print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
"""
    w, r = sandbox.run_many([writer, reader], fast(max_processes=16), workers=2)
    assert w.passed and r.passed, (w.detail, r.detail)
    w_uid, r_line = w.stdout.split()[0], r.stdout.splitlines()
    r_uid, seen, listing = r_line[0].split(" ", 2)
    assert (seen, listing) == ("False", "[]")  # nothing of the other run
    if CAPS.per_run_uid:
        assert w_uid != r_uid and int(w_uid) >= sandbox.SLOT_UID_BASE
    assert max(eval(r_line[1])) <= 20  # its own PID namespace: only its own processes


def test_a_later_sample_sees_nothing_of_an_earlier_one():
    name = marker()
    assert sandbox.run_program(f"open('/tmp/{name}', 'w').write('x')\n", fast()).passed
    later = sandbox.run_program(f"import os\nprint(os.path.exists('/tmp/{name}'))\n", fast())
    assert later.stdout == "False\n"


# --------------------------------------------------- 4. what of the host is visible


def test_proc_shows_only_the_sample():
    src = ("import os\nfor p in sorted(int(p) for p in os.listdir('/proc') if p.isdigit()):\n"
           "    print(p, open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0')[0].decode())\n")
    lines = sandbox.run_program(src, fast()).stdout.splitlines()
    assert len(lines) <= 2  # bwrap's init and the program: no host process
    assert all(cmd.endswith(("bwrap", "python3.11", "python3")) or "python" in cmd
               for _, cmd in (ln.split(" ", 1) for ln in lines))
    assert str(os.getpid()) not in [ln.split()[0] for ln in lines if int(ln.split()[0]) > 2]


def test_unix_sockets_and_the_host_network_are_unreachable(tmp_path):
    path = f"/tmp/{marker()}.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    unix.listen()
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    body = f"""
    import socket
    errors = []
    for family, address in ((socket.AF_UNIX, {path!r}), (socket.AF_UNIX, '\\0' + {path!r}),
                            (socket.AF_INET, ('127.0.0.1', {tcp.getsockname()[1]})),
                            (socket.AF_INET, ('1.1.1.1', 53))):
        try:
            socket.socket(family).connect(address)
        except OSError as exc:
            errors.append(type(exc).__name__)
    print(errors)
    """
    try:
        result = run(body)
        for server in (unix, tcp):
            server.settimeout(0.2)
            with pytest.raises(TimeoutError):
                server.accept()
    finally:
        unix.close()
        tcp.close()
        os.unlink(path)
    # its own loopback (nobody listens there), no route out, no host socket file
    assert result.stdout == ("['FileNotFoundError', 'ConnectionRefusedError', "
                             "'ConnectionRefusedError', 'OSError']\n")


def test_answer_key_project_and_venv_are_not_visible():
    from redi.eval import code_eval

    key = code_eval.humaneval_path()
    targets = [str(key), str(ROOT / "redi" / "eval" / "sandbox.py"), os.path.join(os.sys.prefix, "bin")]
    body = f"""
    import os
    print([os.path.exists(p) for p in {targets!r}])
    found = [os.path.join(d, f) for d, _, files in os.walk('/')
             if not d.startswith('/proc') for f in files
             if 'human' in f.lower() or f.endswith(('.jsonl.gz', '.smk'))]
    print(found)
    """
    result = run(body)
    assert result.passed, result.detail
    assert result.stdout == "[False, False, False]\n[]\n"


# ------------------------------------------------ 5. the pass signal is out of reach


def test_the_token_is_not_in_the_callers_frames():
    body = """
    import os, sys
    values, frame = [], sys._getframe()
    while frame is not None:
        for scope in (frame.f_locals, frame.f_globals):
            values += [v for v in scope.values() if isinstance(v, (str, bytes))]
        frame = frame.f_back
    for v in values:
        line = b'\\ndone ' + (v if isinstance(v, bytes) else v.encode()) + b'\\n'
        for fd in range(3, 64):
            try:
                os.write(fd, line)
            except OSError:
                pass
    os._exit(0)
    """
    result = run(body)
    assert (result.passed, result.status) == (False, "failed")


@pytest.mark.parametrize(("attack", "refused"), [
    ("import gc\ngc.get_objects()\n", "gc.get_objects"),
    ("import sys\nsys.settrace(lambda *a: None)\n", "sys.settrace"),
    ("import ctypes\n", "ctypes.dlopen"),
    ("open('/proc/self/mem', 'rb')\n", "process memory"),
    ("import subprocess\nsubprocess.run(['/usr/bin/true'])\n", "subprocess.Popen"),
    ("check.__code__ = (lambda c: None).__code__\n", "setting __code__"),
    ("import sys\nsys.audit('redi.eval.sandbox.done')\n", "completion event"),
])
def test_ways_to_the_token_or_the_harness_are_refused(attack, refused):
    result = run(attack)
    assert (result.passed, result.status) == (False, "failed")
    assert result.detail.startswith("PermissionError: sandbox: ") and refused in result.detail


def test_overriding_builtins_does_not_fake_a_pass():
    wrong = ("def f(x):\n    return 0\n\nimport builtins\nbuiltins.abs = lambda v: 0\n"
             "builtins.len = lambda v: 3\nabs = builtins.abs\n")
    test = "\ndef check(candidate):\n    assert abs(candidate(1) - 2) < 1e-6\n\ncheck(f)\n"
    result = sandbox.run_program(wrong, fast(), epilogue=test)
    assert (result.status, result.detail) == ("failed", "AssertionError")
    right = "def f(x):\n    return x + 1\n"
    assert sandbox.run_program(right, fast(), epilogue=test).passed


def test_a_program_cannot_swallow_its_epilogue():
    # an open string would turn the test into data in the concatenated program
    result = sandbox.run_program("def f(x):\n    return 0\ns = '''\n", fast(),
                                 epilogue="assert f(1) == 2\n")
    assert result.status == "failed" and result.detail.startswith("SyntaxError")


# -------------------------------------------------------- refusal where it cannot


def test_refusal_without_bwrap(monkeypatch):
    monkeypatch.setattr(sandbox, "_CAPS", None)
    monkeypatch.setattr(sandbox, "_find_bwrap", lambda: None)
    with pytest.raises(SandboxUnavailable, match="bubblewrap .bwrap. is not installed"):
        sandbox.run_program("print('never runs')\n")
    with pytest.raises(SandboxUnavailable):  # remembered: every later call refuses too
        sandbox.run_many(["pass\n"])


def test_refusal_when_bwrap_cannot_make_namespaces(monkeypatch):
    monkeypatch.setattr(sandbox, "_CAPS", None)
    failing = sandbox.error_result("sandbox setup failed (exit 1): bwrap: No permissions to "
                                   "creating new namespace")
    monkeypatch.setattr(sandbox, "_run_once", lambda *a, **k: failing)
    with pytest.raises(SandboxUnavailable, match="No permissions.*user namespaces"):
        sandbox.capabilities()


# ------------------------------------- machines without user namespaces, for real

NO_USERNS = '''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
r1, w1 = os.pipe(); r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    if libc.unshare(0x10000000) != 0:
        os._exit(90)
    os.write(w1, b"x"); os.read(r2, 1)
    os.setresgid(0, 0, 0); os.setresuid(0, 0, 0)
    open("/proc/sys/user/max_user_namespaces", "w").write("0")
    if sys.argv[1] != "root":
        os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
    os.execv(sys.argv[2], sys.argv[2:])
os.read(r1, 1)
for name in ("uid_map", "gid_map"):
    open(f"/proc/{pid}/{name}", "w").write("0 0 4294967295\\n")
os.write(w2, b"x")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
'''
DETECT = f'''
import sys
sys.path.insert(0, {str(ROOT)!r})
from redi.eval import sandbox
try:
    caps = sandbox.capabilities()
except sandbox.SandboxUnavailable as exc:
    print("refused:", exc)
    raise SystemExit(0)
r = sandbox.run_many(["import os, time\\nprint(os.getuid())\\ntime.sleep(0.2)\\n"] * 2, workers=2)
print(caps.mode, [x.stdout.strip() for x in r])
'''


def without_userns(who: str) -> str:
    """Run DETECT where no user namespace can be made (a fresh user namespace with
    user.max_user_namespaces = 0 and every uid mapped), as root or as nobody."""
    import subprocess
    import sys

    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if os.geteuid() != 0 or not os.path.exists(python):
        pytest.skip("needs root (to build the namespace) and a system python readable by nobody")
    proc = subprocess.run([sys.executable, "-c", NO_USERNS, who, python, "-c", DETECT],
                          capture_output=True, text=True, timeout=60, cwd="/")
    if proc.returncode == 90:
        pytest.skip("this machine cannot make the user namespace the test is built in")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_non_root_without_user_namespaces_is_refused():
    out = without_userns("nobody")
    assert out.startswith("refused: untrusted code is not run: the sandbox could not start")
    assert "Non-root graders need unprivileged user namespaces" in out


def test_root_without_user_namespaces_still_gets_a_uid_per_run():
    mode, uids = without_userns("root").split(" ", 1)
    assert mode == "privileged"
    first, second = eval(uids)
    assert first != second and min(int(first), int(second)) >= sandbox.SLOT_UID_BASE
