"""Merge the data-stage reports into results/data/report.json."""

from redi.cli import job_parser, run_job
from redi.data import stage_report
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--filter", required=True)
    parser.add_argument("--length", required=True)
    parser.add_argument("--sft-length", required=True)
    parser.add_argument("--verify", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    stage_report.run_report(args.filter, args.length, args.sft_length, args.verify, args.out)


if __name__ == "__main__":
    run_job(main)
