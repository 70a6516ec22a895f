"""DPO reference log-probs of every pair under an SFT run's final checkpoint (computed once)."""

from redi.cli import dump_params, job_parser, run_job, set_threads
from redi.io import setup_logging
from redi.train import ref_logps


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--pairs", required=True, help="results/data/pairs.parquet")
    parser.add_argument("--init-manifest", required=True, help="the SFT run's manifest.json")
    parser.add_argument("--out", required=True, help="results/train/ref_logps/<sft>.parquet")
    args = parser.parse_args()
    log = setup_logging(args.log)
    set_threads(args.threads)
    log.info("params %s", dump_params(args.params))
    ref_logps.compute_ref_logps(
        args.params, pairs=args.pairs, init_manifest=args.init_manifest, out=args.out
    )


if __name__ == "__main__":
    run_job(main)
