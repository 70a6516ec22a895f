"""Generate the toy corpus and the toy benchmarks (tiny preset)."""

from redi.cli import job_parser, run_job
from redi.data import toy
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--benchmarks", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    toy.run(args.params, args.corpus, args.benchmarks, workers=args.threads)


if __name__ == "__main__":
    run_job(main)
