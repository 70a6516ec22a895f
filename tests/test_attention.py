"""Padding-free varlen attention (redi.model.attention): packed = padded log-probs and gradients.

On a CPU the registered ``redi_varlen`` function runs its per-segment SDPA
reference (the CUDA kernel path is exercised by bench/gpu_check.sh); what is
tested here is everything around the kernel: registration with transformers,
the sequence boundaries reaching every layer, GQA, and gradients.
"""

from __future__ import annotations

import pytest
import torch

from redi.model import attention
from redi.train import batching, logprobs
from tests.support.models import reference_logps, sequences, tiny_model


@pytest.fixture(autouse=True)
def registered():
    attention.register()


def varlen_model():
    model = tiny_model(attention.VARLEN)  # 4 query heads over 2 kv heads (GQA)
    assert model.config._attn_implementation == attention.VARLEN
    return model


def test_cu_seqlens_from_packed_positions():
    batch = batching.make_batch(sequences()[:3], packed=True, pad_id=0)
    lengths = [len(s.ids) for s in sequences()[:3]]
    assert batch.cu_seqlens.tolist() == [0, lengths[0], lengths[0] + lengths[1], sum(lengths)]
    assert batch.cu_seqlens.dtype == torch.int32 and batch.max_seqlen == max(lengths)
    cu, longest = attention.cu_seqlens_from_positions(batch.position_ids)
    assert cu.tolist() == batch.cu_seqlens.tolist() and longest == max(lengths)
    padded = batching.make_batch(sequences()[:3], packed=False, pad_id=0)
    assert padded.cu_seqlens is None


@pytest.mark.parametrize("train_mode", [True, False])
def test_packed_varlen_equals_each_sequence_alone(train_mode):
    model = varlen_model()
    model.train(train_mode)
    reference = tiny_model("sdpa")  # same seed, same weights
    seqs = sequences()
    batch = batching.make_batch(seqs, packed=True, pad_id=0)
    with torch.no_grad():
        out = logprobs.batch_token_logps(logprobs.TokenLogps(model, chunk_tokens=8), batch)
        expected = torch.cat([reference_logps(reference, s) for s in seqs])
    assert torch.allclose(out, expected, atol=1e-5, rtol=0)


def test_boundaries_from_position_ids_alone():
    """Without cu_seqlens (e.g. another caller) the function derives them itself."""
    model = varlen_model()
    batch = batching.make_batch(sequences(), packed=True, pad_id=0)
    with torch.no_grad():
        hidden = model.get_decoder()(input_ids=batch.input_ids, position_ids=batch.position_ids,
                                     use_cache=False).last_hidden_state
        passed = model.get_decoder()(
            input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False,
            cu_seq_lens_q=batch.cu_seqlens, cu_seq_lens_k=batch.cu_seqlens,
            max_length_q=batch.max_seqlen, max_length_k=batch.max_seqlen).last_hidden_state
    assert torch.equal(hidden, passed)


def test_packed_varlen_gradients_equal_padded_sdpa():
    grads, losses = [], []
    for attn, packed in ((attention.VARLEN, True), ("sdpa", False)):
        model = tiny_model(attn)
        batch = batching.make_batch(sequences(), packed=packed, pad_id=0)
        loss = logprobs.batch_token_logps(logprobs.TokenLogps(model, chunk_tokens=8), batch).sum()
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)
    assert float((grads[0] - grads[1]).abs().max()) < 1e-5


def test_refuses_what_it_cannot_do():
    q = torch.zeros(2, 4, 5, 8)
    with pytest.raises(ValueError, match="one packed row"):
        attention.varlen_attention(None, q, q, q, None)
    q1 = torch.zeros(1, 4, 5, 8)
    with pytest.raises(ValueError, match="sliding"):
        attention.varlen_attention(None, q1, q1, q1, None, sliding_window=4)


@pytest.mark.parametrize(("choice", "expected"), [
    ("sdpa", ("sdpa", False)), ("varlen", (attention.VARLEN, True)),
    ("flash_attention_2", ("flash_attention_2", True)),
])
def test_training_attention_choice(monkeypatch, choice, expected):
    monkeypatch.setenv("REDI_ATTENTION", choice)
    assert attention.training_attention() == expected
    monkeypatch.setenv("REDI_ATTENTION", "auto")
    if not torch.cuda.is_available():  # a CPU: padded SDPA (faster there)
        assert attention.training_attention() == ("sdpa", False)
    monkeypatch.setenv("REDI_ATTENTION", "flash")
    with pytest.raises(ValueError, match="REDI_ATTENTION"):
        attention.training_attention()


def _sdpa_kernel(q, k, v, cu_q, cu_k, max_q, max_k, scale, groups_ok):
    """A stand-in for the CUDA kernel: checks what it is given, computes with SDPA."""
    assert q.dtype == torch.bfloat16 and (groups_ok or q.shape[1] == k.shape[1])
    if q.shape[1] != k.shape[1]:
        g = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    return attention._segments_sdpa(q.float(), k.float(), v.float(), cu_q, scale).to(q.dtype)


@pytest.mark.parametrize("version", ["window_size+gqa", "is_causal only"])
def test_cuda_kernel_call_adapts_to_the_torch_version(monkeypatch, version):
    """torch's varlen_attn gained window_size and enable_gqa after its first release:
    the call uses what this torch has (GQA by repeating heads otherwise)."""
    import torch.nn.attention.varlen as varlen

    calls = []
    if version == "window_size+gqa":
        def kernel(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None,
                   window_size=(-1, -1), enable_gqa=False):
            calls.append({"window_size": window_size, "enable_gqa": enable_gqa})
            return _sdpa_kernel(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale,
                                enable_gqa)
    else:
        def kernel(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, is_causal=False,
                   scale=None):
            calls.append({"is_causal": is_causal})
            return _sdpa_kernel(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale,
                                False)
    monkeypatch.setattr(varlen, "varlen_attn", kernel)
    attention._varlen_options.cache_clear()
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(12, h, 8, generator=gen) for h in (4, 2, 2))
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    try:
        out = attention._cuda_varlen(q, k, v, cu, 7, 0.35)
    finally:
        attention._varlen_options.cache_clear()
    expected = {"window_size+gqa": {"window_size": (-1, 0), "enable_gqa": True},
                "is_causal only": {"is_causal": True}}[version]
    assert calls == [expected] and out.dtype == torch.float32
    reference = attention._segments_sdpa(q, k, v, cu, 0.35)
    assert float((out - reference).abs().max()) < 2e-2  # bf16 inputs
