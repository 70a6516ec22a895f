"""Check every benchmark file of the run (math benchmarks and out-of-domain sets) against
its schema before any generation job starts; writes what was checked to ``--out``.

``--params``: ``{"benchmarks": redi.workflow.plan.benchmark_specs(config),
"ood": redi.workflow.ood_plan.ood_benchmarks(config)}``. A bad file fails the job with one error
per file naming the file, the item and the rule (redi.eval.benchmarks.validate_all)."""

from redi.cli import job_parser, run_job
from redi.eval.benchmarks import validate_all
from redi.io import setup_logging, write_json


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True, help="marker: the files checked (JSON)")
    args = parser.parse_args()
    setup_logging(args.log)
    write_json(args.out, validate_all(args.params))


if __name__ == "__main__":
    run_job(main)
