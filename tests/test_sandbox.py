"""The sandbox for generated code: hostile programs cannot harm the job or the machine,
and are scored wrong; a correct program passes.

Each hostile body sits in a function whose check passes if the body returns
normally, so a wrong score can only come from the sandbox stopping the attack.
What is enforced depends on the machine (root or not, namespaces available);
the tests branch on ``sandbox.capabilities()`` and say what they observe.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from redi import sandbox
from redi.sandbox import Limits

CAPS = sandbox.capabilities()


@pytest.fixture
def run_root():
    """A parent for the per-run directories that the sandbox user can traverse."""
    root = Path(tempfile.mkdtemp(prefix="redi-sbx-test-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def fast(root: Path, **kw) -> Limits:
    return Limits(timeout_s=1.0, startup_slack_s=0.5, tmp_root=str(root), **kw)


def program(body: str) -> str:
    """A HumanEval-shaped program that passes iff ``body`` returns normally."""
    return ("def f(x):\n" + textwrap.indent(textwrap.dedent(body), "    ")
            + "    return x + 1\n\n\ndef check(candidate):\n    assert candidate(1) == 2\n\n\n"
            + "check(f)\n")


def processes_in(root: Path) -> list[int]:
    """Processes whose working directory lies under ``root`` (the runs' children)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd.startswith(str(root)):
                pids.append(int(entry))
    return pids


def assert_left_nothing(root: Path) -> None:
    assert os.listdir(root) == []  # the run directory is gone
    assert processes_in(root) == []  # and so is every process it started


def test_capabilities_are_detected_once():
    assert sandbox.capabilities() is CAPS
    assert set(CAPS.namespaces) <= {"net", "pid"}
    if os.geteuid() == 0 and CAPS.uid is None:
        assert any("root" in note for note in CAPS.notes)  # running as root is explained


def test_correct_program_passes(run_root):
    result = sandbox.run_program(program("print('hello')\n"), fast(run_root))
    assert (result.passed, result.status, result.detail) == (True, "passed", "")
    assert result.stdout == "hello\n" and result.returncode == 0
    assert result.network_isolated is CAPS.network_isolated
    assert_left_nothing(run_root)


def test_wrong_program_fails_with_its_traceback(run_root):
    src = "def f(x):\n    return x\n\nassert f(1) == 2, 'wrong answer'\n"
    result = sandbox.run_program(src, fast(run_root))
    assert (result.passed, result.status) == (False, "failed")
    assert result.detail == "AssertionError: wrong answer"
    assert 'File "program.py", line 4' in result.stderr_tail


def test_rlimits_are_applied_in_the_child(run_root):
    limits = fast(run_root, memory_mb=512, max_processes=16, max_file_mb=2, max_open_files=64)
    src = ("import os, resource\n"
           "print([resource.getrlimit(getattr(resource, 'RLIMIT_' + n)) for n in "
           "('AS', 'CPU', 'NPROC', 'FSIZE', 'NOFILE', 'CORE')])\nprint(os.getuid())\n")
    result = sandbox.run_program(src, limits)
    mib = 1024 * 1024
    expected = [(512 * mib,) * 2, (limits.cpu_s,) * 2, (16, 16), (2 * mib,) * 2, (64, 64), (0, 0)]
    lines = result.stdout.splitlines()
    assert lines[0] == str(expected)
    assert int(lines[1]) == (CAPS.uid if CAPS.uid is not None else os.getuid())


def test_infinite_loop_is_killed_on_time(run_root):
    limits = fast(run_root)
    start = time.monotonic()
    result = sandbox.run_program(program("while True:\n    pass\n"), limits)
    elapsed = time.monotonic() - start
    assert (result.passed, result.status) == (False, "timed out")
    assert limits.wall_s <= elapsed < limits.wall_s + 1.0
    assert_left_nothing(run_root)


def test_fork_bomb_is_contained(run_root):
    # bounded: at most 200 sleeping children, even if every limit failed
    body = """
    import os, time
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
    """
    result = sandbox.run_program(program(body), fast(run_root, max_processes=16))
    if CAPS.uid is not None:  # RLIMIT_NPROC binds the unprivileged user: fork fails
        assert (result.status, result.detail) == (
            "failed", "BlockingIOError: [Errno 11] Resource temporarily unavailable")
    else:  # root ignores RLIMIT_NPROC: the forks succeed, the group kill ends them
        assert result.status in ("passed", "failed")
    assert_left_nothing(run_root)  # no child outlives the run


def test_setsid_escapee_dies_with_the_run(run_root):
    if "pid" not in CAPS.namespaces:
        pytest.skip("no PID namespace here: a child that calls setsid() leaves the process "
                    "group and outlives the run (only the group is killed)")
    body = """
    import os, time
    if os.fork() == 0:
        os.setsid()
        time.sleep(5)
        os._exit(0)
    """
    result = sandbox.run_program(program(body), fast(run_root))
    assert result.passed  # the program itself is harmless; its escaped child must be gone
    assert_left_nothing(run_root)


def test_allocating_10_gb_fails(run_root):
    result = sandbox.run_program(program("block = bytearray(10 * 1024**3)\n"), fast(run_root))
    assert (result.status, result.detail) == ("failed", "MemoryError")
    assert_left_nothing(run_root)


def test_large_files_are_refused(run_root):
    body = "open('big', 'wb').write(b'x' * (8 * 1024 * 1024))\n"
    result = sandbox.run_program(program(body), fast(run_root, max_file_mb=1))
    assert (result.status, result.detail) == ("failed", "OSError: [Errno 27] File too large")
    assert_left_nothing(run_root)


@pytest.fixture
def victim():
    """A file outside any run directory, readable by all, writable only by its owner."""
    folder = Path(tempfile.mkdtemp(prefix="redi-sbx-victim-"))
    folder.chmod(0o755)
    path = folder / "precious.txt"
    path.write_text("keep me")
    path.chmod(0o644)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def test_deleting_files_outside_the_run_dir_fails(run_root, victim):
    if CAPS.uid is None:
        pytest.skip("programs run as the grader's own user here (no root to drop), so files "
                    "that user may delete are not protected")
    body = f"""
    import os, shutil
    open('junk.txt', 'w').write('x')
    os.remove({str(victim)!r})
    """
    result = sandbox.run_program(program(body), fast(run_root))
    assert (result.status, result.detail) == (
        "failed", f"PermissionError: [Errno 13] Permission denied: {str(victim)!r}")
    assert victim.read_text() == "keep me"
    assert_left_nothing(run_root)


def test_run_dir_contents_are_discarded(run_root):
    body = """
    import os
    os.makedirs('deep/er')
    open('deep/er/file.txt', 'w').write('x')
    os.chmod('deep', 0)  # even an unreadable directory is removed afterwards
    """
    result = sandbox.run_program(program(body), fast(run_root))
    assert result.passed
    assert_left_nothing(run_root)


def test_sockets_cannot_reach_the_host(run_root):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.3)
    port = server.getsockname()[1]
    body = f"""
    import socket
    with socket.create_connection(('127.0.0.1', {port}), timeout=1) as s:
        s.sendall(b'pwned')
    socket.create_connection(('1.1.1.1', 53), timeout=1).close()
    """
    try:
        result = sandbox.run_program(program(body), fast(run_root))
        try:
            conn, _ = server.accept()
            conn.close()
            reached = True
        except TimeoutError:
            reached = False
    finally:
        server.close()
    assert result.network_isolated is CAPS.network_isolated
    if CAPS.network_isolated:  # a new network namespace: nothing is reachable
        assert (result.status, result.detail) == (
            "failed", "OSError: [Errno 101] Network is unreachable")
        assert not reached
    else:  # no namespace: the host's loopback is shared, and the result says so
        assert reached and result.network_isolated is False
    assert_left_nothing(run_root)


