"""Download open-r1/OpenR1-Math-Raw at its pinned revision as one parquet file, from
the Hub or (offline) the Hugging Face cache, and record what was fetched (``--record``:
repository, revision, resolved commit)."""

from redi import hub
from redi.cli import job_parser, run_job
from redi.data import loading
from redi.io import atomic_path, setup_logging, write_json

INSTEAD = ("or set `raw_data` to a local .jsonl/.parquet file in the OpenR1-Math-Raw schema "
           "(no download)")


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--record", required=True, help="download.json: what was fetched")
    args = parser.parse_args()
    log = setup_logging(args.log)

    repo, revision = args.params["repo_id"], args.params["revision"]
    ds, commit = hub.load_dataset(repo, None, "train", revision, INSTEAD)
    loading.check_columns(ds.column_names, repo)
    log.info("loaded %s@%s (commit %s): %d rows; columns %s", repo, revision, commit, len(ds),
             ds.column_names)
    with atomic_path(args.out) as tmp:
        ds.to_parquet(str(tmp))
    write_json(args.record, hub.record(repo, "dataset", revision, commit, split="train",
                                       rows=len(ds), columns=ds.column_names))


if __name__ == "__main__":
    run_job(main)
