"""The processes of a training job (``scripts/launch.sh N``): accelerate's state, also
for ``torchrun`` on a machine without CUDA."""

from __future__ import annotations

import os
from typing import Any


def distributed_state() -> Any:
    """accelerate's ``PartialState`` for this process.

    On a machine without CUDA accelerate does not pick up the torchrun world by
    itself; creating the state with a CPU backend first makes it (gloo: ``cpu=True``
    for DDP, ``backend="gloo"`` for DeepSpeed, whose accelerator is then
    ``DS_ACCELERATOR=cpu``; shared/notes/cluster-on-cpu.md).
    """
    import torch
    from accelerate import PartialState

    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return PartialState()
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return PartialState(backend="gloo")
    return PartialState(cpu=True)
