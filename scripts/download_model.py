"""Snapshot-download a baseline model from the Hub (compute nodes are offline)."""

from redi.cli import job_parser
from redi.io import atomic_path, setup_logging

parser = job_parser(__doc__)
parser.add_argument("--out", required=True)
args = parser.parse_args()
setup_logging(args.log)

from huggingface_hub import snapshot_download  # noqa: E402

with atomic_path(args.out) as tmp:
    snapshot_download(args.params["model"], revision=args.params.get("revision"), local_dir=tmp,
                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja",
                                      "*.tiktoken", "*.py"])
