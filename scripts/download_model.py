"""Copy a baseline model at its pinned revision out of the Hugging Face cache (downloading
it there first when online; compute nodes may be offline) into ``--out``;
``<out>/download.json`` records what was fetched."""

import json
import shutil
from pathlib import Path

from redi import hub
from redi.cli import job_parser, run_job
from redi.io import atomic_path, setup_logging

RECORD = "download.json"
INSTEAD = "or set the baseline's `model` to a local model folder (no download)"


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    log = setup_logging(args.log)

    repo, revision = args.params["model"], args.params["revision"]
    folder, commit = hub.model_snapshot(repo, revision, INSTEAD)
    with atomic_path(args.out) as tmp:
        # files, not links into the cache: the output must outlive a cache cleanup
        shutil.copytree(folder, tmp, symlinks=False)
        record = hub.record(repo, "model", revision, commit,
                            files=sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*")
                                         if p.is_file()))
        (Path(tmp) / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    log.info("%s@%s (commit %s) copied to %s", repo, revision, commit, args.out)


if __name__ == "__main__":
    run_job(main)
