"""Download open-r1/OpenR1-Math-Raw and save it as one parquet file."""

from redi import data
from redi.cli import job_parser, run_job
from redi.io import atomic_path, setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    log = setup_logging(args.log)
    ds = data.load_raw("hub")
    log.info("downloaded %d rows; columns %s", len(ds), ds.column_names)
    with atomic_path(args.out) as tmp:
        ds.to_parquet(str(tmp))


if __name__ == "__main__":
    run_job(main)
