"""Re-run Math-Verify on every raw generation and compare with the corpus labels."""

from redi.cli import job_parser, run_job
from redi.data import verify_labels
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--raw", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    verify_labels.run_verify(args.raw, args.params, args.out, workers=args.threads)


if __name__ == "__main__":
    run_job(main)
