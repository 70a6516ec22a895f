"""Padding-free varlen attention (redi.attention): packed = padded log-probs and gradients.

On a CPU the registered ``redi_varlen`` function runs its per-segment SDPA
reference (the CUDA kernel path is exercised by scripts/gpu_check.sh); what is
tested here is everything around the kernel: registration with transformers,
the sequence boundaries reaching every layer, GQA, and gradients.
"""

from __future__ import annotations

import pytest
import torch

from redi import attention, batching, logprobs
from tests.test_logprobs import reference_logps, sequences, tiny_model


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
