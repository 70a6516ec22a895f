"""Per-token log-probs without materialising [tokens x vocab] fp32 logits.

The LM head + log-softmax runs over chunks of completion positions, inside two
``torch.autograd.Function``s that hold one ``[chunk, vocab]`` fp32 block at a
time (performance notes, section 5):

- ``chunked_token_logps`` / ``chunked_token_entropy`` (any loss of the values):
  the forward keeps no logits; the backward recomputes each chunk's logits and
  accumulates the weight gradient IN PLACE into one buffer (checkpointing each
  chunk instead held a second, per-chunk [vocab, hidden] gradient).
- ``chunked_weighted_logp_sum`` (a loss linear in the log-probs, with per-token
  weights known before the forward: SFT, REDI): the forward computes every
  gradient of the LM head while each chunk's logits exist, so the head runs
  three matmuls, as naive full logits do, instead of four.

A single chunk (the tiny CPU preset) keeps its block for the backward instead of
recomputing it: what is held is bounded by the chunk size anyway.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from redi.train.batching import Batch

# elements of one fp32 logits chunk: 2**26 = 256 MiB (441 tokens at Qwen's
# 151,936 vocab; the whole micro-batch at the tiny model's 512)
CHUNK_ELEMENTS = 2**26


def chunk_tokens_for(vocab_size: int) -> int:
    return max(16, CHUNK_ELEMENTS // vocab_size)


def _chunk(weight: torch.Tensor, chunk_tokens: int | None) -> int:
    return chunk_tokens or chunk_tokens_for(weight.shape[0])


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Gradients of half-type parameters are summed over chunks in fp32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The LM head's matmul dtype: autocast's where it is on (as ``F.linear`` would run)."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


class _Head:
    """The LM head in its compute dtype (the weight cast once per call, as autocast's cache)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        self.weight = weight.detach().to(dtype)
        self.bias = None if bias is None else bias.detach().to(dtype)

    def log_softmax(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 ``log_softmax(hidden @ W.T + b)``, [n, vocab] (one fused kernel; half-type
        logits are upcast inside it)."""
        logits = F.linear(hidden.detach().to(self.weight.dtype), self.weight, self.bias)
        return torch.log_softmax(logits, -1, dtype=torch.float32)


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    """``H = -sum_v p_v log p_v`` from log p (not ``logsumexp(z) - sum p z``, which
    cancels to ~1e-5 in fp32 at large logits); a plain sum, as accurate as the naive one
    (a BLAS row dot was 2e-5 off at 152k terms)."""
    return -logp.exp().mul_(logp).sum(-1)


def _logit_grad_(logp: torch.Tensor, targets: torch.Tensor, g_logp: torch.Tensor,
                 g_entropy: torch.Tensor | None = None,
                 entropy: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient w.r.t. the logits, written over the ``logp`` block:
    ``g_logp * (onehot(target) - p) - g_entropy * p * (log p + H)``."""
    if g_entropy is None:
        grad = logp.exp_().mul_(-g_logp[:, None])
    else:
        probs = logp.exp()
        grad = logp.add_(entropy[:, None]).mul_(probs).mul_(-g_entropy[:, None])
        grad.sub_(probs.mul_(g_logp[:, None]))
        del probs
    return grad.scatter_add_(1, targets[:, None], g_logp[:, None])


class _HeadGrads:
    """The LM head's input gradients, accumulated chunk by chunk in one buffer each
    (the weight's in fp32 when it is a half type, cast once at the end)."""

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 needs: tuple[bool, ...]) -> None:
        # every row is written once: no zero fill; the weight's buffer is the first
        # chunk's product (a [vocab, hidden] fill per micro-batch was 4 % of an SFT step)
        self.hidden = torch.empty_like(hidden) if needs[0] else None
        self.needs_weight = needs[1]
        self.weight: torch.Tensor | None = None
        self.bias = None if bias is None or not needs[2] else torch.zeros(
            bias.shape, dtype=_accumulation_dtype(bias.dtype), device=bias.device)
        self.shape, self.device = weight.shape, weight.device
        self.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)

    def add(self, rows: slice, grad_logits: torch.Tensor, hidden: torch.Tensor,
            head: _Head) -> None:
        grad = grad_logits.to(head.weight.dtype)
        if self.hidden is not None:
            self.hidden[rows] = grad @ head.weight
        if self.needs_weight:
            h = hidden.detach().to(grad.dtype)
            if self.weight is None:
                self.weight = (grad.T @ h).to(_accumulation_dtype(grad.dtype))
            elif self.weight.dtype == grad.dtype:
                self.weight.addmm_(grad.T, h)
            else:
                self.weight.add_(grad.T @ h)
        if self.bias is not None:
            self.bias.add_(grad.sum(0))

    def result(self, scale: torch.Tensor | None = None) -> tuple[torch.Tensor | None, ...]:
        if self.needs_weight and self.weight is None:  # no rows at all
            self.weight = torch.zeros(self.shape, dtype=self.dtypes[1], device=self.device)
        out = []
        for grad, dtype in zip((self.hidden, self.weight, self.bias), self.dtypes, strict=True):
            if grad is not None and scale is not None:
                grad.mul_(scale)
            out.append(None if grad is None else grad.to(dtype))
        self.hidden = self.weight = self.bias = None
        return tuple(out)


def _spans(n: int, chunk: int) -> list[slice]:
    return [slice(start, start + chunk) for start in range(0, n, chunk)]


