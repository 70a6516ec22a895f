"""Stage-2 objectives: hand-computed values, REDI's gradient, and TRL's own DPO/SimPO code."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from redi.train import losses
from redi.train.losses import PairLogps, dpo_loss, redi_loss, simpo_loss


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ----------------------------------------------------------- hand-computed


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        # pair 1: -(-4/2) + a * (-6/3) = 2 - 2a ; pair 2: -(-10/5) + a * (-3/1) = 2 - 3a
        (0.5, [1.0, 0.5]),
        (1.0, [0.0, -1.0]),  # symmetric REDI
        (0.0, [2.0, 2.0]),  # SFT on the chosen trace: -mean logp
        (0.8, [0.4, -0.4]),
    ],
)
def test_redi_loss_values(alpha, expected):
    out = redi_loss(t(-4.0, -10.0), t(-6.0, -3.0), t(2, 5), t(3, 1), alpha)
    assert out.shape == (2,)
    assert out.tolist() == pytest.approx(expected, abs=1e-12)


def test_lengths_are_clamped_to_one():
    # an empty completion counts as length 1 (no division by zero)
    out = redi_loss(t(-3.0), t(-2.0), t(0), t(0), 1.0)
    assert out.tolist() == pytest.approx([3.0 - 2.0])
    out = simpo_loss(t(-3.0), t(-2.0), t(0), t(0), 1.0, 0.0)
    assert out.tolist() == pytest.approx([math.log1p(math.exp(1.0))])


def test_dpo_loss_values():
    # logits = (-10 - -11) - (-12 - -11) = 2 ; beta 0.1 -> -log sigmoid(0.2) = log(1 + e^-0.2)
    out = dpo_loss(t(-10.0, -5.0), t(-12.0, -5.0), t(-11.0, -7.0), t(-11.0, -7.0), 0.1)
    assert out.tolist() == pytest.approx([0.5981388693, math.log(2.0)], abs=1e-9)
    # a policy equal to the reference: log 2 whatever beta
    same = dpo_loss(t(-3.0), t(-9.0), t(-3.0), t(-9.0), 0.001)
    assert same.item() == pytest.approx(math.log(2.0))


def test_simpo_loss_values():
    # mean logps -6/3 = -2 and -8/2 = -4 ; beta 2, gamma 1: -log sigmoid(2 * 2 - 1) = log(1 + e^-3)
    out = simpo_loss(t(-6.0, -8.0), t(-8.0, -6.0), t(3, 2), t(2, 3), 2.0, 1.0)
    assert out.tolist() == pytest.approx([0.0485873516, math.log1p(math.exp(2 * 2 + 1))], abs=1e-9)


def test_registry_and_rewards():
    batch = PairLogps(t(-6.0, -2.0), t(-8.0, -6.0), t(3, 2), t(2, 3), t(-5.0, -2.0), t(-8.5, -7.0))
    dpo = losses.objective("dpo")
    assert dpo.needs_ref and not losses.objective("redi").needs_ref
    assert not losses.objective("simpo").needs_ref
    chosen, rejected = dpo.rewards(batch, {"beta": 0.1})
    assert chosen.tolist() == pytest.approx([-0.1, 0.0])
    assert rejected.tolist() == pytest.approx([0.05, 0.1])
    chosen, rejected = losses.objective("simpo").rewards(batch, {"beta": 2.0})
    assert chosen.tolist() == pytest.approx([-4.0, -2.0])
    assert rejected.tolist() == pytest.approx([-8.0, -4.0])
    assert losses.objective("redi").rewards is None
    out = losses.objective("redi").loss(batch, {"alpha": 0.5})
    assert out.tolist() == pytest.approx([2.0 - 2.0, 1.0 - 1.0])
    with pytest.raises(ValueError, match="unknown objective 'kto'"):
        losses.objective("kto")


def test_registry_entries():
    """SFT is an objective of one sequence per example; the pair objectives are what a
    stage-2 run may name; plot styles come from the entries."""
    sft = losses.objective("sft")
    assert (sft.arity, sft.token_mean, sft.shuffle, sft.epoch_checkpoints) == (1, True, True, True)
    assert sorted(losses.stage2_objectives()) == ["dpo", "redi", "simpo"]
    assert losses.objective("simpo").hyper_names == ("beta", "gamma", "cpo_alpha")
    # cpo_alpha is optional (default 0, Eq. 3); beta and gamma are required
    assert [h.default for h in losses.objective("simpo").hyper] == [None, None, 0.0]
    assert losses.objective("redi").label == "REDI"
    out = sft.loss(PairLogps.from_sums(t(-3.0, -5.0), t(3, 5), 1), {})
    assert out.tolist() == [3.0, 5.0]  # summed over the step, divided by its tokens
    peers = [{"objective": "dpo", "beta": b} for b in (0.1, 0.001, 0.01)]
    dpo = losses.objective("dpo")
    # β ranked among the figure's DPO runs: 0.001 -> "-", 0.01 -> "--", 0.1 -> ":"
    assert [dpo.linestyle(q, peers) for q in peers] == [":", "-", "--"]
    redi = losses.objective("redi")
    assert redi.linestyle({"objective": "redi", "alpha": 1.0}, []) == "--"
    assert redi.linestyle({"objective": "redi", "alpha": 0.8}, []) == "-"
    with pytest.raises(ValueError, match="already registered"):
        losses.register("redi", redi)


@pytest.mark.parametrize(("name", "params"), [("sft", {}), ("redi", {"alpha": 0.8}),
                                              ("redi", {"alpha": 1.0}), ("redi", {"alpha": 0.0})])
def test_declared_sequence_weights_reproduce_the_loss(name, params):
    """A linear objective's ``sequence_weights`` give its summed loss as sum_s w_s S_s;
    REDI by hand: pair 1 -(-4)/2 + 0.8 * (-6)/3 = 0.4, pair 2 -(-10)/5 + 0.8 * (-3)/1 = -0.4."""
    entry = losses.objective(name)
    sums, lengths = t(-4.0, -6.0, -10.0, -3.0), torch.tensor([2, 3, 5, 1])
    weights = entry.sequence_weights(lengths, params)
    loss = entry.loss(PairLogps.from_sums(sums, lengths, entry.arity), params).sum()
    assert weights.dtype == torch.float32  # the per-token weights of the fused pass
    assert float((weights.double() * sums).sum()) == pytest.approx(float(loss), abs=1e-6)
    if name == "redi" and params["alpha"] == 0.8:
        assert float(loss) == pytest.approx(0.0, abs=1e-12)
        assert weights.tolist() == pytest.approx([-0.5, 0.8 / 3, -0.2, 0.8])
    losses.check_sequence_weights(name, entry, params)  # what the Trainer checks first
    stale = dataclasses.replace(entry, loss=lambda b, p: 2.0 * entry.loss(b, p))
    with pytest.raises(ValueError, match=f"objective {name!r}: its sequence_weights give"):
        losses.check_sequence_weights(name, stale, params)
    # the non-linear objectives declare none: their backward recomputes the head
    assert losses.objective("dpo").sequence_weights is None
    assert losses.objective("simpo").sequence_weights is None


# -------------------------------------------------------------- gradients


def test_redi_gradient_is_weighted_cross_entropy():
    """d/dlogits of REDI (mean over pairs) == d/dlogits of the per-token cross-entropy
    weighted +1/|y_w| on chosen and -alpha/|y_l| on rejected tokens."""
    gen = torch.Generator().manual_seed(0)
    vocab, alpha = 11, 0.8
    lengths = [(5, 3), (2, 7), (4, 4)]  # (|y_w|, |y_l|) of 3 pairs
    n_tokens = sum(c + r for c, r in lengths)
    logits = torch.randn(n_tokens, vocab, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, vocab, (n_tokens,), generator=gen)

    token_logps = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
    sums, weights, pos = [], [], 0
    for c, r in lengths:
        sums += [token_logps[pos : pos + c].sum(), token_logps[pos + c : pos + c + r].sum()]
        weights += [1.0 / c] * c + [-alpha / r] * r
        pos += c + r
    sums = torch.stack(sums)
    lens = torch.tensor([n for pair in lengths for n in pair])
    loss = redi_loss(sums[0::2], sums[1::2], lens[0::2], lens[1::2], alpha).mean()
    (grad,) = torch.autograd.grad(loss, logits)

    ce = F.cross_entropy(logits, targets, reduction="none")
    weighted = (torch.tensor(weights, dtype=torch.float64) * ce).sum() / len(lengths)
    (grad_ce,) = torch.autograd.grad(weighted, logits)
    assert torch.allclose(grad, grad_ce, atol=1e-12)
    assert loss.item() == pytest.approx(weighted.item(), abs=1e-12)


def test_dpo_and_simpo_gradients_match_closed_form():
    c, r, rc, rr = t(-10.0), t(-12.0), t(-11.0), t(-11.0)
    c.requires_grad_(True)
    r.requires_grad_(True)
    dpo_loss(c, r, rc, rr, 0.1).sum().backward()
    s = torch.sigmoid(torch.tensor(-0.2, dtype=torch.float64)).item()  # 1 - sigmoid(beta * 2)
    assert c.grad.item() == pytest.approx(-0.1 * s)
    assert r.grad.item() == pytest.approx(0.1 * s)

    c, r = t(-6.0).requires_grad_(True), t(-8.0).requires_grad_(True)
    simpo_loss(c, r, t(3), t(2), 2.0, 1.0).sum().backward()
    s = torch.sigmoid(torch.tensor(-3.0, dtype=torch.float64)).item()
    assert c.grad.item() == pytest.approx(-2.0 / 3 * s)
    assert r.grad.item() == pytest.approx(2.0 / 2 * s)


# ------------------------------------------------- cross-check against TRL


def _random_sums(seed: int, batch: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 60, (2, batch), generator=gen)
    per_token = -torch.rand(2, batch, 60, generator=gen) * 3
    mask = torch.arange(60)[None, None, :] < lengths[:, :, None]
    sums = (per_token * mask).sum(-1)
    ref = sums + torch.randn(2, batch, generator=gen) * 4
    return {
        "per_token": per_token * mask,
        "mask": mask,
        "lengths": lengths,
        "sums": sums,
        "ref": ref,
    }


@pytest.mark.parametrize(("beta", "seed"), [(0.1, 0), (0.01, 1), (0.001, 2), (1.0, 3)])
def test_dpo_matches_trl(beta, seed):
    """TRL 1.16 DPOTrainer._compute_loss (sigmoid, precomputed reference) on fake model outputs."""
    from trl import DPOTrainer

    b = 8
    d = _random_sums(seed, b)
    seq = 61  # a prompt token, then 60 completion positions
    per_token = torch.cat([d["per_token"][0], d["per_token"][1]])  # [2B, 60]: chosen then rejected
    mask = torch.cat([d["mask"][0], d["mask"][1]]).long()
    completion_mask = torch.cat([torch.zeros(2 * b, 1, dtype=torch.long), mask], dim=1)
    outputs = SimpleNamespace(
        log_probs=per_token,  # masked positions are 0, as TRL's fused head returns them
        entropy=torch.zeros(2 * b, seq - 1),
        mean_logits=torch.zeros(2 * b, seq - 1),
        is_top1=torch.zeros(2 * b, seq - 1, dtype=torch.bool),
    )
    model = SimpleNamespace(training=True)
    model_fn = lambda **kwargs: outputs  # noqa: E731
    stub = SimpleNamespace(
        model=model,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        beta=beta,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
        accelerator=SimpleNamespace(
            device="cpu", gather=lambda x: x, gather_for_metrics=lambda x: x
        ),
    )
    inputs = {
        "input_ids": torch.zeros(2 * b, seq, dtype=torch.long),
        "attention_mask": torch.ones(2 * b, seq, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": d["ref"][0],
        "ref_rejected_logps": d["ref"][1],
    }
    trl_loss = DPOTrainer._compute_loss(stub, model_fn, inputs, return_outputs=False)
    ours = dpo_loss(d["sums"][0], d["sums"][1], d["ref"][0], d["ref"][1], beta)
    assert ours.shape == (b,)
    assert ours.mean().item() == pytest.approx(trl_loss.item(), rel=1e-6)
    # our implicit-reward metrics as TRL logs them
    batch = PairLogps(
        d["sums"][0], d["sums"][1], d["lengths"][0], d["lengths"][1], d["ref"][0], d["ref"][1]
    )
    chosen, rejected = losses.objective("dpo").rewards(batch, {"beta": beta})
    metrics = stub._metrics["train"]
    assert (chosen - rejected).mean().item() == pytest.approx(
        metrics["rewards/margins"][0], rel=1e-6
    )
    assert (chosen > rejected).float().mean().item() == pytest.approx(
        metrics["rewards/accuracies"][0]
    )


@pytest.mark.parametrize(("beta", "gamma", "seed"), [(2.0, 1.0, 0), (10.0, 5.0, 1), (0.5, 0.0, 2)])
def test_simpo_matches_trl(beta, gamma, seed):
    """TRL 1.16 CPOTrainer.cpo_loss with loss_type='simpo' (it takes mean log-probs)."""
    from trl.experimental.cpo import CPOTrainer

    d = _random_sums(seed, 16)
    stub = SimpleNamespace(
        alpha=0.0,
        loss_type="simpo",
        simpo_gamma=gamma,
        beta=beta,
        label_smoothing=0.0,
        accelerator=SimpleNamespace(device="cpu"),
    )
    mean_c = d["sums"][0] / d["lengths"][0]
    mean_r = d["sums"][1] / d["lengths"][1]
    trl_losses, trl_chosen, trl_rejected = CPOTrainer.cpo_loss(stub, mean_c, mean_r)
    ours = simpo_loss(d["sums"][0], d["sums"][1], d["lengths"][0], d["lengths"][1], beta, gamma)
    assert torch.allclose(ours, trl_losses, rtol=1e-6, atol=1e-7)
    batch = PairLogps(d["sums"][0], d["sums"][1], d["lengths"][0], d["lengths"][1])
    chosen, rejected = losses.objective("simpo").rewards(batch, {"beta": beta})
    assert torch.allclose(chosen, trl_chosen) and torch.allclose(rejected, trl_rejected)


def _cpo_stub(beta: float, gamma: float, cpo_alpha: float) -> SimpleNamespace:
    """The attributes TRL 1.16 CPOTrainer.get_batch_loss_metrics reads, its own methods
    bound to them (no model or tokenizer to build)."""
    from trl.experimental.cpo import CPOTrainer

    stub = SimpleNamespace(
        beta=beta, simpo_gamma=gamma, cpo_alpha=cpo_alpha, alpha=0.0, loss_type="simpo",
        label_smoothing=0.0, is_encoder_decoder=False, pad_token_id=0, aux_loss_enabled=False,
        accelerator=SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x),
        concatenated_inputs=CPOTrainer.concatenated_inputs,
        get_batch_logps=CPOTrainer.get_batch_logps,
    )
    stub.concatenated_forward = lambda model, batch: CPOTrainer.concatenated_forward(
        stub, model, batch)
    stub.cpo_loss = lambda c, r: CPOTrainer.cpo_loss(stub, c, r)
    return stub


def _pair_batch(gen: torch.Generator, vocab: int) -> dict[str, torch.Tensor]:
    """One pair (TRL's layout): a shared 3-token prompt, responses of random lengths."""
    batch = {}
    for side in ("chosen", "rejected"):
        length = int(torch.randint(5, 12, (1,), generator=gen))
        ids = torch.randint(1, vocab, (1, length), generator=gen)
        labels = ids.clone()
        labels[:, :3] = -100
        batch |= {f"{side}_input_ids": ids, f"{side}_attention_mask": torch.ones_like(ids),
                  f"{side}_labels": labels}
    return batch


@pytest.mark.parametrize(("beta", "gamma", "cpo_alpha", "seed"),
                         [(2.0, 1.0, 1.0, 0), (10.0, 5.0, 1.0, 1), (2.0, 1.0, 0.5, 2)])
def test_simpo_cpo_alpha_matches_trl_cpo_loss(beta, gamma, cpo_alpha, seed):
    """SimPO with ``cpo_alpha`` = TRL 1.16 CPOTrainer's whole loss (``loss_type='simpo'``,
    preference term + cpo_alpha x NLL of the chosen response), one pair per micro-batch
    as in the authors' runs, on random logits."""
    from trl.experimental.cpo import CPOTrainer

    gen = torch.Generator().manual_seed(seed)
    vocab = 11
    stub = _cpo_stub(beta, gamma, cpo_alpha)
    table = torch.randn(vocab, vocab, generator=gen, dtype=torch.float64)

    def model(input_ids, **kwargs):  # logits from the token alone: a random bigram model
        return SimpleNamespace(logits=table[input_ids])

    for _ in range(4):
        batch = _pair_batch(gen, vocab)
        trl_loss, metrics = CPOTrainer.get_batch_loss_metrics(stub, model, batch)
        sums, lengths = [], []
        for side in ("chosen", "rejected"):
            labels = batch[f"{side}_labels"][0, 1:]
            logps = torch.log_softmax(table[batch[f"{side}_input_ids"][0, :-1]], -1)
            mask = labels != -100
            sums.append(logps[mask].gather(-1, labels[mask, None]).sum())
            lengths.append(mask.sum())
        ours = losses.objective("simpo").loss(
            PairLogps(sums[0][None], sums[1][None], lengths[0][None], lengths[1][None]),
            {"beta": beta, "gamma": gamma, "cpo_alpha": cpo_alpha})
        assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-9)
        assert metrics["nll_loss"] == pytest.approx(-(sums[0] / lengths[0]).item(), rel=1e-9)


def test_simpo_cpo_alpha_zero_is_eq3():
    """cpo_alpha 0 (the default, also when the run leaves it out) is paper Eq. 3; 1 adds
    the chosen response's mean NLL: pair 1 mean logp -6/3 = -2 -> +2."""
    batch = PairLogps(t(-6.0, -8.0), t(-8.0, -6.0), t(3, 2), t(2, 3))
    simpo = losses.objective("simpo")
    eq3 = simpo_loss(t(-6.0, -8.0), t(-8.0, -6.0), t(3, 2), t(2, 3), 2.0, 1.0)
    assert torch.equal(simpo.loss(batch, {"beta": 2.0, "gamma": 1.0}), eq3)
    with_nll = simpo.loss(batch, {"beta": 2.0, "gamma": 1.0, "cpo_alpha": 1.0})
    assert torch.allclose(with_nll - eq3, t(2.0, 4.0))
