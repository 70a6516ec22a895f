"""Write the tokenizer folder: trained on the toy corpus (tiny preset, the family's
special tokens and chat template) or the base model's own tokenizer files from the Hub
at the pinned revision (download.json), with the params' chat template and a pad token."""

from pathlib import Path

from redi.cli import dump_params, job_parser, run_job
from redi.io import atomic_path, setup_logging
from redi.model import base_model


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--corpus", help="toy corpus (tiny preset: the tokenizer's training data)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    log = setup_logging(args.log)
    log.info("params %s", dump_params(args.params))
    with atomic_path(args.out) as tmp:
        base_model.build_tokenizer(args.params, args.corpus, Path(tmp))


if __name__ == "__main__":
    run_job(main)
