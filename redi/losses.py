"""Stage-2 objectives as small pure functions of per-sequence tensors.

Every ``*_logps`` argument is the SUM of per-token log-probs over a
completion's tokens (end tokens included); ``*_lengths`` are the completion
token counts (clamped to >= 1). Every loss returns per-pair losses [B]; the
trainer averages them over the pairs of an optimizer step.

Adding an objective = one loss function here + one ``OBJECTIVES`` entry + the
``objective`` enum in ``config.schema.yaml``.

The module imports torch lazily: Snakemake reads ``OBJECTIVES[...].needs_ref``
to plan the reference log-prob jobs and must not pay torch's import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    Rewards = tuple[torch.Tensor, torch.Tensor]  # (chosen, rejected) implicit rewards


def _logsigmoid(x: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    return F.logsigmoid(x)


def _mean_logps(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return logps / lengths.clamp(min=1).to(logps.dtype)


def redi_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """REDI (paper Eq. 5): ``-S_w/|y_w| + alpha * S_l/|y_l|``.

    ``alpha = 1`` is symmetric REDI (Eq. 4), ``alpha = 0`` SFT on the chosen trace.
    """
    return -_mean_logps(chosen_logps, chosen_lengths) + alpha * _mean_logps(
        rejected_logps, rejected_lengths
    )


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DPO, sigmoid loss on sum log-probs (paper Eq. 2)."""
    logits = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    return -_logsigmoid(beta * logits)


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float,
    gamma: float,
) -> torch.Tensor:
    """SimPO (paper Eq. 3) on mean log-probs with margin ``gamma``; no NLL term."""
    margin = _mean_logps(chosen_logps, chosen_lengths) - _mean_logps(
        rejected_logps, rejected_lengths
    )
    return -_logsigmoid(beta * margin - gamma)


@dataclass
class PairLogps:
    """Per-pair inputs of an objective (all [B])."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None

    @classmethod
    def interleaved(cls, sums: torch.Tensor, lengths: torch.Tensor) -> PairLogps:
        """From one forward over [chosen_0, rejected_0, chosen_1, ...] (the stage-2 layout)."""
        return cls(sums[0::2], sums[1::2], lengths[0::2], lengths[1::2])


@dataclass(frozen=True)
class Objective:
    """A registry entry: the loss, whether it needs reference log-probs, and its
    implicit rewards (chosen, rejected) for the margin/accuracy columns, if any."""

    loss: Callable[[PairLogps, dict[str, Any]], torch.Tensor]
    needs_ref: bool = False
    rewards: Callable[[PairLogps, dict[str, Any]], Rewards] | None = None


def _dpo_rewards(b: PairLogps, p: dict[str, Any]) -> Rewards:
    return p["beta"] * (b.chosen - b.ref_chosen), p["beta"] * (b.rejected - b.ref_rejected)


def _simpo_rewards(b: PairLogps, p: dict[str, Any]) -> Rewards:
    return (
        p["beta"] * _mean_logps(b.chosen, b.chosen_lengths),
        p["beta"] * _mean_logps(b.rejected, b.rejected_lengths),
    )


OBJECTIVES: dict[str, Objective] = {
    "redi": Objective(
        loss=lambda b, p: redi_loss(
            b.chosen, b.rejected, b.chosen_lengths, b.rejected_lengths, p["alpha"]
        ),
    ),
    "dpo": Objective(
        loss=lambda b, p: dpo_loss(b.chosen, b.rejected, b.ref_chosen, b.ref_rejected, p["beta"]),
        needs_ref=True,
        rewards=_dpo_rewards,
    ),
    "simpo": Objective(
        loss=lambda b, p: simpo_loss(
            b.chosen, b.rejected, b.chosen_lengths, b.rejected_lengths, p["beta"], p["gamma"]
        ),
        rewards=_simpo_rewards,
    ),
}


def objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; known: {sorted(OBJECTIVES)}") from None


def needs_reference(name: str) -> bool:
    return objective(name).needs_ref
