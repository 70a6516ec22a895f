"""Chunked log-probs (values, gradients, memory); packed/padded layouts vs one sequence alone."""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from redi.train import batching, logprobs
from tests.support.models import reference_logps, sequences, tiny_model


def naive_token_logps(hidden, weight, targets):
    return torch.log_softmax(hidden @ weight.T, dim=-1).gather(-1, targets[:, None]).squeeze(-1)


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_chunked_equals_naive(chunk):
    gen = torch.Generator().manual_seed(0)
    n, h, v = 300, 24, 257
    hidden = torch.randn(n, h, generator=gen, requires_grad=True)
    weight = torch.randn(v, h, generator=gen, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=gen)
    upstream = torch.randn(n, generator=gen)

    ref = naive_token_logps(hidden, weight, targets)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (hidden, weight))
    out = logprobs.chunked_token_logps(hidden, weight, targets, chunk_tokens=chunk)
    grads = torch.autograd.grad((out * upstream).sum(), (hidden, weight))

    assert out.dtype == torch.float32 and out.shape == (n,)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, r, atol=1e-5, rtol=1e-5)


def test_chunked_bf16_inputs_give_fp32_logps():
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(40, 16, generator=gen).bfloat16()
    weight = torch.randn(50, 16, generator=gen).bfloat16()
    targets = torch.randint(0, 50, (40,), generator=gen)
    out = logprobs.chunked_token_logps(hidden, weight, targets, chunk_tokens=16)
    ref = naive_token_logps(hidden.float(), weight.float(), targets)
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=0.05)  # bf16 logits, fp32 log-softmax


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def test_chunked_never_materialises_tokens_x_vocab():
    n, h, v, chunk = 2048, 32, 1000, 128
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=gen, requires_grad=True)
    weight = torch.randn(v, h, generator=gen, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=gen)
    sizes = {}
    for name, fn in [
        ("naive", lambda: naive_token_logps(hidden, weight, targets)),
        (
            "chunked",
            lambda: logprobs.chunked_token_logps(hidden, weight, targets, chunk_tokens=chunk),
        ),
    ]:
        with LargestTensor() as mode:
            fn().sum().backward()
        sizes[name] = mode.largest
    assert sizes["naive"] == n * v * 4  # the full fp32 [tokens, vocab] logits: 8.2 MB
    assert sizes["chunked"] == chunk * v * 4  # one [chunk, vocab] block: 0.5 MB


