"""Apply the authors' filters and pairing rule to the raw corpus."""

from redi.cli import job_parser, run_job
from redi.data import filters
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--raw", required=True)
    parser.add_argument("--sft", required=True)
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    filters.run_filter(args.raw, args.params, args.sft, args.pairs, args.report)


if __name__ == "__main__":
    run_job(main)
