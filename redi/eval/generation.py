"""Sampling n completions per prompt, behind one interface with two backends.

* ``hf`` -- transformers on CPU (the tiny preset) or one GPU. Prompts are
  tokenized without special tokens, left-padded and decoded with a KV cache.
  For Llama-style decoders (Qwen2, Llama, Mistral without sliding window) an
  incremental decoder built from the model's own modules is used: the prompt
  prefix shared by every prompt (system prompt + instruction) is encoded once,
  each problem once (then its cache is copied to its n samples), finished
  rows are dropped from the batch, and nucleus sampling is done directly on the
  logits. At ~180k parameters ``generate``'s per-step overhead, its 16 copies
  of every prompt and its growing cache dominate: 2,048 samples of the tiny
  SFT model took 76 s with ``generate`` and 5 s here (1 CPU thread). Other
  architectures use ``model.generate`` with ``num_return_sequences``. Both
  paths give identical tokens under greedy decoding (tests/test_generation.py).
* ``vllm`` -- ``redi.eval.vllm_engine`` (both by name: ``redi.eval.backends``): ``vllm.LLM`` + ``SamplingParams(n=...)``,
  imported lazily; one engine per GPU, or several CPU engines that split the
  job's cores (data parallel). ``max_model_len`` is capped at the model's own
  context (``max_position_embeddings``): vLLM refuses a longer one.

Randomness is per request on both backends: prompt ``i`` has a seed
``seeds[i]`` (``redi.eval.evaluation`` derives it from the evaluation seed, the
benchmark and the problem id) and its ``j``-th sample uses ``seeds[i] + j``
(vLLM's rule for ``SamplingParams(n, seed)``). Samples therefore do not depend
on how prompts are batched or sharded over engines. Greedy decoding
(temperature 0) with ``n > 1`` decodes once and repeats the completion (vLLM
refuses ``n > 1`` without sampling).

A completion's ``n_tokens`` counts generated tokens including the stop token
(what vLLM reports); ``text`` excludes special tokens (vLLM's default).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redi.model.models import load_causal_lm, load_tokenizer

log = logging.getLogger(__name__)

# the authors' stop tokens; the model's own eos is added to these
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by both backends (temperature 0 = greedy)."""

    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 32768
    seed: int = 0
    stop_tokens: tuple[str, ...] = STOP_TOKENS


@dataclass(frozen=True)
class Completion:
    text: str
    n_tokens: int
    finished: bool  # ended on a stop token (False: cut at max_new_tokens)


