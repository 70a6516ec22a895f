"""Generation statistics (tokens, "Wait") of every checkpoint of one run (Figure 8)."""

from redi.cli import job_parser, run_job, set_threads
from redi.eval import evaluation
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--responses", default=None,
                        help="every response (reused by Figure 9's entropy of generated text)")
    args = parser.parse_args()
    setup_logging(args.log)
    set_threads(args.threads)
    evaluation.run_genstats(args.manifest, args.params, args.out, threads=args.threads,
                            gpus=args.gpus, out_responses=args.responses)


if __name__ == "__main__":
    run_job(main)