def test_early_exits_are_not_passes(run_root):
    exit0 = sandbox.run_program("import os\nos._exit(0)\n", fast(run_root))
    assert (exit0.status, exit0.returncode) == ("failed", 0)
    assert exit0.detail == "exited with code 0 before the end of the program"
    sys_exit = sandbox.run_program("import sys\nsys.exit(0)\n", fast(run_root))
    assert (sys_exit.status, sys_exit.detail) == ("failed", "SystemExit: 0")


def test_output_is_truncated(run_root):
    src = "import sys\nsys.stdout.write('x' * 5_000_000)\nsys.stderr.write('e' * 9000 + 'END')\n"
    result = sandbox.run_program(src, fast(run_root, max_output_bytes=4096))
    assert result.passed and result.output_truncated
    assert result.stdout == "x" * 4096
    assert result.stderr_tail == "e" * 4093 + "END"


def test_run_many_is_parallel_and_keeps_order(run_root):
    sources = [f"import time\ntime.sleep(0.6)\nprint({i})\n" for i in range(4)]
    start = time.monotonic()
    results = sandbox.run_many(sources, fast(run_root), workers=4)
    elapsed = time.monotonic() - start
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n", "3\n"]
    assert elapsed < 2.0  # one after the other would take >= 2.4 s
    assert_left_nothing(run_root)


def test_network_isolation_can_be_required(run_root):
    limits = fast(run_root, require_network_isolation=True)
    if CAPS.network_isolated:
        assert sandbox.run_program("pass\n", limits).network_isolated
    else:
        with pytest.raises(RuntimeError, match="network isolation is required"):
            sandbox.run_program("pass\n", limits)


@pytest.mark.parametrize(("field", "value"), [("timeout_s", 0), ("memory_mb", -1),
                                              ("max_processes", 0), ("max_output_bytes", "8")])
def test_bad_limits_are_rejected(field, value):
    with pytest.raises(ValueError, match=f"sandbox limit {field} must be a positive number"):
        Limits(**{field: value})


def test_without_namespaces_the_group_kill_still_contains_forks(run_root, monkeypatch):
    """What a machine with no namespaces and no privilege drop gets (simulated here)."""
    bare = sandbox.Capabilities(python=CAPS.python if CAPS.uid is None else sandbox.sys.executable,
                                uid=None, namespaces=())
    monkeypatch.setattr(sandbox, "_CAPS", bare)
    body = """
    import os, time
    for _ in range(50):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
    while True:
        pass
    """
    result = sandbox.run_program(program(body), fast(run_root))
    assert (result.status, result.network_isolated) == ("timed out", False)
    assert_left_nothing(run_root)  # the forked children were in the killed process group


def test_a_crash_is_killed_not_failed(run_root):
    result = sandbox.run_program(program("import ctypes\nctypes.string_at(0)\n"), fast(run_root))
    assert (result.passed, result.status, result.detail) == (False, "killed", "SIGSEGV")
    assert_left_nothing(run_root)


def test_a_sandbox_that_cannot_set_itself_up_is_an_error(run_root):
    # more open files than the kernel allows (fs.nr_open): setting the rlimit fails in the
    # child before the program's first line, and that is an error, never a verdict
    result = sandbox.run_program("print('never runs')\n", fast(run_root, max_open_files=2**31 - 1))
    assert (result.passed, result.status, result.stdout) == (False, "error", "")
    assert result.detail.startswith("sandbox setup failed (exit 1): ValueError")
