"""SFT (stage 1): completion-only training on D_SFT from the base model."""

from redi.cli import dump_params, job_parser, run_job, set_threads
from redi.io import setup_logging
from redi.train import training


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--data", required=True, help="results/data/sft.parquet")
    parser.add_argument("--init", required=True, help="base model folder")
    parser.add_argument("--manifest", required=True, help="run folder's manifest.json (written last)")
    parser.add_argument("--log-csv", required=True, help="run folder's log.csv")
    args = parser.parse_args()
    log = setup_logging(args.log)
    set_threads(args.threads)
    log.info("params %s", dump_params(args.params))
    training.run_sft(
        args.params, data=args.data, init=args.init, manifest=args.manifest, log_csv=args.log_csv
    )


if __name__ == "__main__":
    run_job(main)
