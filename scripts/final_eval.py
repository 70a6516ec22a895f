"""Final evaluation of one model (16 samples, all benchmarks): parquet files + summary.json."""

from redi.cli import job_parser, run_job, set_threads
from redi.eval import evaluation
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--label", required=True)
    parser.add_argument("--manifests", nargs="*", default=[])
    parser.add_argument("--bests", nargs="*", default=[])
    parser.add_argument("--model-dir", default=None, help="baselines: the local model folder")
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    set_threads(args.threads)
    evaluation.run_final(args.label, args.params, args.out_dir, manifests=args.manifests,
                         bests=args.bests, model_dir=args.model_dir, threads=args.threads,
                         gpus=args.gpus)


if __name__ == "__main__":
    run_job(main)
