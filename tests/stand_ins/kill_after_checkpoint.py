"""Test wrapper: run a training entry point, SIGKILL one rank right after a checkpoint.

    scripts/launch.sh 2 tests/stand_ins/kill_after_checkpoint.py scripts/train_stage2.py ARGS

``REDI_KILL_AFTER_STEP`` (the checkpoint step) and ``REDI_KILL_RANK`` (default 1)
say when and which process dies, as an out-of-memory kill or a preempted node would
do it: no exception, no clean-up. The entry point itself runs unchanged.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

from redi.train import training


def main() -> None:
    step = int(os.environ["REDI_KILL_AFTER_STEP"])
    rank = int(os.environ.get("REDI_KILL_RANK", "1"))
    save = training.Trainer._save_checkpoint

    def save_then_die(self, at_step, elapsed):
        save(self, at_step, elapsed)
        if at_step == step and self.rank == rank:
            os.kill(os.getpid(), signal.SIGKILL)

    training.Trainer._save_checkpoint = save_then_die
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
