"""Write the base model folder: the paper's edited Qwen2.5-Math-1.5B, or the tiny model,
with the tokenizer stage's files."""

from pathlib import Path

from redi.cli import dump_params, job_parser, run_job, set_threads
from redi.io import atomic_path, setup_logging
from redi.model import base_model


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--tokenizer", required=True,
                        help="the tokenizer stage's folder (copied into the model folder)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    log = setup_logging(args.log)
    set_threads(args.threads)
    log.info("params %s", dump_params(args.params))
    with atomic_path(args.out) as tmp:
        base_model.build(args.params, args.tokenizer, Path(tmp))


if __name__ == "__main__":
    run_job(main)
