"""Figures 9 and 10: token entropy of every checkpoint and per-token log-probs of a run."""

from redi.cli import dump_params, job_parser, run_job, set_threads
from redi.eval import token_analysis
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--manifest", required=True, help="the run's manifest.json")
    parser.add_argument("--pairs", required=True, help="results/data/pairs.parquet")
    parser.add_argument("--responses", required=True, help="the run's gen_stats responses")
    parser.add_argument("--entropy", required=True, help="output: entropy per checkpoint (CSV)")
    parser.add_argument("--tokens", required=True, help="output: per-token log-probs (parquet)")
    args = parser.parse_args()
    log = setup_logging(args.log)
    set_threads(args.threads)
    log.info("params %s", dump_params(args.params))
    token_analysis.run_token_analysis(args.manifest, args.pairs, args.responses, args.params,
                                      args.entropy, args.tokens)


if __name__ == "__main__":
    run_job(main)
