"""Snakemake's own overhead -- planning and the no-op rerun.

Wall time, median of 5 (after one untimed warm-up run), of

* ``snakemake -n results/table2.csv --config preset=paper`` (paper-preset dry run),
* ``snakemake --profile slurm -n results/table2.csv`` (slurm-profile dry run),

both in a fresh copy of the workflow (made as the tests make theirs), and of

* ``snakemake --cores 2 results/table2.csv`` in a FINISHED tiny run (nothing to do):
  ``--workdir DIR`` names one (e.g. the copy ``bench/tiny_e2e.py --keep DIR`` leaves);
  ``--build`` first builds one there (or in a temporary copy), about ten minutes.
  A dry run checks first that nothing is to be done: this script never runs jobs.

Goal: <= 3 s each on an idle 2-core machine.

    python bench/workflow_overhead.py --workdir /tmp/tiny-run
    python bench/workflow_overhead.py --build          # builds the tiny run first
    python bench/workflow_overhead.py --quick          # one timed run each, dry runs only
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import benchlib

GOAL_S = 3.0
DRY_RUNS = {
    "paper-preset dry run": ["-n", "results/table2.csv", "--config", "preset=paper"],
    "slurm-profile dry run": ["--profile", "slurm", "-n", "results/table2.csv"],
}
NOOP = ["--cores", "2", "results/table2.csv"]


def timings(workdir: Path, args: list[str], reps: int) -> tuple[float, list[float], int | None]:
    """(untimed warm-up wall, timed walls, jobs planned or run)."""
    warm, text = benchlib.snakemake(workdir, *args)
    return warm, [benchlib.snakemake(workdir, *args)[0] for _ in range(reps)], \
        benchlib.snakemake_jobs(text)


def check_finished(workdir: Path) -> None:
    _, text = benchlib.snakemake(workdir, "-n", "results/table2.csv")
    if "Nothing to be done" not in text:
        raise SystemExit(f"{workdir} is not a finished tiny run (a dry run plans jobs); "
                         f"build one with --build")


def build(workdir: Path) -> float:
    benchlib.copy_workflow(workdir)
    print(f"   building the tiny run in {workdir} (about ten minutes) ...", file=sys.stderr,
          flush=True)
    wall, _ = benchlib.snakemake(workdir, *NOOP)
    return wall


def row(name: str, warm: float, walls: list[float], jobs: int | None) -> list[object]:
    med = benchlib.median(walls)
    return [name, med, min(walls), max(walls), warm, len(walls), jobs,
            "yes" if med <= GOAL_S else "no"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timed run, dry runs only")
    parser.add_argument("--workdir", type=Path, default=None, help="a finished tiny run")
    parser.add_argument("--build", action="store_true", help="build the tiny run first")
    parser.add_argument("--reps", type=int, default=None, help="timed runs (default 5)")
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 5)
    benchlib.print_machine(benchlib.machine(), "machine (load average at the start)")
    rows = []
    fresh = Path(tempfile.mkdtemp(prefix="redi-overhead-"))
    try:
        benchlib.copy_workflow(fresh / "wf")
        for name, cmd in DRY_RUNS.items():
            rows.append(row(name, *timings(fresh / "wf", cmd, reps)))
        workdir = args.workdir
        if args.build:
            workdir = workdir or fresh / "tiny"
            print(f"   built in {build(workdir):.0f} s")
        if workdir is not None and not args.quick:
            check_finished(workdir)
            rows.append(row("no-op rerun of a finished tiny run", *timings(workdir, NOOP, reps)))
        elif workdir is None:
            print("   no-op rerun: not measured (give --workdir of a finished run, or --build)")
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    print(f"\n== wall seconds, median of {reps} after one untimed warm-up; goal <= {GOAL_S:g} s")
    benchlib.print_table(["command", "median s", "min s", "max s", "warm-up s", "runs",
                          "jobs", f"<= {GOAL_S:g} s"], rows)
    benchlib.print_machine(benchlib.machine(), "machine (load average at the end)")


if __name__ == "__main__":
    main()
