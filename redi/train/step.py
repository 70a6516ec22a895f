"""One micro-batch's loss and log statistics, for any objective of the registry.

``micro_loss`` is a pure function of (model, batch, objective, params): the sum of
the examples' losses (the trainer normalises per optimizer step: by completion
tokens for SFT, by examples otherwise) and a ``Stats`` of what ``log.csv`` reports.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Any

import torch

from redi.train import logprobs
from redi.train.batching import Batch
from redi.train.losses import Objective, PairLogps


@dataclass
class Stats:
    """Sums over examples of one step (reduced over processes as one tensor).

    ``chosen_logps``/``rejected_logps``: sums of each example's mean per-token
    log-prob ("LogPS"; SFT: of the response); ``reward_margin``/``reward_correct``:
    sums of the implicit-reward margin and of chosen > rejected, over ``n_rewards``
    examples (objectives with rewards only); ``tokens``: tokens in the forward passes,
    ``tokens_sq``: the sum of their sequences' squared lengths (attention FLOPs).
    """

    loss: Any = 0.0
    chosen_logps: Any = 0.0
    n_chosen: Any = 0.0
    rejected_logps: Any = 0.0
    n_rejected: Any = 0.0
    reward_margin: Any = 0.0
    reward_correct: Any = 0.0
    n_rewards: Any = 0.0
    tokens: Any = 0.0
    tokens_sq: Any = 0.0

    def __add__(self, other: Stats) -> Stats:
        return Stats(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def to_tensor(self, device: Any) -> torch.Tensor:
        """One float64 tensor (a single all-reduce for every field)."""
        return torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device)
                            for v in astuple(self)])

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor) -> Stats:
        return cls(*(float(v) for v in tensor.tolist()))

    def ratio(self, num: str, den: str) -> float | None:
        """``num / den`` (e.g. the mean chosen LogPS), None where nothing was counted."""
        d = getattr(self, den)
        return float(getattr(self, num) / d) if d > 0 else None

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def micro_loss(
    module: torch.nn.Module,
    batch: Batch,
    objective: Objective,
    params: dict[str, Any],
    refs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Stats]:
    """Sum of the micro-batch's per-example losses, and its statistics (loss excluded:
    the caller normalises it). ``batch`` holds ``objective.arity`` sequences per
    example; ``refs`` [B, 2]: reference log-prob sums when the objective needs them."""
    weights = objective.sequence_weights
    if weights is not None:  # a linear loss: the LM head's gradient in the forward
        token_weights = weights(batch.lengths, params).index_select(0, batch.seq_index)
        loss_sum, token_logps = logprobs.batch_weighted_logp_sum(module, batch, token_weights)
    else:
        token_logps = logprobs.batch_token_logps(module, batch)
    sums = logprobs.sequence_sums(token_logps, batch)
    logps = PairLogps.from_sums(sums, batch.lengths, objective.arity)
    if objective.needs_ref:
        if refs is None:
            raise ValueError("this objective needs reference log-probs")
        logps.ref_chosen, logps.ref_rejected = refs[:, 0], refs[:, 1]
    if weights is None:
        loss_sum = objective.loss(logps, params).sum()
    return loss_sum, _stats(logps, sums, batch, objective, params)


def _stats(logps: PairLogps, sums: torch.Tensor, batch: Batch, objective: Objective,
           params: dict[str, Any]) -> Stats:
    mean = (sums / batch.lengths.clamp(min=1)).detach().double()
    n = mean.shape[0] // objective.arity
    stats = Stats(chosen_logps=mean[0::objective.arity].sum(), n_chosen=n, tokens=batch.n_tokens,
                  tokens_sq=batch.tokens_sq)
    if objective.arity == 2:
        stats.rejected_logps, stats.n_rejected = mean[1::2].sum(), n
    if objective.rewards is not None:
        with torch.no_grad():
            chosen, rejected = objective.rewards(logps, params)
        stats.reward_margin = (chosen - rejected).double().sum()
        stats.reward_correct = (chosen > rejected).double().sum()
        stats.n_rewards = n
    return stats
