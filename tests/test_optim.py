"""The optimizer (redi.train.optim): AdamW groups, the LR schedule, the update norm."""

from __future__ import annotations

import pytest
import torch

from redi.train import optim
from redi.workflow.config import OPTIMIZER


def model_with_grads(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 8),
                                torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    out = model(torch.randint(0, 50, (6,))).pow(2).sum()
    out.backward()
    model[1].weight.grad = None  # a parameter without a gradient is left alone
    return model


def test_adamw_groups_follow_the_config():
    params = {**OPTIMIZER, "lr": 1e-3}
    opt = optim.make_optimizer(model_with_grads().parameters(), params)
    decay, no_decay = opt.param_groups
    assert [p.ndim for p in decay["params"]] == [2, 2, 2]  # embedding, two linear weights
    assert all(p.ndim == 1 for p in no_decay["params"])  # biases and the norm
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (OPTIMIZER["weight_decay"], 0.0)
    assert decay["betas"] == (OPTIMIZER["adam_beta1"], OPTIMIZER["adam_beta2"])
    assert decay["eps"] == OPTIMIZER["adam_eps"] and decay["lr"] == 1e-3


@pytest.mark.parametrize("steps", [1, 3])
def test_stepping_one_parameter_at_a_time_equals_one_step(steps):
    """Same parameters, bit for bit, as a plain step; the norm equals a full-copy diff."""
    params = {**OPTIMIZER, "lr": 0.05, "weight_decay": 0.1}
    plain, by_param = model_with_grads(), model_with_grads()
    opt_plain = optim.make_optimizer(plain.parameters(), params)
    opt_by_param = optim.make_optimizer(by_param.parameters(), params)
    for _ in range(steps):
        before = [p.detach().clone() for p in plain.parameters()]
        opt_plain.step()
        expected = sum(float((p.detach() - b).double().pow(2).sum())
                       for p, b in zip(plain.parameters(), before, strict=True))
        squared = optim.step_with_update_norm(opt_by_param)
        assert float(squared) == pytest.approx(expected, rel=1e-12)
        assert expected > 0
        for a, b in zip(plain.parameters(), by_param.parameters(), strict=True):
            assert torch.equal(a, b)
    assert len(opt_by_param.param_groups) == 2  # restored
    assert opt_by_param.state_dict()["state"].keys() == opt_plain.state_dict()["state"].keys()


def test_linear_warmup_decay_matches_hf():
    from transformers import get_linear_schedule_with_warmup

    total = 33
    factor = optim.linear_warmup_decay(total, 0.1)  # ceil(3.3) = 4 warmup steps
    assert [factor(s) for s in range(6)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 28 / 29])
    assert factor(total) == 0.0
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    hf = get_linear_schedule_with_warmup(opt, num_warmup_steps=4, num_training_steps=total)
    hf_lrs = []
    for _ in range(total):
        hf_lrs.append(hf.get_last_lr()[0])
        opt.step()
        hf.step()
    assert hf_lrs == pytest.approx([factor(s) for s in range(total)])


