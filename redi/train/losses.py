"""Stage-2 objectives as small pure functions of per-sequence tensors.

Every ``*_logps`` argument is the SUM of per-token log-probs over a
completion's tokens (end tokens included); ``*_lengths`` are the completion
token counts (clamped to >= 1). Every loss returns per-pair losses [B]; the
trainer averages them over the pairs of an optimizer step.

Adding an objective = one loss function here + one ``OBJECTIVES`` entry (label,
hyper-parameters, plot style): the config schema, run labels, figures and the
trainer read everything else from the entry. SFT is an objective too (arity 1).

The module imports torch lazily: Snakemake reads ``OBJECTIVES[...].needs_ref``
to plan the reference log-prob jobs and must not pay torch's import time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    cpo_alpha: float = 0.0,
) -> torch.Tensor:
    """SimPO (paper Eq. 3) on mean log-probs with margin ``gamma``, plus ``cpo_alpha``
    times the chosen response's mean NLL.

    ``cpo_alpha = 0`` is Eq. 3. TRL's CPOTrainer (the authors' SimPO trainer) adds
    ``cpo_alpha`` (default 1) times the token-mean NLL of the micro-batch's chosen
    responses; with one pair per micro-batch, the authors' setting, that is this
    per-pair term.
    """
    chosen_mean = _mean_logps(chosen_logps, chosen_lengths)
    margin = chosen_mean - _mean_logps(rejected_logps, rejected_lengths)
    loss = -_logsigmoid(beta * margin - gamma)
    return loss - cpo_alpha * chosen_mean if cpo_alpha else loss


@dataclass
class PairLogps:
    """Per-example inputs of an objective (all [B]). ``rejected*`` is None for
    objectives of one sequence per example (SFT)."""

    chosen: torch.Tensor
    rejected: torch.Tensor | None
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor | None
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None

    @classmethod
    def interleaved(cls, sums: torch.Tensor, lengths: torch.Tensor) -> PairLogps:
        """From one forward over [chosen_0, rejected_0, chosen_1, ...] (the stage-2 layout)."""
        return cls(sums[0::2], sums[1::2], lengths[0::2], lengths[1::2])

    @classmethod
    def from_sums(cls, sums: torch.Tensor, lengths: torch.Tensor, arity: int) -> PairLogps:
        """From one forward over the examples' sequences (``arity`` per example)."""
        if arity == 2:
            return cls.interleaved(sums, lengths)
        return cls(sums, None, lengths, None)


