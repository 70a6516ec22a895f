"""Argument parsing shared by the thin entry points in scripts/."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any


def job_parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=json.loads, default={},
                        help="the job's hyper-parameters as one JSON object")
    parser.add_argument("--log", default=None, help="the job's log file")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("REDI_THREADS", 1)))
    return parser


def set_threads(threads: int) -> None:
    """Limit intra-op threads to the job's share (Snakemake runs jobs side by side);
    the processes of a multi-process launch on one machine split it."""
    import torch

    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    torch.set_num_threads(max(1, threads // max(1, processes)))


def dump_params(params: dict[str, Any]) -> str:
    return json.dumps(params, indent=2, sort_keys=True)


def run_job(main: Callable[[], None]) -> None:
    """Run a script's ``main``; an uncaught error is logged with its traceback.

    The log handlers of ``redi.io.setup_logging`` then put the traceback into the
    job's own log file (``results/logs/<rule>/...``, where Snakemake points the
    user), not only on stderr; the process exits with status 1.
    """
    try:
        main()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        logging.getLogger("redi").exception("job failed")
        logging.shutdown()
        sys.exit(1)
