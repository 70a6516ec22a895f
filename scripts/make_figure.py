"""One figure of the registry (redi.plotting.FIGURES) as PNG and PDF; a figure gets
the inputs its entry reads, the others arrive empty."""

from redi import plotting
from redi.cli import job_parser, run_job
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--curves", nargs="*", default=[], help="results/eval/curves/<run>.csv")
    parser.add_argument("--logs", nargs="*", default=[], help="results/train/<run>/log.csv")
    parser.add_argument("--genstats", nargs="*", default=[],
                        help="results/eval/genstats/<run>.csv")
    parser.add_argument("--png", required=True)
    parser.add_argument("--pdf", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    plotting.make_figure(args.params, args.curves, args.logs, args.genstats, args.png, args.pdf)


if __name__ == "__main__":
    run_job(main)
