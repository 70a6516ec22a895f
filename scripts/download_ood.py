"""Download a gated multiple-choice set (GPQA) from the Hub at its revision, as JSONL."""

from redi import multiple_choice
from redi.cli import job_parser, run_job
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--record", required=True, help="what was fetched (download.json)")
    args = parser.parse_args()
    setup_logging(args.log)
    p = args.params
    multiple_choice.download_hub(args.out, args.record, config=p["hub_config"],
                                 revision=p["revision"], repo=p["hub"])


if __name__ == "__main__":
    run_job(main)
