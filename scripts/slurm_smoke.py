"""The cluster smoke test (redi.workflow.slurm_smoke): the tiny preset through your SLURM in minutes.

    python scripts/slurm_smoke.py                       # CPU jobs only
    python scripts/slurm_smoke.py --gpus 2              # + 2-rank training, 2-GPU evaluation
    python scripts/slurm_smoke.py --gpus 2 --vllm-python /path/to/vllm-env/bin/python

Account and partitions from REDI_SLURM_ACCOUNT / REDI_SLURM_PARTITION /
REDI_SLURM_GPU_PARTITION, as for the real run. Exit status 0 when every job ran and the
outputs check out; the report is printed and the log is <workdir>/smoke.log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from redi.workflow import slurm_smoke

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("slurm-smoke"),
                        help="a scratch copy of the workflow (default ./slurm-smoke)")
    parser.add_argument("--gpus", type=int, default=None,
                        help="GPUs of the training and evaluation jobs (default 0)")
    parser.add_argument("--train-gpus", type=int, default=None)
    parser.add_argument("--eval-gpus", type=int, default=None)
    parser.add_argument("--vllm-python", help="evaluate with vLLM from this interpreter")
    parser.add_argument("--timeout-min", type=float, default=30.0,
                        help="kill snakemake (and cancel its jobs) after this (default 30)")
    parser.add_argument("--status-seconds", type=int, default=5,
                        help="first wait before asking SLURM about a job (the plugin's"
                             " --slurm-init-seconds-before-status-checks; default 5)")
    parser.add_argument("--local", action="store_true",
                        help="the same jobs without SLURM (a reference run)")
    args, extra = parser.parse_known_args(argv)
    gpus = args.gpus or 0
    train = gpus if args.train_gpus is None else args.train_gpus
    evaluate = gpus if args.eval_gpus is None else args.eval_gpus
    result = slurm_smoke.smoke(args.workdir.resolve(), train, evaluate, args.vllm_python,
                               args.local, args.timeout_min * 60, extra,
                               args.status_seconds)
    print(slurm_smoke.render(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
