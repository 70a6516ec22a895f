"""Shared helpers of the benchmark scripts: the machine, fresh child processes, peak
memory, medians and the printed tables.

A measurement that reports peak memory runs in a FRESH child process (the script
re-runs itself with ``--child ...``); the child prints one ``RESULT {json}`` line
that the parent parses. Peak RSS is the child's ``VmHWM`` (``/proc/self/status``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "RESULT "
GIB = 2**30


# ------------------------------------------------------------------ machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(threads: int | None = None) -> dict[str, Any]:
    """What the figures were measured on (``threads``: torch threads of the children)."""
    load = os.getloadavg()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_avg_1_5_15": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    if threads is not None:
        info["torch_threads"] = threads
    return info


def print_machine(info: dict[str, Any], title: str) -> None:
    print(f"== {title}")
    for key, value in info.items():
        print(f"   {key}: {value}")


def package_versions(names: Sequence[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


# ------------------------------------------------------------------ memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (VmHWM)."""
    return _status_kib("VmHWM") * 1024


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def mem_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


# ----------------------------------------------------------- child process


def emit(result: dict[str, Any]) -> None:
    """The child's one result line."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_child(args: Sequence[str], timeout: float = 7200, env: dict[str, str] | None = None
              ) -> dict[str, Any]:
    """Run ``python <args>`` in a fresh process; return its RESULT (+ wall_s)."""
    cmd = [sys.executable, *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"child {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["wall_s"] = round(wall, 2)
    return result


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


# ---------------------------------------------------------------- workflow


def copy_workflow(dest: Path) -> Path:
    """A private copy of the workflow, exactly as the tests make one
    (``tests/conftest.py``'s ``copy_workflow``)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.conftest import copy_workflow as copy

    return copy(dest)


def snakemake(workdir: Path, *args: str, timeout: float = 3600) -> tuple[float, str]:
    """Run the snakemake CLI in ``workdir``; (wall seconds, stdout + stderr)."""
    cmd = [str(Path(sys.executable).with_name("snakemake")), *args]
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - start
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed ({proc.returncode}) in "
                           f"{workdir}:\n{text[-5000:]}")
    return wall, text


def snakemake_jobs(text: str) -> int | None:
    """Jobs of a snakemake run ('N of N steps (100%) done') or dry run ('total N');
    0 for 'Nothing to be done'."""
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", text)
    if done:
        return int(done[-1][1])
    total = re.search(r"^total\s+(\d+)", text, re.MULTILINE)
    if total:
        return int(total.group(1))
    return 0 if "Nothing to be done" in text else None


# ------------------------------------------------------------------ tables


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 1e4:
            return f"{value:.0f}"
        if value != 0 and abs(value) < 1:  # ratios and small differences: 3 digits
            return f"{value:.3g}"
        return f"{value:.{digits}f}"
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain Markdown table (pastes into the README as is)."""
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in r]
                                           for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0 or num != num or den != den:
        return None
    return num / den
