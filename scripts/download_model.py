"""Snapshot-download a baseline model from the Hub (compute nodes are offline)."""

from redi.cli import job_parser, run_job
from redi.io import atomic_path, setup_logging


def main() -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    setup_logging(args.log)

    from huggingface_hub import snapshot_download

    with atomic_path(args.out) as tmp:
        snapshot_download(args.params["model"], revision=args.params.get("revision"), local_dir=tmp,
                          allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja",
                                          "*.tiktoken", "*.py"])


if __name__ == "__main__":
    run_job(main)