class _ChunkedLogps(torch.autograd.Function):
    """Log-probs of the targets [N] fp32 (and, ``with_entropy``, the entropies [N]);
    backward recomputes each chunk's logits."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk: int, dtype: torch.dtype, with_entropy: bool
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(hidden.device.type, enabled=False):
            head, spans = _Head(weight, bias, dtype), _spans(hidden.shape[0], chunk)
            logps, entropies, kept = [], [], None
            for rows in spans:
                logp = head.log_softmax(hidden[rows])
                logps.append(logp.gather(-1, targets[rows, None]).squeeze(-1))
                if with_entropy:
                    entropies.append(_entropy(logp))
                if len(spans) == 1 and any(ctx.needs_input_grad[:3]):
                    kept = logp
        entropy = torch.cat(entropies) if with_entropy else None
        ctx.save_for_backward(hidden, weight, bias, targets, entropy)
        ctx.chunk, ctx.dtype, ctx.kept = chunk, dtype, kept
        ctx.set_materialize_grads(False)
        return (torch.cat(logps), entropy) if with_entropy else torch.cat(logps)

    @staticmethod
    def backward(ctx: Any, g_logp: torch.Tensor | None, g_entropy: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, bias, targets, entropy = ctx.saved_tensors
        grads = _HeadGrads(hidden, weight, bias, ctx.needs_input_grad[:3])
        if g_logp is None:
            g_logp = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            head = _Head(weight, bias, ctx.dtype)
            for rows in _spans(hidden.shape[0], ctx.chunk):
                logp = ctx.kept if ctx.kept is not None else head.log_softmax(hidden[rows])
                ctx.kept = None
                g_h, h = (None, None) if g_entropy is None else (g_entropy[rows], entropy[rows])
                grads.add(rows, _logit_grad_(logp, targets[rows], g_logp[rows], g_h, h),
                          hidden[rows], head)
        return (*grads.result(), None, None, None, None)


class _WeightedLogpSum(torch.autograd.Function):
    """``sum_i w_i log p(target_i)`` and the detached per-token log-probs; the LM
    head's gradients are computed in the forward (the loss is linear in log p)."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, token_weights: torch.Tensor, chunk: int,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        grads = _HeadGrads(hidden, weight, bias, ctx.needs_input_grad[:3])
        w = token_weights.detach().float()
        with torch.autocast(hidden.device.type, enabled=False):
            head, logps = _Head(weight, bias, dtype), []
            for rows in _spans(hidden.shape[0], chunk):
                logp = head.log_softmax(hidden[rows])
                logps.append(logp.gather(-1, targets[rows, None]).squeeze(-1))
                grads.add(rows, _logit_grad_(logp, targets[rows], w[rows]), hidden[rows], head)
        ctx.grads = grads
        values = torch.cat(logps) if logps else w.new_zeros(0)
        ctx.mark_non_differentiable(values)
        return (values * w).sum(), values

    @staticmethod
    def backward(ctx: Any, g_total: torch.Tensor, _g_values: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, ...]:
        grads, ctx.grads = ctx.grads, None
        return (*grads.result(scale=g_total), None, None, None, None)


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _apply(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
           bias: torch.Tensor | None, chunk_tokens: int | None, with_entropy: bool) -> Any:
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return (empty, empty) if with_entropy else empty
    return _ChunkedLogps.apply(hidden, weight, bias, targets, _chunk(weight, chunk_tokens),
                               _compute_dtype(hidden, weight), with_entropy)


def chunked_token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """``log_softmax(hidden @ weight.T + bias)[i, targets[i]]``: [N, H] -> [N] fp32."""
    return _apply(hidden, weight, targets, bias, chunk_tokens, with_entropy=False)


def chunked_token_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: the target's log-prob and the entropy of the next-token
    distribution, [N] fp32 each, without [N x vocab] logits (one chunk at a time)."""
    return _apply(hidden, weight, targets, bias, chunk_tokens, with_entropy=True)


def chunked_weighted_logp_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    token_weights: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(``sum_i token_weights[i] * logp_i`` with its gradient, the per-token log-probs
    [N] fp32, detached): the same value and gradients as
    ``(chunked_token_logps(...) * token_weights).sum()``, one LM-head matmul fewer."""
    if not _needs_grad(hidden, weight, bias):
        values = chunked_token_logps(hidden, weight, targets, bias, chunk_tokens)
        return (values * token_weights.float()).sum(), values
    return _WeightedLogpSum.apply(hidden, weight, bias, targets, token_weights,
                                  _chunk(weight, chunk_tokens), _compute_dtype(hidden, weight))


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
        token_weights: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs [N]; with ``token_weights`` [N], (their weighted sum,
        the detached log-probs) from ``chunked_weighted_logp_sum``."""
        hidden = self.target_hidden(input_ids, position_ids, attention_mask, gather_index,
                                    cu_seqlens, max_seqlen)
        head = self.lm.get_output_embeddings()
        if token_weights is not None:
            return chunked_weighted_logp_sum(hidden, head.weight, targets, token_weights,
                                             head.bias, self.chunk_tokens)
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


def batch_weighted_logp_sum(module: torch.nn.Module, batch: Batch,
                            token_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(``sum_i token_weights[i] * logp_i``, the detached per-token log-probs) of a
    ``Batch``, the LM head's backward fused into the forward (a linear loss)."""
    return module(
        batch.input_ids, batch.position_ids, batch.attention_mask, batch.gather_index,
        batch.targets, batch.cu_seqlens, batch.max_seqlen, token_weights,
    )


def batch_token_entropy(module: TokenLogps, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per completion token of ``batch``: (log-prob of the token, entropy of the model's
    next-token distribution there), chunked as the log-probs."""
    hidden = module.target_hidden(batch.input_ids, batch.position_ids, batch.attention_mask,
                                  batch.gather_index, batch.cu_seqlens, batch.max_seqlen)
    head = module.lm.get_output_embeddings()
    return chunked_token_entropy(hidden, head.weight, batch.targets, head.bias,
                                 module.chunk_tokens)
