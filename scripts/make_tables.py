"""Table 1 or 2: pass@1 ± SEM and pass@16 as CSV and markdown (see redi.reporting)."""

from redi.cli import job_parser, run_job
from redi.io import setup_logging
from redi.report import tables


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--summaries", nargs="+", required=True,
                        help="results/eval/final/<label>/summary.json of every row")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--md", required=True)
    parser.add_argument("--pass16-csv", required=True)
    parser.add_argument("--pass16-md", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    tables.run_tables(args.params, args.summaries, args.csv, args.md, args.pass16_csv,
                         args.pass16_md)


if __name__ == "__main__":
    run_job(main)