def profiled_peak_bytes(fn) -> int:
    """Peak CPU memory allocated by torch while ``fn`` runs (profiler memory timeline)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # export_memory_timeline is marked deprecated
        with profile(
            activities=[ProfilerActivity.CPU],
            profile_memory=True,
            record_shapes=True,
            with_stack=True,
        ) as prof:
            fn()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "timeline.json"
            prof.export_memory_timeline(str(path), device="cpu")
            _, sizes = json.loads(path.read_text())
    return max(sum(s) for s in sizes)


def test_chunked_peak_memory_is_lower():
    n, h, v, chunk = 2048, 32, 2048, 128
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=gen, requires_grad=True)
    weight = torch.randn(v, h, generator=gen, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=gen)
    naive = profiled_peak_bytes(lambda: naive_token_logps(hidden, weight, targets).sum().backward())
    chunked = profiled_peak_bytes(
        lambda: (
            logprobs.chunked_token_logps(hidden, weight, targets, chunk_tokens=chunk)
            .sum()
            .backward()
        )
    )
    logits = n * v * 4  # 16 MiB of fp32 logits
    assert naive >= 2 * logits  # logits + the saved log-softmax (measured 48.5 MiB)
    assert chunked <= 6 * 2**20  # 1 MiB chunks (measured 5.6 MiB)
    assert chunked * 5 < naive


# ------------------------------------------------------------ model layouts


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("train_mode", [True, False])
def test_layout_equals_one_sequence_at_a_time(attn, packed, train_mode):
    model = tiny_model(attn)
    model.train(train_mode)  # eval mode is where a cache would break packing
    module = logprobs.TokenLogps(model, chunk_tokens=8)
    seqs = sequences()
    batch = batching.make_batch(seqs, packed=packed, pad_id=0)
    assert batch.attention_mask is None
    if packed:
        assert batch.input_ids.shape == (1, sum(len(s.ids) for s in seqs))  # no padding at all
    else:
        assert batch.input_ids.shape == (len(seqs), max(len(s.ids) for s in seqs))
    with torch.no_grad():
        out = logprobs.batch_token_logps(module, batch)
        expected = torch.cat([reference_logps(model, s) for s in seqs])
    assert out.shape == (sum(s.n_completion for s in seqs),)
    assert torch.allclose(out, expected, atol=1e-5, rtol=0)
    sums = logprobs.sequence_sums(out, batch)
    start = 0
    for k, s in enumerate(seqs):
        assert sums[k].item() == pytest.approx(
            expected[start : start + s.n_completion].sum().item(), abs=1e-4
        )
        start += s.n_completion
    assert batch.lengths.tolist() == [s.n_completion for s in seqs]
    assert batch.n_tokens == sum(len(s.ids) for s in seqs)


def test_packed_and_padded_gradients_agree():
    grads = []
    for packed in (True, False):
        model = tiny_model("sdpa")
        module = logprobs.TokenLogps(model, chunk_tokens=8)
        batch = batching.make_batch(sequences(), packed=packed, pad_id=0)
        logprobs.batch_token_logps(module, batch).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_packed_position_ids_restart():
    seqs = sequences()[:3]
    batch = batching.make_batch(seqs, packed=True, pad_id=0)
    lengths = [len(s.ids) for s in seqs]
    assert batch.position_ids[0].tolist() == [i for n in lengths for i in range(n)]
    # targets are the completion tokens, predicted from the position just before
    flat = batch.input_ids.flatten()
    assert torch.equal(flat[batch.gather_index + 1], batch.targets)
    padded = batching.make_batch(seqs, packed=False, pad_id=0)
    assert torch.equal(padded.input_ids.flatten()[padded.gather_index + 1], padded.targets)
    assert torch.equal(padded.targets, batch.targets)


# --------------------------------------------------------------- entropy


def naive_entropy(hidden, weight):
    logp = torch.log_softmax(hidden @ weight.T, dim=-1)
    return -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_chunked_entropy_equals_naive(chunk):
    gen = torch.Generator().manual_seed(1)
    n, h, v = 300, 24, 257
    hidden = torch.randn(n, h, generator=gen) * 3  # peaked and flat rows alike
    weight = torch.randn(v, h, generator=gen)
    targets = torch.randint(0, v, (n,), generator=gen)
    logps, entropy = logprobs.chunked_token_entropy(hidden, weight, targets, chunk_tokens=chunk)
    assert float((entropy - naive_entropy(hidden, weight)).abs().max()) <= 1e-5
    assert torch.allclose(logps, naive_token_logps(hidden, weight, targets), atol=1e-5)
    assert float(entropy.min()) >= 0 and float(entropy.max()) <= math.log(v) + 1e-5


def test_entropy_by_hand():
    """Uniform over 4 tokens: log 4; one certain token: 0."""
    weight = torch.eye(4)
    hidden = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1000.0, 0.0, 0.0, 0.0]])
    _, entropy = logprobs.chunked_token_entropy(hidden, weight, torch.tensor([0, 0]))
    assert entropy.tolist() == pytest.approx([math.log(4), 0.0], abs=1e-6)


def test_chunked_entropy_peak_memory_is_lower():
    n, h, v, chunk = 2048, 32, 2048, 128
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=gen)
    weight = torch.randn(v, h, generator=gen)
    targets = torch.randint(0, v, (n,), generator=gen)
    with torch.no_grad():
        naive = profiled_peak_bytes(lambda: naive_entropy(hidden, weight))
        chunked = profiled_peak_bytes(
            lambda: logprobs.chunked_token_entropy(hidden, weight, targets, chunk_tokens=chunk))
    logits = n * v * 4  # 16 MiB of fp32 logits
    assert naive >= logits and chunked * 5 < naive


def test_batch_entropy_matches_the_model(tmp_path):
    """Teacher-forced entropy per completion token from the model's own full logits."""
    model = tiny_model("sdpa")
    module = logprobs.TokenLogps(model, chunk_tokens=8)
    seqs = sequences()
    batch = batching.make_batch(seqs, packed=False, pad_id=0)
    with torch.no_grad():
        logps, entropy = logprobs.batch_token_entropy(module, batch)
        expected = []
        for s in seqs:
            logits = model(input_ids=torch.tensor([s.ids]), use_cache=False).logits[0].float()
            expected.append(naive_entropy_from_logits(logits[s.n_prompt - 1 : -1]))
        assert torch.allclose(logps, logprobs.batch_token_logps(module, batch), atol=1e-6)
    assert torch.allclose(entropy, torch.cat(expected), atol=1e-5)


