"""Download a gated multiple-choice set (GPQA) at its pinned revision, from the Hub or
(offline) the Hugging Face cache, as JSONL in the Hub's columns (what the evaluation's
local loader reads), and record what was fetched (``--record``)."""

from redi.cli import job_parser, run_job
from redi.eval import multiple_choice
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--record", required=True, help="what was fetched (download.json)")
    args = parser.parse_args()
    log = setup_logging(args.log)
    p = args.params
    record = multiple_choice.download_hub(args.out, args.record, config=p["hub_config"],
                                          revision=p["revision"], repo=p["hub"])
    log.info("%s (%s) at %s (commit %s): %d questions", p["hub"], record.get("config"),
             p["revision"], record.get("resolved_commit"), record["n_questions"])


if __name__ == "__main__":
    run_job(main)
