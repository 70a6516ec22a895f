"""Intermediate evaluation of every checkpoint of one run: curve CSV + best.json."""

from redi.cli import job_parser, run_job, set_threads
from redi.eval import evaluation
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--log-csv", required=True)
    parser.add_argument("--init-curve", default=None, help="stage 2: the init SFT run's curve")
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--best", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    set_threads(args.threads)
    evaluation.run_curve(args.manifest, args.log_csv, args.params, args.out, args.best,
                         init_curve=args.init_curve, threads=args.threads, gpus=args.gpus)


if __name__ == "__main__":
    run_job(main)
