"""One of Figures 2-8 as PNG and PDF (see redi.plotting)."""

from redi import plotting
from redi.cli import job_parser, run_job
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--curves", nargs="*", default=[], help="results/eval/curves/<run>.csv")
    parser.add_argument("--logs", nargs="*", default=[], help="results/train/<run>/log.csv")
    parser.add_argument("--genstats", default=None, help="results/eval/genstats/<run>.csv")
    parser.add_argument("--png", required=True)
    parser.add_argument("--pdf", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    plotting.make_figure(args.params, args.curves, args.logs, args.genstats, args.png, args.pdf)


if __name__ == "__main__":
    run_job(main)
