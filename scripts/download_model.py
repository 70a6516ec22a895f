"""Snapshot-download a baseline model from the Hub at its pinned revision (compute
nodes are offline); ``<out>/download.json`` records what was fetched."""

import json

from redi import hub
from redi.cli import job_parser, run_job
from redi.io import atomic_path, setup_logging

RECORD = "download.json"


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    log = setup_logging(args.log)

    from huggingface_hub import snapshot_download

    repo, revision = args.params["model"], args.params["revision"]
    commit = hub.resolve(repo, "model", revision)
    with atomic_path(args.out) as tmp:
        snapshot_download(repo, revision=commit or revision, local_dir=tmp,
                          allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja",
                                          "*.tiktoken", "*.py"])
        (tmp / RECORD).write_text(json.dumps(hub.record(repo, "model", revision, commit),
                                             indent=2) + "\n")
    log.info("downloaded %s@%s to %s", repo, commit or revision, args.out)


if __name__ == "__main__":
    run_job(main)
