"""The cost plan of every table and figure target (see redi.workflow.cost_plan)."""

from redi.cli import job_parser, run_job
from redi.io import setup_logging
from redi.workflow import cost_plan


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--times", required=True, help="the paper's training_times.csv")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--md", required=True)
    args = parser.parse_args()
    setup_logging(args.log)
    cost_plan.write_plan(args.params, args.times, args.csv, args.md)


if __name__ == "__main__":
    run_job(main)
