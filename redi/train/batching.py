"""Tokenisation, truncation and micro-batch layout for SFT and stage-2 training.

A training sequence is ``prompt + completion`` token ids; only completion
tokens carry a loss. The prompt is the chat template's system + user turn +
assistant header (Qwen: ``<|im_start|>assistant\\n``); the completion is the
trace plus its end tokens, which are counted in the loss and in the length
``|y|``. The end tokens come from the tokenizer's own chat template
(``redi.data.prompts.turn_end``):

* SFT: ``response + sft_suffix(tokenizer)`` (Qwen ``"<|im_end|>\\n"``, Llama 3
  ``"<|eot_id|>"``);
* stage 2: ``trace + stage2_suffix(tokenizer)`` -- the SFT suffix and the EOS (Qwen
  ``"<|im_end|>\\n<|endoftext|>"``, Llama 3 ``"<|eot_id|><|end_of_text|>"``), as
  the authors' TRL ``tokenize_row`` appends the EOS to every completion
  (authors-protocol 4.1).

Two layouts of a micro-batch, both one forward pass with ``use_cache=False``:

* ``packed``: all sequences concatenated in ONE row without any padding,
  ``position_ids`` restarting at 0 per sequence, ``attention_mask=None`` and the
  sequence starts in ``cu_seqlens``; the varlen attention of ``redi.model.attention``
  (or FlashAttention-2) keeps the sequences apart. Used on GPUs, where it costs
  no extra attention FLOPs.
* ``padded``: one sequence per row, right-padded to the longest, also with
  ``attention_mask=None``: causal attention alone keeps every real token away
  from the padding (which only follows it), so the real tokens' log-probs are
  exact and SDPA takes its fast ``is_causal`` kernel. Used with SDPA/eager: their
  packed mask is dense over the whole row, so packing n sequences costs
  O((n*L)^2) attention instead of O(n*L^2). Measured on the tiny model (CPU, one
  thread, a 16-pair stage-2 batch, forward + backward): padded-causal 129 ms,
  padded with a mask 150 ms, one pair per row (packed) 141 ms, one packed row
  801 ms.

Both give the same log-probs (tests/test_logprobs.py).
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TokenSeq:
    """One training sequence: ``ids[:n_prompt]`` is the prompt, the rest the completion."""

    ids: tuple[int, ...]
    n_prompt: int

    @property
    def n_completion(self) -> int:
        return len(self.ids) - self.n_prompt


@dataclass
class Batch:
    """A micro-batch laid out for one forward pass.

    ``gather_index`` are flat positions (``row * width + t``) whose hidden state
    predicts ``targets`` (the completion tokens); ``seq_index`` maps every
    target to its sequence (``0 .. n_seqs-1`` in input order).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None  # None in both layouts (see the module docstring)
    gather_index: torch.Tensor
    targets: torch.Tensor
    seq_index: torch.Tensor
    lengths: torch.Tensor
    n_tokens: int
    # packed layout: sequence starts in the row (int32, [n_seqs + 1]) and the longest
    # sequence, for padding-free attention (redi.model.attention); None when padded
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int = 0
    tokens_sq: int = 0  # sum of squared sequence lengths (attention FLOPs)

    @property
    def n_seqs(self) -> int:
        return int(self.lengths.numel())

    def to(self, device: Any) -> Batch:
        move = {
            k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()
        }
        return Batch(**move)


def sft_sequence(prompt: list[int], completion: list[int], max_length: int) -> TokenSeq:
    """Prompt + completion truncated to ``max_length`` tokens (keep the start, as TRL SFT)."""
    ids = (list(prompt) + list(completion))[:max_length]
    if len(ids) <= len(prompt):
        raise ValueError(
            f"max_length {max_length} leaves no completion token (prompt {len(prompt)})"
        )
    return TokenSeq(tuple(ids), len(prompt))


def pair_sequences(
    prompt: list[int],
    chosen: list[int],
    rejected: list[int],
    max_prompt_length: int,
    max_length: int,
) -> tuple[TokenSeq, TokenSeq]:
    """Stage-2 truncation: the prompt keeps its last ``max_prompt_length`` tokens
    (TRL ``keep_end`` for prompts), each completion its first
    ``max_length - len(prompt)`` tokens."""
    prompt = list(prompt)[-max_prompt_length:]
    room = max_length - len(prompt)
    if room < 1:
        raise ValueError(f"max_length {max_length} <= prompt length {len(prompt)}")
    return (
        TokenSeq(tuple(prompt + list(chosen)[:room]), len(prompt)),
        TokenSeq(tuple(prompt + list(rejected)[:room]), len(prompt)),
    )


def make_batch(seqs: Seq[TokenSeq], packed: bool, pad_id: int) -> Batch:
    """Lay out ``seqs`` for one forward pass (see the module docstring)."""
    if not seqs:
        raise ValueError("empty micro-batch")
    gather, targets, seq_index = [], [], []
    if packed:
        width = sum(len(s.ids) for s in seqs)
        input_ids = torch.empty(1, width, dtype=torch.long)
        position_ids = torch.empty(1, width, dtype=torch.long)
        offset = 0
        for k, s in enumerate(seqs):
            n = len(s.ids)
            input_ids[0, offset : offset + n] = torch.tensor(s.ids)
            position_ids[0, offset : offset + n] = torch.arange(n)
            gather.append(torch.arange(offset + s.n_prompt - 1, offset + n - 1))
            targets.append(torch.tensor(s.ids[s.n_prompt :]))
            seq_index.append(torch.full((s.n_completion,), k))
            offset += n
        starts = [0]
        for s in seqs:
            starts.append(starts[-1] + len(s.ids))
        cu_seqlens = torch.tensor(starts, dtype=torch.int32)
        max_seqlen = max(len(s.ids) for s in seqs)
    else:
        width = max(len(s.ids) for s in seqs)
        input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        for k, s in enumerate(seqs):
            n = len(s.ids)
            input_ids[k, :n] = torch.tensor(s.ids)
            gather.append(torch.arange(k * width + s.n_prompt - 1, k * width + n - 1))
            targets.append(torch.tensor(s.ids[s.n_prompt :]))
            seq_index.append(torch.full((s.n_completion,), k))
        # right padding under plain causal attention: no mask needed, the pad
        # positions keep counting (no restart, so no packing is detected)
        position_ids = torch.arange(width).expand(len(seqs), width).contiguous()
        cu_seqlens, max_seqlen = None, 0
    return Batch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=None,
        gather_index=torch.cat(gather),
        targets=torch.cat(targets),
        seq_index=torch.cat(seq_index),
        lengths=torch.tensor([s.n_completion for s in seqs], dtype=torch.long),
        n_tokens=sum(len(s.ids) for s in seqs),
        tokens_sq=sum(len(s.ids) ** 2 for s in seqs),
        cu_seqlens=cu_seqlens,
        max_seqlen=max_seqlen,
    )
