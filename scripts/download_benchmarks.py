"""Download the evaluation benchmarks at their pinned revisions, from the Hub or
(offline) the Hugging Face cache, into one folder of ``{id, problem, answer}`` JSON files
plus ``download.json`` (per benchmark: repository, revision, resolved commit)."""

from redi.cli import job_parser, run_job
from redi.eval.benchmarks import download_benchmarks
from redi.io import setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    download_benchmarks(args.params["benchmarks"], args.out)


if __name__ == "__main__":
    run_job(main)
