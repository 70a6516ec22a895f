"""Benchmark 5: the tiny preset end to end on 2 cores, from a clean copy of the workflow.

Copies the workflow (as the tests do: no ``results/``, no ``.snakemake/``), then times
``snakemake --cores 2 results/table2.csv`` and, after it, ``snakemake --cores 2`` (the
default target: every table and figure; only what table 2 did not need is left).
Goals: <= 10 min for table 2 and <= 12 min for the default target from clean (the sum).

    python bench/tiny_e2e.py                   # about 10-12 minutes
    python bench/tiny_e2e.py --keep /tmp/tiny  # keep the finished run (for workflow_overhead.py)
    python bench/tiny_e2e.py --quick           # the same two commands as dry runs
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import benchlib

GOALS_S = {"table2": 600.0, "default": 720.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="dry runs only")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="run (and keep) it here")
    args = parser.parse_args()
    benchlib.print_machine(benchlib.machine(), "machine (load average at the start)")
    if args.keep and args.keep.exists():
        raise SystemExit(f"{args.keep} exists: give a new folder")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="redi-e2e-")) / "wf"
    dry = ["-n"] if args.quick else []
    try:
        benchlib.copy_workflow(workdir)
        t2, text2 = benchlib.snakemake(workdir, *dry, "--cores", str(args.cores),
                                       "results/table2.csv")
        rest, text_rest = benchlib.snakemake(workdir, *dry, "--cores", str(args.cores))
    finally:
        if not args.keep:
            shutil.rmtree(workdir.parent, ignore_errors=True)
    rows = [
        ["results/table2.csv from clean", t2, benchlib.snakemake_jobs(text2), GOALS_S["table2"],
         "yes" if t2 <= GOALS_S["table2"] else "no"],
        ["then the default target (the rest)", rest, benchlib.snakemake_jobs(text_rest), None, "-"],
        ["default target from clean (sum)", t2 + rest, None, GOALS_S["default"],
         "yes" if t2 + rest <= GOALS_S["default"] else "no"],
    ]
    kind = "dry runs (--quick)" if args.quick else f"--cores {args.cores}"
    print(f"\n== tiny preset end to end, {kind}; wall seconds")
    benchlib.print_table(["target", "wall s", "jobs", "goal s", "goal met"], rows)
    if args.keep:
        print(f"   the finished run is kept in {workdir}")
    benchlib.print_machine(benchlib.machine(), "machine (load average at the end)")


if __name__ == "__main__":
    main()
