"""The paper's findings checked against this run's tables and curves (see redi.report.claims)."""

from redi.cli import job_parser, run_job
from redi.io import setup_logging
from redi.report import claims


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--tables", nargs="+", required=True,
                        help="results/<table>.csv (pass@1, pass@16, Table 5), by file stem")
    parser.add_argument("--curves", nargs="*", default=[],
                        help="results/eval/curves/<run>.csv of Table 2's runs")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--md", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    claims.run_claims(args.params, args.tables, args.curves, args.csv, args.md)


if __name__ == "__main__":
    run_job(main)
