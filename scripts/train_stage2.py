"""Stage 2: DPO, SimPO or REDI on the preference pairs from an SFT checkpoint."""

from redi.cli import dump_params, job_parser, run_job, set_threads
from redi.io import setup_logging
from redi.train import training


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--pairs", required=True, help="results/data/pairs.parquet")
    parser.add_argument("--init-manifest", required=True, help="the init SFT run's manifest.json")
    parser.add_argument("--ref-logps", default=None, help="reference log-probs (DPO only)")
    parser.add_argument("--manifest", required=True, help="run folder's manifest.json (written last)")
    parser.add_argument("--log-csv", required=True, help="run folder's log.csv")
    args = parser.parse_args()
    log = setup_logging(args.log)
    set_threads(args.threads)
    log.info("params %s", dump_params(args.params))
    training.run_stage2(
        args.params,
        pairs=args.pairs,
        init_manifest=args.init_manifest,
        manifest=args.manifest,
        log_csv=args.log_csv,
        ref_logps=args.ref_logps,
    )


if __name__ == "__main__":
    run_job(main)
