"""Test wrapper: run a training entry point, recording the items each rank trains on.

    scripts/launch.sh 2 tests/stand_ins/record_items.py scripts/train_stage2.py ARGS

Every micro-batch's item indices go, as one JSON line ``[step, [indices]]``, to
``$REDI_RECORD_ITEMS.rank<r>``. The entry point itself runs unchanged.
"""

from __future__ import annotations

import json
import os
import runpy
import sys

from redi.train import training


def main() -> None:
    prefix = os.environ["REDI_RECORD_ITEMS"]
    step_fn, forward_fn = training.Trainer._step, training.Trainer._forward

    def step(self, at_step):
        self.recorded_step = at_step
        return step_fn(self, at_step)

    def forward(self, indices):
        with open(f"{prefix}.rank{self.rank}", "a") as fh:
            fh.write(json.dumps([self.recorded_step, list(indices)]) + "\n")
        return forward_fn(self, indices)

    training.Trainer._step, training.Trainer._forward = step, forward
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
