"""The optimizer every training run uses (paper appendix C.3/C.4): AdamW without weight
decay on biases and norm weights (as HF Trainer), 10 % linear warmup then linear
decay to 0 (``redi.workflow.config.OPTIMIZER`` holds the numbers), and the update norm
measured without a second copy of the model."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


def make_optimizer(parameters: Iterable[torch.nn.Parameter],
                   params: dict[str, Any]) -> torch.optim.AdamW:
    """AdamW over ``parameters`` with the run's LR, betas, eps and weight decay."""
    decay, no_decay = [], []
    for param in parameters:
        (no_decay if param.ndim < 2 else decay).append(param)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": params["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=params["lr"],
        betas=(params["adam_beta1"], params["adam_beta2"]),
        eps=params["adam_eps"],
    )


def linear_warmup_decay(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """HF ``get_linear_schedule_with_warmup`` with ``ceil(ratio * total)`` warmup steps."""
    warmup = math.ceil(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                   warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(total_steps, warmup_ratio))


def step_with_update_norm(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """``optimizer.step()`` one parameter at a time; returns ``||theta_new - theta_old||``.

    AdamW updates every parameter from its own gradient and state only, so stepping
    them one by one gives the same parameters as one step, while only ONE
    parameter's old value is held at a time (the largest, the embedding, instead of
    the whole model: 0.9 GB instead of 6 GB of fp32 copies at 1.5B parameters).
    """
    groups = optimizer.param_groups
    device = next(p.device for g in groups for p in g["params"])
    squared = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for group in groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                optimizer.param_groups = [{**group, "params": [param]}]
                before = param.detach().clone()
                optimizer.step()
                squared += (param.detach() - before).double().pow(2).sum()
                del before
    finally:
        optimizer.param_groups = groups
    return squared
