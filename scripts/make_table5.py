"""Table 5: out-of-domain pass@1 ± SEM and the relative improvement, beside the paper's."""

from redi.cli import job_parser, run_job
from redi.io import setup_logging
from redi.report import table5


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--summaries", nargs="+", required=True,
                        help="results/eval/ood/<label>/summary.json of every row")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--md", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    table5.run_table5(args.params, args.summaries, args.csv, args.md)


if __name__ == "__main__":
    run_job(main)
