"""Download the evaluation benchmarks at their pinned revisions, from the Hub or
(offline) the Hugging Face cache, into one folder of ``{id, problem, answer}`` JSON files
plus ``download.json`` (per benchmark: repository, revision, resolved commit)."""

import json
import logging
from pathlib import Path
from typing import Any

from redi import hub
from redi.benchmarks import DOWNLOAD_RECORD, HUB_SOURCES, normalize_items
from redi.cli import job_parser, run_job
from redi.io import atomic_path, setup_logging

log = logging.getLogger(__name__)

INSTEAD = ("or set the preset's `benchmarks_dir` to a folder holding every benchmark's "
           "`file` ({id, problem, answer} JSON; no download)")


def fetch(spec: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """One benchmark: its Hub rows at the pinned commit, mapped to our format and written
    to ``out_dir/<file>``; returns the record."""
    repo = spec.get("hub")
    if repo not in HUB_SOURCES:
        raise ValueError(f"benchmark {spec['name']}: no Hub loader for {repo!r}; "
                         f"known: {sorted(HUB_SOURCES)} (or set benchmarks_dir)")
    config, split, mapper = HUB_SOURCES[repo]
    rows, commit = hub.load_dataset(repo, config, split, spec["revision"], INSTEAD)
    items = normalize_items(spec["name"], [mapper(dict(r)) for r in rows])
    (out_dir / spec["file"]).write_text(json.dumps(items, indent=1))
    log.info("benchmark %s: %s@%s (commit %s), %d problems", spec["name"], repo,
             spec["revision"], commit, len(items))
    return hub.record(repo, "dataset", spec["revision"], commit, benchmark=spec["name"],
                      config=config, split=split, file=spec["file"], n_problems=len(items))


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        fetched = [fetch(spec, tmp) for spec in args.params["benchmarks"]]
        (tmp / DOWNLOAD_RECORD).write_text(json.dumps({"benchmarks": fetched}, indent=1) + "\n")


if __name__ == "__main__":
    run_job(main)
