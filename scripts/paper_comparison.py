"""Reproduced vs reported numbers for every cell of the paper's tables."""

from redi.cli import job_parser, run_job
from redi.io import setup_logging
from redi.report import comparison


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--reported", required=True, help="reported_results.csv")
    parser.add_argument("--table1", required=True)
    parser.add_argument("--table2", required=True)
    parser.add_argument("--table1-pass16", required=True)
    parser.add_argument("--table2-pass16", required=True)
    parser.add_argument("--training-times", required=True, help="training_times.csv")
    parser.add_argument("--manifests", nargs="+", required=True,
                        help="results/train/<run>/manifest.json of every trained run")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--md", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    tables = {"table1": args.table1, "table2": args.table2, "table1_pass16": args.table1_pass16,
              "table2_pass16": args.table2_pass16}
    comparison.run_comparison(args.params, args.reported, tables, args.training_times, args.manifests,
                             args.csv, args.md)


if __name__ == "__main__":
    run_job(main)
