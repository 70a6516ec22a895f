"""Download a gated multiple-choice set (GPQA) at its pinned revision, from the Hub or
(offline) the Hugging Face cache, as JSONL in the Hub's columns (what the evaluation's
local loader reads), and record what was fetched (``--record``)."""

import json

from redi import hub, multiple_choice
from redi.cli import job_parser, run_job
from redi.io import setup_logging, write_json, write_text

INSTEAD = ("or set the benchmark's `file` to a local .json/.jsonl/.csv with the Hub's columns "
           "(no download)")


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--record", required=True, help="what was fetched (download.json)")
    args = parser.parse_args()
    log = setup_logging(args.log)
    p = args.params
    repo, config, revision = p["hub"], p["hub_config"] or multiple_choice.HUB_CONFIG, p["revision"]
    if repo != multiple_choice.HUB_REPO:
        raise ValueError(f"no multiple-choice loader for {repo!r} "
                         f"(known: {multiple_choice.HUB_REPO})")
    ds, commit = hub.load_dataset(repo, config, "train", revision, INSTEAD)
    rows = [dict(r) for r in ds]
    multiple_choice.build_items(rows, source=f"{repo}:{config}")  # the columns it needs
    write_text(args.out, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
    write_json(args.record, hub.record(repo, "dataset", revision, commit, config=config,
                                       split="train", n_questions=len(rows)))
    log.info("%s (%s) at %s (commit %s): %d questions", repo, config, revision, commit, len(rows))


if __name__ == "__main__":
    run_job(main)
