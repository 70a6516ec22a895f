"""One figure of the registry (redi.report.plotting.FIGURES) as PNG and PDF; a figure gets
the inputs its entry reads (``--<kind> PATH...`` for each kind of plotting.READS)."""

from redi.cli import job_parser, run_job
from redi.io import setup_logging
from redi.report import plotting


def main() -> None:
    parser = job_parser(__doc__)
    for kind in plotting.READS:  # e.g. --curves results/eval/curves/<run>.csv ...
        parser.add_argument(f"--{kind.replace('_', '-')}", dest=kind, nargs="*", default=[])
    parser.add_argument("--png", required=True)
    parser.add_argument("--pdf", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    inputs = {kind: getattr(args, kind) for kind in plotting.READS}
    plotting.make_figure(args.params, inputs, args.png, args.pdf)


if __name__ == "__main__":
    run_job(main)
