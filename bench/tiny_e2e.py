"""The tiny preset end to end on 2 cores, from a clean copy of the workflow.

Copies the workflow (as the tests do: no ``results/``, no ``.snakemake/``), then times
``snakemake --cores 2 results/table2.csv`` and, after it, ``snakemake --cores 2`` (the
default target: every table and figure; only what table 2 did not need is left).
Goals: <= 3 min for table 2 and <= 5 min for the default target from clean (the sum).
Then the job time per stage, from the jobs' ``benchmark:`` files (``results/benchmarks/``):
pretraining, SFT, stage 2, evaluation, and the rest of the cores' time (jobs without a
benchmark file -- data, reporting --, Snakemake itself and idle cores).

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

GOALS_S = {"table2": 180.0, "default": 300.0}
# benchmark-file folders (results/benchmarks/<name>...) by stage
STAGES = {"pretraining": ("base_model",), "SFT": ("sft",), "stage 2": ("stage2", "ref_logps"),
          "evaluation": ("eval_curve", "final_eval", "gen_stats", "ood_eval", "token_analysis")}


def stage_seconds(workdir: Path) -> dict[str, tuple[int, float]]:
    """Per stage: (jobs, summed job seconds) from the jobs' benchmark files."""
    out = {}
    for stage, prefixes in STAGES.items():
        files = [f for f in (workdir / "results" / "benchmarks").rglob("*.tsv")
                 if f.relative_to(workdir / "results" / "benchmarks").parts[0].split(".")[0]
                 .startswith(prefixes)]
        out[stage] = (len(files), sum(float(f.read_text().splitlines()[1].split("\t")[0])
                                      for f in files))
    return out


def print_stages(workdir: Path, wall: float, cores: int) -> None:
    stages = stage_seconds(workdir)
    busy = sum(s for _, s in stages.values())
    rows = [[stage, jobs, seconds, 100 * seconds / (wall * cores)]
            for stage, (jobs, seconds) in stages.items()]
    rows.append(["other jobs, Snakemake, idle cores", None, wall * cores - busy,
                 100 * (1 - busy / (wall * cores))])
    print(f"\n== where the {cores} cores' time went (default target from clean, "
          f"{wall:.0f} s x {cores} cores)")
    benchlib.print_table(["stage", "jobs", "job s", "% of cores x wall"], rows)


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
        if not args.quick:
            print_stages(workdir, t2 + rest, args.cores)
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
