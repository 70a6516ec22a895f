"""Padding-free attention for packed training micro-batches, without building flash-attn.

A packed micro-batch is ONE row of concatenated sequences whose boundaries are
given by ``cu_seqlens`` (``redi.train.batching.make_batch(packed=True)``). The
attention function ``redi_varlen`` is registered with transformers'
``AttentionInterface`` and chosen with ``attn_implementation="redi_varlen"``:

* on CUDA it calls PyTorch's own ``torch.nn.attention.varlen.varlen_attn``
  (FlashAttention kernels shipped inside the CUDA wheel, with backward): no
  padding and no attention across sequence boundaries, at O(sum L_i^2);
* elsewhere (CPU) it runs a per-segment ``scaled_dot_product_attention``, the
  same maths, so the tests can prove packed = padded log-probs and gradients.

transformers creates no mask for a registered implementation it does not know
(``masking_utils``), so the function gets ``attention_mask=None`` and the
sequence boundaries as ``cu_seq_lens_q`` / ``max_length_q`` keyword arguments
(passed by ``redi.train.logprobs.TokenLogps`` once per forward, not re-derived per
layer, which would cost a host sync in every layer).

Which layout training uses: ``training_attention()``; ``REDI_ATTENTION``
(``auto`` | ``varlen`` | ``sdpa`` | ``flash_attention_2``) overrides the choice.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
from typing import Any

import torch
import torch.nn.functional as F

VARLEN = "redi_varlen"
CHOICES = ("auto", "varlen", "sdpa", "flash_attention_2")


def varlen_available() -> bool:
    """PyTorch's FlashAttention varlen kernel is usable (CUDA build, GPU present)."""
    if not torch.cuda.is_available():
        return False
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def training_attention() -> tuple[str, bool]:
    """``(attn_implementation, packed)`` for training and the reference pass.

    auto: ``redi_varlen`` (packed) whenever CUDA is present, else padded SDPA,
    which is faster on a CPU (``redi.train.batching``'s measurements).
    """
    choice = os.environ.get("REDI_ATTENTION", "auto") or "auto"
    if choice not in CHOICES:
        raise ValueError(f"REDI_ATTENTION={choice!r}: expected one of {CHOICES}")
    if choice == "auto":
        if varlen_available():
            return VARLEN, True
        if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2", True
        return "sdpa", False
    if choice == "varlen":
        return VARLEN, True
    return choice, choice == "flash_attention_2"


def cu_seqlens_from_positions(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sequence starts of one packed row: where ``position_ids`` restart at 0."""
    pos = position_ids.reshape(-1)
    starts = (pos == 0).nonzero().reshape(-1)
    total = torch.tensor([pos.numel()], device=pos.device)
    cu = torch.cat([starts, total]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


def _segments_sdpa(q, k, v, cu: torch.Tensor, scale: float | None) -> torch.Tensor:
    """Reference: causal SDPA per sequence. [T, H, D] tensors -> [T, H, D]."""
    groups = q.shape[1] // k.shape[1]
    out = []
    bounds = cu.tolist()
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # [H, L, D]
        if groups > 1:
            ks, vs = ks.repeat_interleave(groups, 0), vs.repeat_interleave(groups, 0)
        out.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale)
                   .transpose(0, 1))
    return torch.cat(out)


@functools.cache
def _varlen_options() -> frozenset[str]:
    """Keyword arguments of this torch's ``varlen_attn``: causality was ``is_causal`` before
    ``window_size`` existed, and ``enable_gqa`` is newer than the function itself."""
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


def _cuda_varlen(q, k, v, cu: torch.Tensor, max_len: int, scale: float | None) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    dtype = q.dtype
    if dtype not in (torch.float16, torch.bfloat16):  # FlashAttention kernels: half types only
        q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
    options = _varlen_options()
    kwargs: dict[str, Any] = {"scale": scale}
    if "window_size" in options:
        kwargs["window_size"] = (-1, 0)  # causal
    else:
        kwargs["is_causal"] = True
    groups = q.shape[1] // k.shape[1]
    if groups > 1 and "enable_gqa" in options:
        kwargs["enable_gqa"] = True
    elif groups > 1:  # an older kernel: one key/value head per query head
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    out = varlen_attn(q, k, v, cu, cu, max_len, max_len, **kwargs)
    return out.to(dtype)


def varlen_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    position_ids: torch.Tensor | None = None,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: ``[1, H, T, D]`` inputs -> ``[1, T, H, D]``."""
    if query.shape[0] != 1 or attention_mask is not None:
        raise ValueError(f"{VARLEN} expects one packed row without an attention mask")
    if dropout or sliding_window:
        raise ValueError(f"{VARLEN} supports neither attention dropout nor sliding windows")
    if cu_seq_lens_q is None:
        if position_ids is None:
            raise ValueError(f"{VARLEN} needs cu_seq_lens_q or position_ids")
        cu_seq_lens_q, max_length_q = cu_seqlens_from_positions(position_ids)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [T, H, D]
    if q.is_cuda:
        out = _cuda_varlen(q, k, v, cu_seq_lens_q, int(max_length_q), scaling)
    else:
        out = _segments_sdpa(q, k, v, cu_seq_lens_q, scaling)
    return out.unsqueeze(0), None


def register() -> None:
    """Make ``attn_implementation="redi_varlen"`` known to transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN, varlen_attention)