def sft_sequence_weights(lengths: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """SFT's loss ``-sum_s S_s``: weight -1 on every sequence."""
    return -lengths.new_ones(lengths.shape).float()


def redi_sequence_weights(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """REDI's loss as ``sum_s w_s S_s`` over [chosen_0, rejected_0, ...]:
    ``w = -1/|y_w|`` on chosen, ``alpha/|y_l|`` on rejected sequences."""
    weights = 1.0 / lengths.clamp(min=1).float()
    weights[0::2] *= -1.0
    weights[1::2] *= alpha
    return weights


@dataclass(frozen=True)
class HyperParam:
    """One hyper-parameter of an objective: its config key (``runs.<name>.<key>``), the
    symbol in run labels and its JSON Schema (checked by ``redi.workflow.config``). ``default``
    None: every run must set it; otherwise a run may leave it out (the loss then uses
    the default; run labels show it only where set)."""

    name: str
    symbol: str
    schema: Mapping[str, Any]
    default: Any = None


# what a figure needs to draw one run: its spec and those of the runs it is drawn with
LineStyle = Callable[[Mapping[str, Any], Sequence[Mapping[str, Any]]], str]
LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Objective:
    """A registry entry: everything the workflow needs to know about one objective.

    ``loss(batch, params)`` gives per-example losses [B] from sums of per-token
    log-probs; ``arity`` is the number of sequences per example (1: a response, the
    SFT data; 2: chosen and rejected, the pairs); ``token_mean`` normalises a step
    by its completion tokens (SFT) instead of its examples; ``shuffle`` draws a seeded
    order per epoch (SFT) instead of the file order (stage 2) under ``data_order``
    ``file``; ``authors`` (the paper preset's stage 2) draws the authors' Trainer's
    permutation for any objective (``redi.train.train_data.run_plan``);
    ``epoch_checkpoints`` saves at every epoch end. ``rewards`` gives the implicit
    rewards (chosen, rejected) of the margin/accuracy log columns, if any.
    ``sequence_weights(lengths, params)``, for a loss LINEAR in the sums, gives the
    per-sequence weights ``w`` (the forward's layout) with ``loss(...).sum() == sum_s
    w_s S_s``: the trainer then computes the LM head's gradient in the forward pass
    (``redi.train.logprobs.chunked_weighted_logp_sum``, one LM-head matmul fewer); None for
    a non-linear loss (DPO, SimPO: the backward recomputes the head).
    ``linestyle(spec, peers)`` styles the run's curves in figures; ``style_keys`` are the
    spec keys it reads from the peers (the other runs of the figure).
    """

    label: str
    loss: Callable[[PairLogps, dict[str, Any]], torch.Tensor]
    hyper: tuple[HyperParam, ...] = ()
    arity: int = 2
    needs_ref: bool = False
    rewards: Callable[[PairLogps, dict[str, Any]], Rewards] | None = None
    token_mean: bool = False
    shuffle: bool = False
    epoch_checkpoints: bool = False
    sequence_weights: Callable[[torch.Tensor, dict[str, Any]], torch.Tensor] | None = None
    linestyle: LineStyle = lambda spec, peers: "-"  # noqa: E731
    style_keys: tuple[str, ...] = ()

    @property
    def hyper_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hyper)


def _dpo_rewards(b: PairLogps, p: dict[str, Any]) -> Rewards:
    return p["beta"] * (b.chosen - b.ref_chosen), p["beta"] * (b.rejected - b.ref_rejected)


def _simpo_rewards(b: PairLogps, p: dict[str, Any]) -> Rewards:
    return (
        p["beta"] * _mean_logps(b.chosen, b.chosen_lengths),
        p["beta"] * _mean_logps(b.rejected, b.rejected_lengths),
    )


def ranked_dashes(key: str) -> LineStyle:
    """A dash pattern per distinct value of ``key`` among the figure's runs of the same
    objective (DPO/SimPO: stronger regularisation, larger β, sparser dashes)."""

    def style(spec: Mapping[str, Any], peers: Sequence[Mapping[str, Any]]) -> str:
        values = sorted({q[key] for q in peers if q["objective"] == spec["objective"]})
        return LINESTYLES[values.index(spec[key]) % len(LINESTYLES)]

    return style


ALPHA = HyperParam("alpha", "α", {"type": "number", "minimum": 0, "maximum": 1})
BETA = HyperParam("beta", "β", {"type": "number", "exclusiveMinimum": 0})
GAMMA = HyperParam("gamma", "γ", {"type": "number", "minimum": 0})
# SimPO's NLL weight: 0 = paper Eq. 3, 1 = TRL CPOTrainer's default (the authors' trainer;
# which one the paper's runs used is unknown)
CPO_ALPHA = HyperParam("cpo_alpha", "λ_NLL", {"type": "number", "minimum": 0}, default=0.0)

OBJECTIVES: dict[str, Objective] = {
    # stage 1: completion-only NLL, a token mean over the step's completion tokens (over
    # all processes, or per process as the authors: `redi.train.training.loss_divisor`)
    "sft": Objective(
        label="SFT", loss=lambda b, p: -b.chosen, arity=1, token_mean=True, shuffle=True,
        epoch_checkpoints=True, sequence_weights=sft_sequence_weights,
    ),
    "redi": Objective(
        label="REDI",
        loss=lambda b, p: redi_loss(
            b.chosen, b.rejected, b.chosen_lengths, b.rejected_lengths, p["alpha"]
        ),
        hyper=(ALPHA,),
        sequence_weights=lambda lengths, p: redi_sequence_weights(lengths, p["alpha"]),
        # symmetric REDI (α = 1) dashed, as in the paper's Fig. 6
        linestyle=lambda spec, peers: "--" if spec.get("alpha", 0.0) >= 1.0 else "-",
    ),
    "dpo": Objective(
        label="DPO",
        loss=lambda b, p: dpo_loss(b.chosen, b.rejected, b.ref_chosen, b.ref_rejected, p["beta"]),
        hyper=(BETA,),
        needs_ref=True,
        rewards=_dpo_rewards,
        linestyle=ranked_dashes("beta"),
        style_keys=("beta",),
    ),
    "simpo": Objective(
        label="SimPO",
        loss=lambda b, p: simpo_loss(
            b.chosen, b.rejected, b.chosen_lengths, b.rejected_lengths, p["beta"], p["gamma"],
            p.get("cpo_alpha", CPO_ALPHA.default),
        ),
        hyper=(BETA, GAMMA, CPO_ALPHA),
        rewards=_simpo_rewards,
        linestyle=ranked_dashes("beta"),
        style_keys=("beta",),
    ),
}


def objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; known: {sorted(OBJECTIVES)}") from None


def register(name: str, entry: Objective) -> None:
    """Add an objective (the config's ``runs.<run>.objective`` may then name it)."""
    if name in OBJECTIVES:
        raise ValueError(f"objective {name!r} is already registered")
    OBJECTIVES[name] = entry


def check_sequence_weights(name: str, entry: Objective, params: dict[str, Any]) -> None:
    """An objective's declared ``sequence_weights`` must reproduce its ``loss``: checked on
    random sums before a run trains with them (a replaced loss with stale weights would
    otherwise train the old objective)."""
    if entry.sequence_weights is None:
        return
    import torch

    gen = torch.Generator().manual_seed(0)
    n = 4 * entry.arity
    sums = -torch.rand(n, generator=gen, dtype=torch.float64) * 50
    lengths = torch.randint(1, 40, (n,), generator=gen)
    expected = float(entry.loss(PairLogps.from_sums(sums, lengths, entry.arity), params).sum())
    got = float((entry.sequence_weights(lengths, params).double() * sums).sum())
    if not abs(got - expected) <= 1e-4 * max(1.0, abs(expected)):
        raise ValueError(f"objective {name!r}: its sequence_weights give {got!r}, its loss "
                         f"{expected!r} on the same sums; fix one, or set sequence_weights=None")


def stage2_objectives() -> list[str]:
    """Objectives a stage-2 run (``runs:``) may use: those trained on the pairs."""
    return [name for name, o in OBJECTIVES.items() if o.arity == 2]
