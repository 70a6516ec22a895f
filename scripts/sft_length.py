"""The SFT length rule on D_SFT: counts what training truncates, drops what it cannot train."""

from redi.cli import job_parser, run_job
from redi.data import length_filter
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--sft-in", required=True)
    parser.add_argument("--sft-out", required=True)
    parser.add_argument("--filter-report", default=None,
                        help="filter_data's report, merged into the failure report")
    parser.add_argument("--report", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    length_filter.run_sft_length(args.tokenizer, args.params, args.sft_in, args.sft_out, args.report,
                        args.filter_report)


if __name__ == "__main__":
    run_job(main)
