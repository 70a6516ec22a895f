"""Per-token log-probs without materialising [tokens x vocab] fp32 logits.

The LM head + log-softmax runs over chunks of completion positions; each chunk
is wrapped in ``torch.utils.checkpoint`` so autograd stores only the chunk's
hidden states (not its fp32 logits) and recomputes the logits in backward.
Peak extra memory is one ``[chunk, vocab]`` fp32 block instead of
``[tokens, vocab]`` (performance notes, section 5). When all tokens fit in one
chunk, the chunk is not checkpointed: what autograd keeps is then bounded by
the chunk size anyway, and the LM head is not run twice (the tiny CPU preset).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from redi.batching import Batch

# elements of one fp32 logits chunk: 2**26 = 256 MiB (441 tokens at Qwen's
# 151,936 vocab; the whole micro-batch at the tiny model's 512)
CHUNK_ELEMENTS = 2**26


def chunk_tokens_for(vocab_size: int) -> int:
    return max(16, CHUNK_ELEMENTS // vocab_size)


def _chunk_logps(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor
) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _chunk_logps_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of the target and entropy ``H = -sum_v p_v log p_v`` (from log p, not
    ``logsumexp(z) - sum p z``, which cancels to ~1e-5 in fp32 at large logits)."""
    logp = torch.log_softmax(F.linear(hidden, weight, bias).float(), dim=-1)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked, -(logp.exp() * logp).sum(-1)


def _chunked(fn, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
             bias: torch.Tensor | None, chunk_tokens: int | None) -> list:
    """``fn`` over chunks of positions; checkpointed when gradients are needed."""
    n = hidden.shape[0]
    chunk = chunk_tokens or chunk_tokens_for(weight.shape[0])
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    recompute = needs_grad and n > chunk
    out = []
    for start in range(0, n, chunk):
        args = (hidden[start : start + chunk], weight, bias, targets[start : start + chunk])
        out.append(checkpoint(fn, *args, use_reentrant=False) if recompute else fn(*args))
    return out


def chunked_token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """``log_softmax(hidden @ weight.T + bias)[i, targets[i]]``: [N, H] -> [N] fp32."""
    out = _chunked(_chunk_logps, hidden, weight, targets, bias, chunk_tokens)
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


def chunked_token_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: the target's log-prob and the entropy of the next-token
    distribution, [N] fp32 each, without [N x vocab] logits (one chunk at a time)."""
    out = _chunked(_chunk_logps_entropy, hidden, weight, targets, bias, chunk_tokens)
    if not out:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


def sequence_sums(token_logps: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Sum of the per-token log-probs of each sequence -> [n_seqs]."""
    out = token_logps.new_zeros(batch.n_seqs)
    return out.index_add(0, batch.seq_index, token_logps)


class TokenLogps(torch.nn.Module):
    """Wraps a causal LM so that ``forward(batch tensors)`` returns per-token log-probs.

    Everything (decoder, gather, chunked LM head) happens inside ``forward``,
    so the module can be handed to ``accelerator.prepare`` (DDP/DeepSpeed see
    one forward). ``lm`` is the Hugging Face model (saved with
    ``save_pretrained``).
    """

    def __init__(self, lm: Any, chunk_tokens: int | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.chunk_tokens = chunk_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        gather_index: torch.Tensor,
        targets: torch.Tensor,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int = 0,
    ) -> torch.Tensor:
        hidden = self.target_hidden(input_ids, position_ids, attention_mask, gather_index,
                                    cu_seqlens, max_seqlen)
        head = self.lm.get_output_embeddings()
        return chunked_token_logps(hidden, head.weight, targets, head.bias, self.chunk_tokens)

    def target_hidden(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                      attention_mask: torch.Tensor | None, gather_index: torch.Tensor,
                      cu_seqlens: torch.Tensor | None = None,
                      max_seqlen: int = 0) -> torch.Tensor:
        """The decoder's last hidden states at the positions that predict targets."""
        # packed rows: the sequence boundaries once for every layer (varlen attention)
        varlen = {} if cu_seqlens is None else {
            "cu_seq_lens_q": cu_seqlens, "cu_seq_lens_k": cu_seqlens,
            "max_length_q": max_seqlen, "max_length_k": max_seqlen,
        }
        hidden = self.lm.get_decoder()(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            use_cache=False,
            **varlen,
        ).last_hidden_state
        return hidden.reshape(-1, hidden.shape[-1]).index_select(0, gather_index)


def batch_token_logps(module: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Run a ``TokenLogps`` (possibly wrapped by accelerate) on a ``Batch``."""
    return module(
        batch.input_ids, batch.position_ids, batch.attention_mask, batch.gather_index,
        batch.targets, batch.cu_seqlens, batch.max_seqlen,
    )


def batch_token_entropy(module: TokenLogps, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per completion token of ``batch``: (log-prob of the token, entropy of the model's
    next-token distribution there), chunked as the log-probs."""
    hidden = module.target_hidden(batch.input_ids, batch.position_ids, batch.attention_mask,
                                  batch.gather_index, batch.cu_seqlens, batch.max_seqlen)
    head = module.lm.get_output_embeddings()
    return chunked_token_entropy(hidden, head.weight, batch.targets, head.bias,
                                 module.chunk_tokens)
