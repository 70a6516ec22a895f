"""Download open-r1/OpenR1-Math-Raw at its pinned revision as one parquet file,
and record what was fetched (``--record``: repository, revision, resolved commit)."""

from redi import data, hub
from redi.cli import job_parser, run_job
from redi.io import atomic_path, setup_logging, write_json


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--record", required=True, help="download.json: what was fetched")
    args = parser.parse_args()
    log = setup_logging(args.log)
    import datasets

    repo, revision = args.params["repo_id"], args.params["revision"]
    commit = hub.resolve(repo, "dataset", revision)
    ds = datasets.load_dataset(repo, split="train", revision=commit or revision)
    data.check_columns(ds.column_names, repo)
    log.info("downloaded %s@%s: %d rows; columns %s", repo, commit or revision, len(ds),
             ds.column_names)
    with atomic_path(args.out) as tmp:
        ds.to_parquet(str(tmp))
    write_json(args.record, hub.record(repo, "dataset", revision, commit, split="train",
                                       rows=len(ds), columns=ds.column_names))


if __name__ == "__main__":
    run_job(main)
