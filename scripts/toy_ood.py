"""Generate one toy out-of-domain set for Table 5 (tiny preset): code problems in
HumanEval's schema or multiple-choice questions in GPQA's, as JSONL."""

from redi.cli import job_parser, run_job
from redi.eval import toy_ood
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--corpus", default=None, help="toy corpus: its questions are avoided")
    parser.add_argument("--benchmarks", default=None, help="toy benchmark folder: likewise")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    toy_ood.run(args.params, args.out, corpus=args.corpus, benchmarks_dir=args.benchmarks)


if __name__ == "__main__":
    run_job(main)
