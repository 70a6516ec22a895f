"""``redi.train.step.micro_loss``: the fused LM-head path of a linear objective (SFT, REDI) gives
the loss, statistics and parameter gradients of the plain per-token path."""

from __future__ import annotations

import dataclasses

import pytest

from redi.train import batching, logprobs, losses
from redi.train.step import micro_loss
from tests.support.models import sequences, tiny_model


def loss_and_grads(objective, params, packed):
    model = tiny_model("sdpa")
    module = logprobs.TokenLogps(model, chunk_tokens=8)  # several chunks per micro-batch
    seqs = sequences()[: 4 if objective.arity == 2 else 5]
    batch = batching.make_batch(seqs, packed=packed, pad_id=0)
    loss, stats = micro_loss(module, batch, objective, params)
    (2.5 * loss).backward()
    return loss.item(), stats, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize(("name", "params"), [("sft", {}), ("redi", {"alpha": 0.8})])
def test_fused_linear_objective_equals_plain(name, params, packed):
    fused = losses.objective(name)
    plain = dataclasses.replace(fused, sequence_weights=None)
    loss, stats, grads = loss_and_grads(fused, params, packed)
    ref_loss, ref_stats, ref_grads = loss_and_grads(plain, params, packed)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    for field in ("chosen_logps", "rejected_logps", "n_chosen", "tokens"):
        assert float(getattr(stats, field)) == pytest.approx(
            float(getattr(ref_stats, field)), rel=1e-6), field
    for key, ref in ref_grads.items():  # fp32 rounding only (measured <= 2e-7 of the max)
        err = float((grads[key] - ref).abs().max())
        assert err <= 1e-6 * float(ref.abs().max()) + 1e-8, (key, err)
