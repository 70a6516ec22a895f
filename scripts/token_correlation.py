"""Figure 10's numbers: Pearson's r of per-token Δ LogP against LogP before REDI, per
minimum token frequency, as a CSV beside the figure."""

from redi.cli import job_parser, run_job
from redi.io import setup_logging
from redi.report import token_stats


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--tokens", required=True, help="results/analysis/<run>/token_logps.parquet")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    token_stats.run_correlation(args.tokens, args.params, args.out)


if __name__ == "__main__":
    run_job(main)
