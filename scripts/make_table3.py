"""Table 3: training cost per stage, measured from the workflow's records, beside the paper's."""

from redi.cli import job_parser, run_job
from redi.io import setup_logging
from redi.report import table3


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--training-times", required=True, help="the paper's training_times.csv")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--md", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    table3.run_table3(args.params, args.training_times, args.csv, args.md)


if __name__ == "__main__":
    run_job(main)
