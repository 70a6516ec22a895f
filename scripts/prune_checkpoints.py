"""Remove the checkpoint weights and resume state of one run that no job needs (see
redi.model.prune); the marker lists what was removed."""

from redi.cli import job_parser, run_job
from redi.io import setup_logging
from redi.model import prune


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--best", required=True, help="the run's <run>.best.json")
    parser.add_argument("--out", required=True, help="the marker, pruned.json")
    args = parser.parse_args()
    setup_logging(args.log)
    prune.prune_run(args.manifest, args.best, args.params["every_checkpoint"], args.out)


if __name__ == "__main__":
    run_job(main)
