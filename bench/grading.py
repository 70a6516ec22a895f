"""Grading throughput (responses/s) of every mode of ``redi.grading.MODES``.

A thin wrapper around ``scripts/bench_grading.py`` (the worker pool on typical long
responses graded against the five real benchmark files, 16 samples per problem): it
runs that script once for all modes with 2 workers and prints each mode's
responses/s, per benchmark and overall, and its ratio to ``strict``. Goal: >= 1,000
responses/s for the paper's mode. The benchmark files stay where they are
(``../shared/benchmarks``), nothing is copied.

    python bench/grading.py            # 200 problems per benchmark, 16 samples each
    python bench/grading.py --quick    # 10 problems, 2 samples
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import benchlib

BENCHMARKS = benchlib.ROOT.parent / "shared" / "benchmarks"
SCRIPT = benchlib.ROOT / "scripts" / "bench_grading.py"
LINE = re.compile(r"^(\S+)\s+(\S+)\s+(\d+)\s+responses/s")
GOAL = 1000.0


def run_script(benchmarks: Path, workers: int, problems: int, samples: int,
               modes: list[str]) -> str:
    cmd = [sys.executable, str(SCRIPT), "--benchmarks", str(benchmarks),
           "--workers", str(workers), "--problems", str(problems), "--samples", str(samples),
           "--modes", *modes]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=benchlib.ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc.stdout


def parse(output: str) -> dict[str, dict[str, float]]:
    """mode -> {benchmark or 'all': responses/s}."""
    rates: dict[str, dict[str, float]] = {}
    for line in output.splitlines():
        match = LINE.match(line)
        if match:
            name, mode, rate = match.groups()
            rates.setdefault(mode, {})[name] = float(rate)
    return rates


def main() -> None:
    from redi.grading import MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 problems, 2 samples")
    parser.add_argument("--benchmarks", type=Path, default=BENCHMARKS)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    problems, samples = (10, 2) if args.quick else (200, 16)
    benchlib.print_machine(benchlib.machine(), "machine (load average at the start)")
    output = run_script(args.benchmarks, args.workers, problems, samples, list(MODES))
    rates = parse(output)
    names = sorted({n for r in rates.values() for n in r if n != "all"})
    strict = rates.get("strict", {})
    rows = []
    for mode in MODES:
        r = rates.get(mode, {})
        rows.append([mode, r.get("all"), benchlib.ratio(r.get("all"), strict.get("all")),
                     "yes" if (r.get("all") or 0) >= GOAL else "no",
                     *[r.get(n) for n in names]])
    print(f"\n== {args.workers} workers, {samples} samples per problem, up to {problems} "
          f"problems per benchmark ({args.benchmarks}); responses/s")
    benchlib.print_table(["mode", "all", "ratio to strict", f">= {GOAL:.0f}/s", *names], rows)
    benchlib.print_machine(benchlib.machine(), "machine (load average at the end)")


if __name__ == "__main__":
    main()