@dataclass
class Backend(ABC):
    """Interface: ``generate(model, prompts, n)`` -> n completions per prompt."""

    sampling: Sampling = field(default_factory=Sampling)

    def generate(
        self,
        model: str,
        prompts: Sequence[str],
        n: int,
        priority: Sequence[float] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        """``priority``: expected length of each prompt's answers (vLLM schedules
        the largest first); ``seeds``: each prompt's seed (default: ``sampling.seed
        + 1000 * i``); prompts keep their order in the result."""
        if seeds is None:
            seeds = [self.sampling.seed + 1000 * i for i in range(len(prompts))]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        if self.sampling.temperature <= 0 and n > 1:  # greedy: n identical samples
            once = self._generate(model, prompts, 1, priority, list(seeds))
            return [comps * n for comps in once]
        return self._generate(model, prompts, n, priority, list(seeds))

    @abstractmethod
    def _generate(self, model: str, prompts: Sequence[str], n: int,
                  priority: Sequence[float] | None, seeds: list[int]) -> list[list[Completion]]:
        """The backend's sampling; sample ``j`` of prompt ``i`` uses ``seeds[i] + j``."""

    def context(self, model: str) -> dict[str, Any]:
        """The model's own context length (``max_position_embeddings``)."""
        return {"model_max_position_embeddings": model_context(model)}

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What produced the samples: backend, number of engines, device (recorded in
        every summary and curve record)."""


def template_stop_tokens(tokenizer: Any) -> list[str]:
    """The token that ends an assistant turn in the tokenizer's chat template
    (``<|im_end|>``, Llama 3's ``<|eot_id|>``); none without a usable template."""
    from redi.data.prompts import end_of_turn_token

    if not getattr(tokenizer, "chat_template", None):
        return []
    try:
        return [end_of_turn_token(tokenizer)]
    except ValueError as err:
        log.warning("no end-of-turn stop token from the chat template: %s", err)
        return []


def stop_token_ids(tokenizer: Any, model_config: Any, stop_tokens: Sequence[str]) -> list[int]:
    """Ids of the configured stop tokens present in the vocabulary, the chat template's
    end of turn (e.g. ``<|eot_id|>``, which the authors' Qwen list lacks) and the
    model's eos, each once."""
    ids: list[int] = []
    vocab = tokenizer.get_vocab()
    for token in (*stop_tokens, *template_stop_tokens(tokenizer)):
        if token in vocab and vocab[token] not in ids:
            ids.append(vocab[token])
    for eos in (getattr(model_config, "eos_token_id", None), tokenizer.eos_token_id):
        for i in eos if isinstance(eos, (list, tuple)) else [eos]:
            if i is not None and i not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("no stop token found in the tokenizer")
    return ids


def model_context(model: str) -> int | None:
    """``max_position_embeddings`` of a model folder or Hub id (None if unset)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    value = getattr(config.get_text_config(), "max_position_embeddings", None)
    return int(value) if value else None


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="seq", mininterval=2.0, leave=False)


# ------------------------------------------------------------------------ hf


@dataclass
class HFBackend(Backend):
    """transformers on CPU/one GPU; ``batch_size`` = sequences decoded together."""

    batch_size: int = 256
    threads: int | None = None
    fast: bool = True  # False: always model.generate (the reference path)
    dtype: str = "auto"

    def describe(self) -> dict[str, Any]:
        import torch

        return {"backend": "hf", "engines": 1,
                "device": "cuda" if torch.cuda.is_available() else "cpu"}

    def _generate(self, model, prompts, n, priority, seeds):
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        tokenizer = load_tokenizer(model)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        lm = load_causal_lm(model, self.dtype).to(device).eval()
        stops = stop_token_ids(tokenizer, lm.generation_config, self.sampling.stop_tokens)
        encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
        use_fast = self.fast and fast_path_supported(lm)
        log.info("hf generation: %d prompts x %d samples, %s path, batch %d, device %s",
                 len(prompts), n, "incremental" if use_fast else "generate", self.batch_size, device)
        # similar lengths share a batch (less padding); results go back in input order
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        # generate() draws from the global RNG: one prompt per call, seeded by that prompt
        per_batch = max(1, self.batch_size // n) if use_fast else 1
        results: list[list[Completion] | None] = [None] * len(prompts)
        bar = _progress(len(prompts) * n, f"generate {Path(model).name}")
        for start in range(0, len(order), per_batch):
            idx = order[start : start + per_batch]
            batch = [encoded[i] for i in idx]
            with torch.inference_mode():
                if use_fast:
                    row_seeds = [seeds[i] + j for i in idx for j in range(n)]
                    tokens, lengths, finished = _decode_incremental(
                        lm, batch, n, self.sampling, stops, row_seeds)
                else:
                    tokens, lengths, finished = _decode_generate(
                        lm, batch, n, self.sampling, stops, pad, seeds[idx[0]])
            for j, i in enumerate(idx):
                rows = range(j * n, (j + 1) * n)
                results[i] = [
                    Completion(
                        # the stop token is counted but not part of the text
                        text=tokenizer.decode(tokens[r][: lengths[r] - finished[r]],
                                              skip_special_tokens=True),
                        n_tokens=lengths[r],
                        finished=finished[r],
                    )
                    for r in rows
                ]
            bar.update(len(idx) * n)
        bar.close()
        return results  # type: ignore[return-value]


def fast_path_supported(lm: Any) -> bool:
    """Llama-style decoder with full attention everywhere and HF module names."""
    cfg = lm.config
    if cfg.model_type not in ("qwen2", "llama", "mistral"):
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or []):
        return False
    body = getattr(lm, "model", None)
    if body is None or not hasattr(body, "rotary_emb"):
        return False
    attn = body.layers[0].self_attn
    return all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim",
                                          "scaling")) and not hasattr(attn, "q_norm")


def uniform_streams(row_seeds: Sequence[int], steps: int, device: Any) -> Any:
    """[rows, steps] uniforms in [0, 1): row r's stream depends on ``row_seeds[r]`` only."""
    import torch

    rows = [torch.rand(steps, generator=torch.Generator().manual_seed(int(s)))
            for s in row_seeds]
    return torch.stack(rows).to(device) if rows else torch.zeros((0, steps), device=device)


def sample_next(logits, temperature: float, top_p: float, u, candidates: int = 8) -> Any:
    """Nucleus sampling: keep the smallest top set with mass >= top_p; greedy at T=0.

    Same rule as transformers' TopPLogitsWarper (a token is dropped when the
    mass ranked above it already reaches top_p). A full sort of the vocabulary
    per row is slow on CPU (11 ms for 256 x 512; top-8 0.6 ms), so the nucleus
    is looked for among the ``candidates`` most likely tokens first, falling back to the full sort for
    the rare rows whose nucleus is larger; the row's uniform draw ``u`` [rows]
    is mapped through the kept mass (inverse CDF).
    """
    import torch

    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    k = min(candidates, probs.shape[-1]) if top_p < 1.0 else probs.shape[-1]
    top, index = probs.topk(k, dim=-1) if k < probs.shape[-1] else probs.sort(-1, True)
    before = top.cumsum(dim=-1) - top
    kept = top.masked_fill(before >= top_p, 0.0)
    wide = (before[:, -1] + top[:, -1] < top_p) & (k < probs.shape[-1])
    if bool(wide.any()):  # nucleus not inside the candidates: full sort for these rows
        rows = wide.nonzero().squeeze(1)
        full, full_index = probs[rows].sort(dim=-1, descending=True)
        full_before = full.cumsum(dim=-1) - full
        full_kept = full.masked_fill(full_before >= top_p, 0.0)
        tok = _draw(kept, index, u)
        tok[rows] = _draw(full_kept, full_index, u[rows])
        return tok
    return _draw(kept, index, u)


def _draw(kept, index, u):
    cum = kept.cumsum(dim=-1)
    target = u.to(cum.dtype)[:, None] * cum[:, -1:]
    choice = (cum < target).sum(dim=-1, keepdim=True).clamp(max=kept.shape[-1] - 1)
    return index.gather(-1, choice).squeeze(-1)


def _decode_generate(lm, batch, n, sampling: Sampling, stops, pad, seed: int):
    """Reference path: ``model.generate`` with left padding and num_return_sequences."""
    import torch

    width = max(len(ids) for ids in batch)
    device = lm.device
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, ids in enumerate(batch):
        input_ids[r, width - len(ids):] = torch.tensor(ids)
        mask[r, width - len(ids):] = 1
    torch.manual_seed(seed)  # generate() samples with the global RNG
    greedy = sampling.temperature <= 0
    if greedy and n > 1:  # generate() refuses num_return_sequences > 1 without sampling
        input_ids, mask = input_ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    out = lm.generate(
        input_ids=input_ids.to(device), attention_mask=mask.to(device),
        do_sample=not greedy, temperature=None if greedy else sampling.temperature,
        top_p=None if greedy else sampling.top_p, top_k=None,
        max_new_tokens=sampling.max_new_tokens, num_return_sequences=1 if greedy else n,
        eos_token_id=stops, pad_token_id=pad,
    )
    return _trim(out[:, width:].tolist(), stops)


def _trim(rows: list[list[int]], stops: Sequence[int]):
    stop_set = set(stops)
    lengths, finished = [], []
    for row in rows:
        end = next((i + 1 for i, t in enumerate(row) if t in stop_set), None)
        lengths.append(end if end is not None else len(row))
        finished.append(end is not None)
    return rows, lengths, finished


def _decode_incremental(lm, batch, n, sampling: Sampling, stops, row_seeds: Sequence[int]):
    """Prefix-shared, batch-shrinking decoding with the model's own modules.

    Layout per row: [shared prefix (stored once)] [left pad][problem suffix]
    [generated]. Positions are contiguous over the real tokens, so every row
    sees exactly what an unpadded forward pass would. ``row_seeds``: one per
    sample (prompt-major), each sample's own uniform stream.
    """
    import torch

    prefix_len = _shared_prefix_len(batch)
    prefix_kv, cache, last, start, width = _prefill(lm, batch, prefix_len,
                                                    sampling.max_new_tokens)
    if n > 1:  # n samples per prompt share the prompt's cache rows
        expand = torch.arange(len(batch), device=lm.device).repeat_interleave(n)
        cache = _select_rows(cache, expand, width)
        start, last = start[expand], last[expand]
    return _sample(lm, last, start, prefix_len + width - start, prefix_kv, cache, width,
                   sampling, stops, row_seeds)


def _shared_prefix_len(batch: Sequence[Sequence[int]]) -> int:
    """The common prefix of all prompts, leaving >= 1 own token per prompt."""
    prefix_len = min(len(ids) for ids in batch) - 1
    first = batch[0]
    for ids in batch[1:]:
        k = 0
        while k < prefix_len and ids[k] == first[k]:
            k += 1
        prefix_len = k
    return prefix_len


def _prefill(lm, batch, prefix_len: int, max_new: int):
    """The shared prefix (one row, causal) and the left-padded suffixes (one row per
    prompt): (prefix kv, cache, last logits, first own slot per row, suffix width)."""
    import torch

    device, first = lm.device, batch[0]
    prefix_kv = None
    if prefix_len > 0:
        ids = torch.tensor([first[:prefix_len]], device=device)
        pos = torch.arange(prefix_len, device=device)[None]
        causal = torch.ones(prefix_len, prefix_len, dtype=torch.bool, device=device).tril()
        _, prefix_kv = _forward(lm, ids, pos, causal[None, None, None], None, None, 0)
        prefix_kv = [(k[0], v[0]) for k, v in prefix_kv]  # [kv_heads, P, d]
    suffixes = [ids[prefix_len:] for ids in batch]
    rows, width = len(batch), max(len(s) for s in suffixes)
    ids = torch.zeros((rows, width), dtype=torch.long, device=device)
    start = torch.empty(rows, dtype=torch.long, device=device)  # first own slot per row
    for r, s in enumerate(suffixes):
        ids[r, width - len(s):] = torch.tensor(s, device=device)
        start[r] = width - len(s)
    slots = torch.arange(width, device=device)
    pos = prefix_len + (slots[None] - start[:, None]).clamp(min=0)
    own = (slots[None, None] >= start[:, None, None]) & (slots[None, None] <= slots[None, :, None])
    cache = _new_cache(lm, rows, width + max_new, device)
    last, _ = _forward(lm, ids, pos, own[:, None, None], prefix_kv, cache, 0)
    return prefix_kv, cache, last, start, width


def _sample(lm, last, start, next_pos, prefix_kv, cache, width: int, sampling: Sampling,
            stops, row_seeds: Sequence[int]):
    """Sample every row until its stop token or ``max_new_tokens``; finished rows leave
    the batch once a quarter of it is done (a copy of the cache)."""
    import torch

    device, max_new, total = lm.device, sampling.max_new_tokens, last.shape[0]
    out = torch.zeros((total, max_new), dtype=torch.long, device=device)
    lengths = torch.full((total,), max_new, dtype=torch.long, device=device)
    finished = torch.zeros(total, dtype=torch.bool, device=device)
    alive = torch.arange(total, device=device)  # original row of each batch row
    done = torch.zeros(total, dtype=torch.bool, device=device)  # per batch row
    stop_ids = torch.tensor(sorted(set(stops)), device=device)
    uniforms = uniform_streams(row_seeds, max_new, device)
    for t in range(max_new):
        tok = sample_next(last, sampling.temperature, sampling.top_p, uniforms[alive, t])
        out[alive, t] = tok  # rows already done write past their end: ignored
        new = torch.isin(tok, stop_ids) & ~done
        if bool(new.any()):
            finished[alive[new]] = True
            lengths[alive[new]] = t + 1
            done |= new
            n_done = int(done.sum())
            if n_done == len(alive):
                break
            if n_done >= 0.25 * len(alive):
                sel = (~done).nonzero().squeeze(1)
                alive, tok, start, next_pos = alive[sel], tok[sel], start[sel], next_pos[sel]
                done = done[sel]
                cache = _select_rows(cache, sel, width + t)
        if t + 1 == max_new:
            break
        slot = width + t
        mask = torch.arange(slot + 1, device=device)[None] >= start[:, None]
        last, _ = _forward(lm, tok[:, None], next_pos[:, None], mask[:, None, None, None],
                           prefix_kv, cache, slot)
        next_pos = next_pos + 1
    return out.tolist(), lengths.tolist(), finished.tolist()


def _select_rows(cache: list, rows, filled: int) -> list:
    """New cache buffers for ``rows``; only the ``filled`` slots in use are copied."""
    import torch

    out = []
    for k, v in cache:
        nk = torch.empty((len(rows), *k.shape[1:]), dtype=k.dtype, device=k.device)
        nv = torch.empty_like(nk)
        nk[:, :, :filled] = k[rows, :, :filled]
        nv[:, :, :filled] = v[rows, :, :filled]
        out.append((nk, nv))
    return out


def _new_cache(lm, rows: int, length: int, device) -> list:
    cfg = lm.config
    attn = lm.model.layers[0].self_attn
    shape = (rows, cfg.num_key_value_heads, length, attn.head_dim)
    dtype = lm.model.embed_tokens.weight.dtype
    import torch

    return [(torch.zeros(shape, dtype=dtype, device=device),
             torch.zeros(shape, dtype=dtype, device=device)) for _ in lm.model.layers]


def _forward(lm, ids, pos, own_mask, prefix_kv, cache, slot: int):
    """One pass over ``ids`` [B, S] at positions ``pos`` [B, S].

    ``own_mask`` [B, 1, 1, S, T] (bool) says which of the row's own cache slots
    0..T-1 each query may see (T = slot + S); the shared prefix is always
    visible. With ``cache`` None (the prefix pass) keys come from ``ids`` only.
    Returns (logits of the last position [B, V], per-layer (k, v) of this pass).
    """
    import torch
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    body = lm.model
    h = body.embed_tokens(ids)
    cos, sin = body.rotary_emb(h, pos)
    bsz, seq = ids.shape
    neg = torch.finfo(h.dtype).min
    bias = torch.zeros(own_mask.shape, dtype=h.dtype, device=h.device).masked_fill(~own_mask, neg)
    fresh = []
    for i, layer in enumerate(body.layers):
        attn = layer.self_attn
        d = attn.head_dim
        x = layer.input_layernorm(h)
        q = attn.q_proj(x).view(bsz, seq, -1, d).transpose(1, 2)
        k = attn.k_proj(x).view(bsz, seq, -1, d).transpose(1, 2)
        v = attn.v_proj(x).view(bsz, seq, -1, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        kvh = k.shape[1]
        if cache is None:
            keys, values = k, v
        else:
            ck, cv = cache[i]
            ck[:, :, slot : slot + seq] = k
            cv[:, :, slot : slot + seq] = v
            keys, values = ck[:, :, : slot + seq], cv[:, :, : slot + seq]
        fresh.append((k, v))
        # grouped-query attention without repeating keys: [B, kvh, g*S, d]
        qg = q.reshape(bsz, kvh, -1, d)
        scores = torch.matmul(qg, keys.transpose(-1, -2)) * attn.scaling  # [B, kvh, gS, T]
        scores = scores.view(bsz, kvh, -1, seq, keys.shape[2]) + bias
        if prefix_kv is not None:
            pk, pv = prefix_kv[i]  # [kvh, P, d]: one GEMM per kv head for the whole batch
            pscores = torch.matmul(qg.transpose(0, 1).reshape(kvh, -1, d), pk.transpose(-1, -2))
            pscores = pscores.view(kvh, bsz, -1, seq, pk.shape[1]).transpose(0, 1) * attn.scaling
            scores = torch.cat([pscores, scores], dim=-1)
        probs = torch.softmax(scores.float(), dim=-1).to(h.dtype)
        if prefix_kv is not None:
            plen = prefix_kv[i][0].shape[1]
            pp = probs[..., :plen].transpose(0, 1).reshape(kvh, -1, plen)
            ctx = torch.matmul(pp, prefix_kv[i][1]).view(kvh, bsz, -1, d).transpose(0, 1)
            ctx = ctx + torch.matmul(probs[..., plen:].reshape(bsz, kvh, -1, keys.shape[2]),
                                     values)
        else:
            ctx = torch.matmul(probs.reshape(bsz, kvh, -1, keys.shape[2]), values)
        # [B, kvh, g*S, d] -> [B, S, H*d]
        ctx = ctx.view(bsz, kvh, -1, seq, d).permute(0, 3, 1, 2, 4).reshape(bsz, seq, -1)
        h = h + attn.o_proj(ctx)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return lm.lm_head(body.norm(h[:, -1])), fresh
