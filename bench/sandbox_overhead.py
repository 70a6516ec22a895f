"""Per-sample cost of the code sandbox: wall time of one run, before and after.

Three ways of running one program, each ``--runs`` times one after the other, then
``--runs`` programs ``--workers`` at a time (what ``code_eval.grade`` does):

* ``bare``: ``python -I -c`` in a subprocess, no isolation at all (the floor);
* ``before``: ``redi/eval/sandbox.py`` as of ``--before`` (a git revision; the sandbox
  of rlimits, a network + PID namespace via ``unshare`` and a host run folder);
* ``after``: the current ``redi.eval.sandbox`` (bubblewrap: mount, PID, IPC, network,
  UTS and user namespaces, tmpfs /tmp, per-run uid, the audit hook).

Two programs: ``pass`` (an empty program: start-up and tear-down only) and
``humaneval`` (HumanEval/0's prompt, canonical solution and test). Prints the
median, mean and 90th percentile per sample in ms, and samples/s in parallel.

    python bench/sandbox_overhead.py                       # 30 runs, 2 workers
    python bench/sandbox_overhead.py --runs 100 --before 55d02a3
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_BEFORE = "55d02a3"  # the last revision with the unshare-based sandbox


def load_before(revision: str):
    """The sandbox module as it was at ``revision``, imported from a temporary file."""
    source = subprocess.run(["git", "show", f"{revision}:redi/eval/sandbox.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="sandbox-before-")) / "sandbox_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sandbox_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sandbox_before"] = module
    spec.loader.exec_module(module)
    return module


def programs() -> dict[str, tuple[str, str]]:
    """name -> (program, epilogue); the epilogue is appended where a runner has none."""
    from redi.eval import code_eval

    problem = code_eval.load_problems()[0]
    return {"pass": ("pass\n", ""),
            "humaneval": code_eval.program_parts(problem, problem["canonical_solution"])}


def runners(before_rev: str) -> dict[str, Callable[[str, str], bool]]:
    from redi.eval import sandbox

    before = load_before(before_rev)
    folder = tempfile.mkdtemp(prefix="sandbox-bench-")
    Path(folder).chmod(0o755)  # the old sandbox's runs live under it, as nobody
    old_limits = before.Limits(tmp_root=folder)
    new_limits = sandbox.Limits()

    def bare(program: str, epilogue: str) -> bool:
        proc = subprocess.run([sys.executable, "-I", "-c", program + epilogue],
                              capture_output=True, timeout=30)
        return proc.returncode == 0

    before.capabilities()
    sandbox.capabilities()
    return {"bare": bare,
            "before": lambda p, e: before.run_program(p + e, old_limits).passed,
            "after": lambda p, e: sandbox.run_program(p, new_limits, epilogue=e).passed}


def measure(run: Callable[[str, str], bool], program: tuple[str, str], runs: int,
            workers: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        if not run(*program):
            raise RuntimeError("a benchmark program did not pass")
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        assert all(pool.map(lambda _: run(*program), range(runs)))
    parallel = runs / (time.perf_counter() - start)
    times.sort()
    return {"median_ms": 1000 * statistics.median(times), "mean_ms": 1000 * statistics.mean(times),
            "p90_ms": 1000 * times[int(0.9 * (len(times) - 1))], "parallel_per_s": parallel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision of 'before'")
    args = parser.parse_args()
    impls = runners(args.before)
    print(f"{args.runs} runs per cell; parallel: {args.workers} workers")
    print(f"{'program':<10} {'sandbox':<8} {'median ms':>10} {'mean ms':>9} {'p90 ms':>8} "
          f"{'samples/s':>10}")
    for name, program in programs().items():
        for impl, run in impls.items():
            m = measure(run, program, args.runs, args.workers)
            print(f"{name:<10} {impl:<8} {m['median_ms']:>10.1f} {m['mean_ms']:>9.1f} "
                  f"{m['p90_ms']:>8.1f} {m['parallel_per_s']:>10.1f}")


if __name__ == "__main__":
    main()
