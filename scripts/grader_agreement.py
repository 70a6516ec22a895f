"""Grader agreement: the tables' grader vs Math-Verify's, per model and benchmark
(see redi.report.agreement.run_agreement)."""

from redi.cli import job_parser, run_job
from redi.io import setup_logging
from redi.report import agreement


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--samples", nargs="+", required=True,
                        help="results/eval/final/<label>/<benchmark>.parquet of every cell")
    parser.add_argument("--csv", required=True, help="agreement per model and benchmark")
    parser.add_argument("--examples", required=True, help="first disagreements (CSV)")
    parser.add_argument("--md", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    agreement.run_agreement(args.params, args.samples, args.csv, args.examples, args.md)


if __name__ == "__main__":
    run_job(main)