def naive_entropy_from_logits(logits):
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)


# ------------------------------------------- custom backward, fused linear loss


def head_inputs(n=300, h=24, v=257, seed=4, bias=True):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen, requires_grad=True)
    weight = torch.randn(v, h, generator=gen, requires_grad=True)
    b = torch.randn(v, generator=gen, requires_grad=True) if bias else None
    targets = torch.randint(0, v, (n,), generator=gen)
    upstream = torch.randn(n, generator=gen)
    return hidden, weight, b, targets, upstream


def naive_logp_entropy(hidden, weight, bias, targets):
    logp = torch.log_softmax(F_linear(hidden, weight, bias), dim=-1)
    return logp.gather(-1, targets[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


def F_linear(hidden, weight, bias):
    return torch.nn.functional.linear(hidden, weight, bias)


def grads_of(loss, tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None])


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_entropy_gradients_equal_naive(chunk):
    """Both outputs in the loss: the backward's entropy term -p (log p + H) as autograd's."""
    hidden, weight, bias, targets, upstream = head_inputs()
    up2 = torch.linspace(-1, 1, hidden.shape[0])
    ref_lp, ref_h = naive_logp_entropy(hidden, weight, bias, targets)
    ref = grads_of((ref_lp * upstream + ref_h * up2).sum(), (hidden, weight, bias))
    lp, ent = logprobs.chunked_token_entropy(hidden, weight, targets, bias, chunk_tokens=chunk)
    got = grads_of((lp * upstream + ent * up2).sum(), (hidden, weight, bias))
    for g, r in zip(got, ref, strict=True):
        assert torch.allclose(g, r, atol=1e-5, rtol=1e-5)
    # the entropy alone (no log-prob term): the log-prob gradient arrives as None
    _, ref_h = naive_logp_entropy(hidden, weight, bias, targets)
    ref = grads_of((ref_h * up2).sum(), (hidden, weight))
    _, ent = logprobs.chunked_token_entropy(hidden, weight, targets, bias, chunk_tokens=chunk)
    for g, r in zip(grads_of((ent * up2).sum(), (hidden, weight)), ref, strict=True):
        assert torch.allclose(g, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [7, 64, 1000])
@pytest.mark.parametrize("bias", [True, False])
def test_weighted_sum_equals_naive(chunk, bias):
    hidden, weight, b, targets, weights = head_inputs(bias=bias)
    ref_lp, _ = naive_logp_entropy(hidden, weight, b, targets)
    ref_total = (ref_lp * weights).sum()
    ref = grads_of(3.0 * ref_total, (hidden, weight, b))
    total, values = logprobs.chunked_weighted_logp_sum(hidden, weight, targets, weights, b,
                                                       chunk_tokens=chunk)
    assert not values.requires_grad and torch.allclose(values, ref_lp, atol=1e-5)
    assert total.item() == pytest.approx(ref_total.item(), abs=1e-4)
    got = grads_of(3.0 * total, (hidden, weight, b))  # the upstream scale reaches every grad
    for g, r in zip(got, ref, strict=True):  # |grad| up to ~40: fp32 rounding ~3e-5
        assert float((g - r).abs().max()) <= 1e-6 * float(r.abs().max()) + 1e-5


def test_weighted_sum_without_grad_and_empty():
    hidden, weight, _, targets, weights = head_inputs(bias=False)
    with torch.no_grad():
        total, values = logprobs.chunked_weighted_logp_sum(hidden, weight, targets, weights,
                                                           chunk_tokens=64)
    assert total.item() == pytest.approx(float((values * weights).sum()))
    empty = torch.zeros(0, hidden.shape[1], requires_grad=True)
    total, values = logprobs.chunked_weighted_logp_sum(
        empty, weight, targets[:0], weights[:0], chunk_tokens=64)
    assert total.item() == 0.0 and values.shape == (0,)
    total.backward()
    assert float(weight.grad.abs().max()) == 0.0


def test_half_weights_accumulate_in_fp32():
    """bf16 weights: the weight gradient is summed over chunks in fp32 and cast once,
    so it is as close to the fp32 truth as one bf16 rounding."""
    hidden, weight, _, targets, upstream = head_inputs(n=512, bias=False)
    h16 = hidden.detach().bfloat16().requires_grad_()
    w16 = weight.detach().bfloat16().requires_grad_()
    ref_lp, _ = naive_logp_entropy(h16.float(), w16.float(), None, targets)
    h32, w32 = h16.detach().float().requires_grad_(), w16.detach().float().requires_grad_()
    lp32, _ = naive_logp_entropy(h32, w32, None, targets)
    ref = grads_of((lp32 * upstream).sum(), (h32, w32))
    out = logprobs.chunked_token_logps(h16, w16, targets, chunk_tokens=16)
    got = grads_of((out * upstream).sum(), (h16, w16))
    assert out.dtype == torch.float32 and got[1].dtype == torch.bfloat16
    for g, r in zip(got, ref, strict=True):
        err = float((g.float() - r).abs().max() / r.abs().max())
        assert err < 0.05  # bf16 logits and gradient matmuls (measured ~1e-2)
    assert torch.allclose(out, ref_lp, atol=0.1)


def test_autocast_runs_the_head_in_the_autocast_dtype():
    hidden, weight, _, targets, upstream = head_inputs(n=64, bias=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = logprobs.chunked_token_logps(hidden, weight, targets, chunk_tokens=16)
        naive = torch.log_softmax(F_linear(hidden, weight, None).float(), -1)
        naive = naive.gather(-1, targets[:, None]).squeeze(-1)
    assert out.dtype == torch.float32
    assert torch.allclose(out, naive, atol=1e-6)  # the same bf16 matmul, then fp32
    got = grads_of((out * upstream).sum(), (hidden, weight))
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32


@pytest.mark.parametrize("fn", ["logps", "weighted"])
def test_one_weight_gradient_buffer(fn):
    """Peak memory: one [vocab, hidden] gradient and a few chunk blocks; checkpointing
    each chunk held a second, per-chunk weight gradient (2x) before accumulating it."""
    n, h, v, chunk = 512, 256, 4096, 32
    hidden, weight, _, targets, upstream = head_inputs(n, h, v, bias=False)
    grad_w = v * h * 4  # 4 MiB
    block = chunk * v * 4  # 0.5 MiB

    def run():
        if fn == "logps":
            out = logprobs.chunked_token_logps(hidden, weight, targets, chunk_tokens=chunk)
            (out * upstream).sum().backward()
        else:
            logprobs.chunked_weighted_logp_sum(hidden, weight, targets, upstream,
                                               chunk_tokens=chunk)[0].backward()

    peak = profiled_peak_bytes(run)
    # the profiler's timeline also counts the weight itself once an op reads it (4 MiB):
    # measured 10.5 MiB here, 17.1 MiB with checkpointed chunks, 28.5 MiB naive
    assert peak <= 2 * grad_w + 6 * block, peak
